"""backend='auto' on the CPU: measured once per (machine, model, precision), cached, overridable.

Driven by fake backends and a fake clock: each fake "takes" a fixed number of fake seconds per pass.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import sentemb
import sentemb.backends as backends
from sentemb.backends import BACKEND_ENV, choice, choose_backend
from sentemb.config import EncoderConfig, Pooling, Precision
from sentemb.heads import Pooled
from sentemb.machine import ISA_CAPS, Machine, parse_cpuinfo
from sentemb.plan import resolve


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Bench:
    """Fake backends named like the real ones, each costing ``costs[name]`` fake seconds a pass, on a fake
    machine with the ``installed`` runtimes (and native bf16 when ``bf16``)."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, costs: dict[str, float], installed: set[str], *, bf16: bool = False
    ) -> None:
        self.costs = costs
        self.installed = installed
        self.bf16 = bf16
        self.clock = FakeClock()
        self.built: list[str] = []
        self.passes: list[str] = []
        monkeypatch.setattr(backends, "create_backend", self.create)

    def machine(self) -> Machine:
        flags = {"avx2", "avx512_vnni", "avx512_bf16"} if self.bf16 else {"avx2", "avx512_vnni"}
        return Machine(cpu="a test CPU", flags=frozenset(flags), cores=2, modules=frozenset(self.installed))

    def create(self, spec: object, config: EncoderConfig, machine: Machine, head: object) -> SimpleNamespace:
        name = resolve(config, machine)[0].backend
        if name not in self.costs:
            raise RuntimeError(f"{name} cannot run here")
        at = f"{name} {config.precision.value}"  # a cost of its own at this precision, e.g. "openvino fp32"
        label = at if at in self.costs else name
        self.built.append(label)
        return SimpleNamespace(name=name, label=label, device="cpu", streams=1, threads=None, graph=None,
                               tokenizer=None, dim=4)  # fmt: skip

    def run(self, config: EncoderConfig, backend: SimpleNamespace) -> None:
        assert config.backend == backend.name
        self.passes.append(backend.label)
        self.clock.now += self.costs[backend.label]

    def choose(self, spec: object, config: EncoderConfig) -> tuple[EncoderConfig, object, choice.Choice | None]:
        head = Pooled(Pooling.MEAN)
        return choose_backend(spec, config, self.run, machine=self.machine(), head=head, clock=self.clock)  # type: ignore[arg-type]


ALL = {"torch", "transformers", "onnxruntime", "openvino", "nncf"}


@pytest.fixture
def spec(tmp_path: Path) -> SimpleNamespace:
    weights = tmp_path / "model" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"weights")
    return SimpleNamespace(weights=[weights], static=None, task="embedding")


@pytest.fixture
def auto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EncoderConfig:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    return EncoderConfig(backend="auto", device="cpu", export_dir=str(tmp_path / "cache"))


def test_first_load_measures_every_candidate_and_later_loads_reuse_the_choice(monkeypatch, spec, auto):
    bench = Bench(monkeypatch, {"torch": 0.09, "onnx": 0.03, "openvino": 0.06}, set(ALL))  # within the budget
    config, backend, found = bench.choose(spec, auto)
    assert config.backend == backend.name == "onnx"
    assert found is not None and found.measured and found.backend == "onnx"
    # one warm-up and PASSES timed passes each; rates are sample sentences per fake second
    assert sorted(bench.passes) == sorted(["torch", "onnx", "openvino"] * (choice.PASSES + 1))
    assert found.rates == pytest.approx({name: len(choice.SAMPLE) / cost for name, cost in bench.costs.items()})
    assert Path(found.path).is_file()

    bench.costs.update(onnx=0.9)  # the machine got slower for onnx, but the cached choice is kept
    bench.passes.clear()
    config, backend, again = bench.choose(spec, auto)
    assert bench.passes == [] and config.backend == backend.name == "onnx"
    assert again is not None and not again.measured and again.rates == found.rates
    assert again.describe()["source"] == "cached"


def test_a_slow_backend_gets_one_timed_pass_within_the_budget(monkeypatch, spec, auto):
    bench = Bench(monkeypatch, {"torch": 5 * choice.BUDGET_S, "onnx": 0.1, "openvino": 0.2}, set(ALL))
    _, _, found = bench.choose(spec, auto)
    assert found is not None and found.backend == "onnx"
    assert bench.passes.count("torch") == 2 and bench.passes.count("onnx") == choice.PASSES + 1


