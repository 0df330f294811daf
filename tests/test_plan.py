"""What runs where, by rule, on machines this test makes up: the plan never reads the machine it runs on."""

from __future__ import annotations

import pytest

from sentemb.config import EncoderConfig
from sentemb.errors import ConfigError
from sentemb.machine import RUNTIME_MODULES, Machine
from sentemb.plan import batch_size, machine_line, on_gpu, ort_cpu_streams, resolve, wanted_graphs

EVERYTHING = frozenset(RUNTIME_MODULES)
NO_TORCH = EVERYTHING - {"torch", "transformers"}

MACHINES = {
    "avx2, no vnni": Machine(cpu="AMD EPYC 7B13", flags=frozenset({"avx2"}), cores=2, modules=EVERYTHING),
    "avx-512 vnni": Machine(cpu="Intel Xeon", flags=frozenset({"avx2", "avx512f", "avx512_vnni"}), cores=2,
                            modules=EVERYTHING),
    "avx-512 bf16 + amx": Machine(cpu="Intel Xeon 4th gen", cores=8, modules=EVERYTHING,
                                  flags=frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"})),
    "bf16 capped to avx2": Machine(cpu="Intel Xeon 4th gen", cores=8, modules=EVERYTHING,
                                   flags=frozenset({"avx2", "avx512_bf16", "amx_bf16"}),
                                   isa_caps=(("ONEDNN_MAX_CPU_ISA", "AVX2"),)),
    "arm64 graviton": Machine(arch="aarch64", cpu="cpu part 0xd40", flags=frozenset({"asimd", "asimddp", "bf16"}),
                              cores=4, modules=EVERYTHING),
    "gpu": Machine(cpu="Intel Xeon", flags=frozenset({"avx2"}), cores=16, gpu=True, modules=EVERYTHING),
    "no torch": Machine(cpu="Intel Xeon", flags=frozenset({"avx2"}), cores=2, modules=NO_TORCH),
    "no torch, no openvino": Machine(cpu="Intel Xeon", flags=frozenset({"avx2"}), cores=2,
                                     modules=frozenset({"onnxruntime"})),
    "torch only": Machine(cpu="Intel Xeon", flags=frozenset({"avx2"}), cores=2,
                          modules=frozenset({"torch", "transformers"})),
}  # fmt: skip

# (machine, backend asked, precision asked, device asked) -> (backend, precision, device) by rule
CASES = [
    ("avx2, no vnni", "auto", "fp32", "auto", ("openvino", "fp32", "cpu")),
    ("avx2, no vnni", "auto", "bf16", "auto", ("openvino", "fp32", "cpu")),  # no native bf16: exact fp32
    ("avx2, no vnni", "auto", "int8", "auto", ("openvino", "int8", "cpu")),  # then measured against onnx
    ("avx-512 vnni", "auto", "int8", "auto", ("openvino", "int8", "cpu")),
    ("avx-512 vnni", "torch", "fp32", "auto", ("torch", "fp32", "auto")),  # asked for: kept
    ("avx-512 bf16 + amx", "auto", "bf16", "auto", ("openvino", "bf16", "cpu")),
    ("bf16 capped to avx2", "auto", "bf16", "auto", ("openvino", "fp32", "cpu")),  # the cap removes bf16
    ("arm64 graviton", "auto", "bf16", "auto", ("openvino", "bf16", "cpu")),
    ("arm64 graviton", "auto", "fp32", "cpu", ("openvino", "fp32", "cpu")),
    ("gpu", "auto", "fp32", "auto", ("torch", "fp32", "auto")),  # torch on the GPU
    ("gpu", "auto", "fp16", "auto", ("torch", "fp16", "auto")),
    ("gpu", "auto", "int8", "auto", ("openvino", "int8", "cpu")),  # int8 stays on the CPU
    ("gpu", "auto", "fp32", "cpu", ("openvino", "fp32", "cpu")),  # the CPU asked for on a GPU machine
    ("no torch", "torch", "fp32", "auto", ("openvino", "fp32", "cpu")),  # the default runs the base runtime
    ("no torch", "auto", "bf16", "auto", ("openvino", "fp32", "cpu")),
    ("no torch, no openvino", "torch", "int8", "auto", ("onnx", "int8", "cpu")),
    ("no torch, no openvino", "auto", "fp32", "cpu", ("onnx", "fp32", "cpu")),
    ("torch only", "auto", "fp32", "auto", ("torch", "fp32", "auto")),
    ("torch only", "auto", "bf16", "auto", ("torch", "fp32", "auto")),  # emulated bf16: exact fp32
]


@pytest.mark.parametrize(("machine", "backend", "precision", "device", "expected"), CASES)
def test_the_rule_on_every_kind_of_machine(machine, backend, precision, device, expected):
    chosen, why = resolve(EncoderConfig(backend=backend, precision=precision, device=device), MACHINES[machine])
    assert (chosen.backend.value, chosen.precision.value, chosen.device) == expected
    assert why


def test_openvino_int8_needs_nncf_else_onnx_runtime_runs_it():
    machine = Machine(flags=frozenset({"avx2"}), modules=EVERYTHING - {"nncf"})
    chosen, _ = resolve(EncoderConfig(backend="auto", precision="int8"), machine)
    assert (chosen.backend.value, chosen.precision.value) == ("onnx", "int8")


def test_one_gpu_check_and_the_batch_size_it_gives():
    gpu, cpu = MACHINES["gpu"], MACHINES["avx2, no vnni"]
    assert on_gpu(EncoderConfig(), gpu) and not on_gpu(EncoderConfig(), cpu)
    assert on_gpu(EncoderConfig(device="cuda:1"), cpu)  # asked for: the backend warns and falls back
    assert not on_gpu(EncoderConfig(device="cpu"), gpu)
    assert batch_size(EncoderConfig(), "cuda:0") == 1024 and batch_size(EncoderConfig(), "cpu") == 64
    assert batch_size(EncoderConfig(batch_size=8), "cuda") == 8


@pytest.mark.parametrize(
    ("env", "cores", "expected"),
    [({}, 2, (2, 1)), ({}, 16, (16, 1)), ({"SENTEMB_ORT_STREAMS": "1"}, 8, (1, 8)),
     ({"SENTEMB_ORT_THREADS": "2"}, 8, (4, 2)), ({"SENTEMB_ORT_STREAMS": "2", "SENTEMB_ORT_THREADS": "3"}, 2, (2, 3))],
)  # fmt: skip
def test_onnx_runtime_streams_and_threads_from_the_cores(env, cores, expected):
    assert ort_cpu_streams(cores, env) == expected


def test_a_bad_stream_count_names_the_variable():
    with pytest.raises(ConfigError, match="SENTEMB_ORT_STREAMS"):
        ort_cpu_streams(2, {"SENTEMB_ORT_STREAMS": "many"})


def test_graphs_fetched_from_the_hub_follow_the_rule():
    """A hub model fetches the graph it will run instead of its weights only where no torch can run them."""
    base = EncoderConfig()
    assert wanted_graphs(base, MACHINES["avx2, no vnni"]) == ()  # torch runs the weights
    assert wanted_graphs(base.replace(backend="auto"), MACHINES["avx2, no vnni"]) == ()  # auto may measure torch
    no_torch = wanted_graphs(base, MACHINES["no torch"])
    assert no_torch and any("openvino" in name for group in no_torch for name in group)
    onnx = wanted_graphs(base.replace(backend="onnx"), MACHINES["avx2, no vnni"])
    assert onnx and any(name.endswith(".onnx") for group in onnx for name in group)


def test_the_machine_line_names_what_decides():
    line = machine_line(MACHINES["bf16 capped to avx2"])
    assert "Intel Xeon 4th gen" in line and "amx_bf16" in line and "ONEDNN_MAX_CPU_ISA=AVX2" in line
    assert "GPU" in machine_line(MACHINES["gpu"])


def test_the_real_machine_is_read_without_assuming_x86():
    here = Machine.here(cpuinfo="", environ={}, find=lambda module: module == "onnxruntime")
    assert here.modules == {"onnxruntime"} and not here.torch and here.cores >= 1 and here.isa_caps == ()