def test_a_busy_spell_does_not_decide_the_choice(monkeypatch, spec, auto):
    """Another process takes the cores for the first passes: with the backends' passes interleaved, the
    spell slows one pass of each, and the fastest pass of each still ranks them right."""
    bench = Bench(monkeypatch, {"openvino": 0.1, "onnx": 0.2, "torch": 0.3}, set(ALL))
    plain = bench.run

    def busy_first(config: EncoderConfig, backend: SimpleNamespace) -> None:
        before = bench.clock.now
        plain(config, backend)
        if len(bench.passes) <= 6:  # as many passes as one backend's warm-up and timed passes: 3x slower
            bench.clock.now += 2 * (bench.clock.now - before)

    bench.run = busy_first  # type: ignore[method-assign]
    _, _, found = bench.choose(spec, auto)
    assert found is not None and found.backend == "openvino"
    assert found.rates == pytest.approx({name: len(choice.SAMPLE) / cost for name, cost in bench.costs.items()})
    assert bench.passes[:6] == ["openvino", "onnx", "torch"] * 2  # warm-ups, then the first round


def test_an_unwritable_cache_folder_warns_once_measures_and_runs(monkeypatch, spec, auto, tmp_path, caplog):
    """A read-only home (the usual container): the choice cannot be kept, so it is measured, used, and said once."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    unwritable = auto.replace(export_dir=str(blocker / "cache"))
    bench = Bench(monkeypatch, {"torch": 0.09, "onnx": 0.03, "openvino": 0.06}, set(ALL))
    with caplog.at_level("WARNING", logger="sentemb"):
        config, backend, found = bench.choose(spec, unwritable)
    assert config.backend == backend.name == "onnx" and found is not None and found.measured
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "could not keep the backend choice" in warnings[0], warnings
    assert not Path(found.path).exists()


def test_a_damaged_cache_file_is_measured_again(monkeypatch, spec, auto):
    bench = Bench(monkeypatch, {"torch": 0.3, "onnx": 0.1, "openvino": 0.2}, set(ALL))
    _, _, found = bench.choose(spec, auto)
    assert found is not None
    Path(found.path).write_text('{"backend": "onn', encoding="utf-8")
    bench.costs.update(onnx=0.9)
    config, _, again = bench.choose(spec, auto)
    assert again is not None and again.measured and config.backend == "openvino"


def test_a_cached_backend_no_longer_installed_is_measured_again(monkeypatch, spec, auto):
    bench = Bench(monkeypatch, {"torch": 0.3, "onnx": 0.1, "openvino": 0.2}, set(ALL))
    bench.choose(spec, auto)
    bench.installed.discard("onnxruntime")
    bench.passes.clear()
    config, backend, again = bench.choose(spec, auto)
    assert again is not None and again.measured
    assert config.backend == backend.name == "openvino"
    assert "onnx" not in bench.passes


def test_overrides_skip_the_measurement(monkeypatch, spec, auto):
    bench = Bench(monkeypatch, {"torch": 0.3, "onnx": 0.1, "openvino": 0.2}, set(ALL))
    config, backend, found = bench.choose(spec, auto.replace(backend="torch"))
    assert (config.backend, backend.name, found) == ("torch", "torch", None)
    monkeypatch.setenv(BACKEND_ENV, "openvino")
    config, backend, found = bench.choose(spec, auto)
    assert (config.backend, backend.name, found) == ("openvino", "openvino", None)
    assert bench.passes == []


def test_int8_and_bf16_measure_their_own_candidates(monkeypatch, spec, auto):
    bench = Bench(monkeypatch, {"torch": 0.3, "onnx": 0.2, "openvino": 0.1}, set(ALL), bf16=True)
    config, _, found = bench.choose(spec, auto.replace(precision="int8"))
    assert found is not None and set(found.rates) == {"onnx", "openvino"} and config.backend == "openvino"
    config, _, found = bench.choose(spec, auto.replace(precision="bf16"))
    assert found is not None and set(found.rates) == {"openvino fp32", "openvino", "torch"}
    bench.installed.discard("nncf")  # OpenVINO int8 needs NNCF: one candidate left, nothing to time
    config, _, found = bench.choose(spec, auto.replace(precision="int8"))
    assert (config.backend, found) == ("onnx", None)


def test_bf16_takes_exact_fp32_where_it_is_faster_and_keeps_it(monkeypatch, spec, auto):
    """Without AMX some CPUs' bf16 units are no faster than fp32: a bf16 request then runs exact fp32."""
    bench = Bench(monkeypatch, {"openvino": 0.3, "torch": 0.4, "openvino fp32": 0.2}, set(ALL), bf16=True)
    config, backend, found = bench.choose(spec, auto.replace(precision="bf16"))
    assert (config.backend, config.precision, backend.label) == ("openvino", Precision.FP32, "openvino fp32")
    assert found is not None and found.backend == "openvino fp32" and found.precision == "bf16"
    bench.passes.clear()
    config, _, again = bench.choose(spec, auto.replace(precision="bf16"))  # cached: kept, not re-measured
    assert bench.passes == [] and again is not None and not again.measured
    assert (config.backend, config.precision) == ("openvino", Precision.FP32)
    bench.costs["openvino"] = 0.1  # where bf16 pays (cache emptied), bf16 it is
    Path(found.path).unlink()
    config, _, found = bench.choose(spec, auto.replace(precision="bf16"))
    assert (config.backend, config.precision) == ("openvino", Precision.BF16) and found is not None


def test_a_backend_that_fails_is_reported_and_skipped(monkeypatch, spec, auto):
    bench = Bench(monkeypatch, {"torch": 0.3, "onnx": 0.1}, set(ALL))
    config, _, found = bench.choose(spec, auto)
    assert found is not None and config.backend == "onnx"
    assert "cannot run here" in found.errors["openvino"]
    assert "failed" in found.describe()


def test_the_key_follows_cpu_versions_weights_precision_head_and_fp32_matmuls():
    cpu = {"machine": "x86_64", "model": "x", "flags": ["avx2"]}
    base = choice.choice_key(["a"], "fp32", {"onnxruntime": "1"}, cpu)
    assert base == choice.choice_key(["a"], "fp32", {"onnxruntime": "1"}, dict(cpu))
    others = [
        choice.choice_key(["b"], "fp32", {"onnxruntime": "1"}, cpu),
        choice.choice_key(["a"], "int8", {"onnxruntime": "1"}, cpu),
        choice.choice_key(["a"], "fp32", {"onnxruntime": "2"}, cpu),
        choice.choice_key(["a"], "fp32", {"onnxruntime": "1"}, {**cpu, "flags": ["avx2", "avx512_vnni"]}),
        choice.choice_key(["a"], "fp32", {"onnxruntime": "1"}, cpu, "logits"),
        choice.choice_key(["a"], "int8", {"onnxruntime": "1"}, cpu, fp32_matmuls=("feed-forward",)),
    ]
    assert len({base, *others}) == 7
    assert base == choice.choice_key(["a"], "fp32", {"onnxruntime": "1"}, cpu, "hidden", fp32_matmuls=())


def test_cpu_flags_are_read_on_x86_arm_and_without_cpuinfo():
    x86 = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512_vnni sse\n\nprocessor\t: 1\n"
    assert parse_cpuinfo(x86) == ("Intel Xeon", frozenset({"fpu", "avx2", "avx512_vnni", "sse"}))
    arm = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd asimddp bf16 i8mm sve\nCPU part\t: 0xd40\n"
    model, flags = parse_cpuinfo(arm)
    assert model == "cpu part 0xd40" and {"asimddp", "bf16", "i8mm"} <= flags
    assert parse_cpuinfo("") == ("", frozenset())
    facts = Machine.here(cpuinfo=arm).facts()
    assert facts["flags"] == ["asimd", "asimddp", "bf16", "i8mm", "sve"]


def test_a_onednn_isa_cap_is_another_machine(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    native = Machine.here(cpuinfo="flags : avx2 avx512_vnni").facts()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = Machine.here(cpuinfo="flags : avx2 avx512_vnni").facts()
    assert choice.choice_key(["a"], "int8", {}, native) != choice.choice_key(["a"], "int8", {}, capped)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    mkl = Machine.here(cpuinfo="flags : avx2 avx512_vnni").facts()
    assert len({choice.choice_key(["a"], "int8", {}, facts) for facts in (native, capped, mkl)}) == 3


def test_bf16_is_native_only_with_the_flag_and_no_onednn_cap_below_it(monkeypatch):
    for name in ISA_CAPS:
        monkeypatch.delenv(name, raising=False)
    assert Machine.here(cpuinfo="flags : avx2 avx512_vnni avx512_bf16").native_bf16
    assert not Machine.here(cpuinfo="flags : avx2 avx512_vnni").native_bf16
    assert Machine.here(cpuinfo="Features : fp asimd bf16").native_bf16
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert not Machine.here(cpuinfo="flags : avx2 avx512_vnni avx512_bf16").native_bf16
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert Machine.here(cpuinfo="flags : avx2 avx512_vnni avx512_bf16").native_bf16


def test_load_auto_shows_the_measured_choice(onnx_cache, tiny_dirs, monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    first = sentemb.load(tiny_dirs["bert"], backend="auto", device="cpu").describe()
    shown = first.auto_choice
    assert isinstance(shown, dict) and shown["backend"] == first.backend
    assert first.backend in shown["sentences_per_s"]
    assert first.to_dict()["auto_choice"] == shown
    second = sentemb.load(tiny_dirs["bert"], backend="auto", device="cpu").describe()
    assert second.backend == first.backend
    assert second.auto_choice is not None and second.auto_choice["source"] == "cached"
