"""``backend='auto'`` on the CPU: time each installed backend once per machine and model, keep the winner.

    first load of (model sha256, precision) on this machine
        -> build each candidate backend (exports are built and cached as usual; not timed)
        -> one warm-up pass each, then the fastest of a few passes over a short built-in sample, the
           backends' passes interleaved (a busy spell on a shared machine hits them alike)
        -> the winner and every timing go to <cache>/choice/<key>.json (written whole, renamed into place)
    later loads
        -> read the file; use its winner unless it is damaged or its backend is no longer installed

The key holds what the ranking depends on: the machine's CPU facts (:meth:`sentemb.machine.Machine.facts`:
architecture, model, ISA flags and caps, cores), library versions, the model's weights (sha256) and the
precision.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sentemb.files import write_text_atomic

if TYPE_CHECKING:
    from sentemb.config import EncoderConfig, Precision

log = logging.getLogger("sentemb")

SCHEMA = 3  # the key's layout; a new one measures every cached choice again
# Candidates per precision, in the order used when timings tie. "openvino fp32" runs exact fp32 for a
# bf16 request: on CPUs whose bf16 units are no faster than fp32 (AVX512-BF16 without AMX on some
# Xeons) it wins, and its vectors are closer to the model's, not further.
CANDIDATES = {
    "fp32": ("openvino", "onnx", "torch"),
    "int8": ("onnx", "openvino"),
    "bf16": ("openvino fp32", "openvino", "torch"),
}
# Python modules each backend needs (int8 on OpenVINO also needs NNCF to quantise).
_NEEDS = {"torch": ("torch",), "onnx": ("onnxruntime",), "openvino": ("openvino",)}
_INT8_NEEDS = {"openvino": ("openvino", "nncf")}
PASSES = 10  # timed passes per backend after one warm-up, interleaved across backends; the fastest counts
BUDGET_S = 1.0  # ... but no more timed passes once a backend has used this many seconds (at least one)
# Sentences of mixed length: long enough to reach the matmul-bound regime, short enough to take < 1 s a pass.
SAMPLE = tuple(
    f"{lead} {body}"
    for lead, body in zip(
        ("A man is playing a guitar.", "The cat sat quietly on the warm windowsill.", "Stocks fell sharply today",
         "How do I reset my password", "Rain is expected over the weekend in the north.", "She reads every night",
         "Two dogs run through the snow.", "The committee will publish its report next month"),
        ("", "while the children watched from the street and the traffic slowly moved past the old bridge",
         "after the central bank raised interest rates again.", "if I no longer have access to the email address?",
         "", "before going to sleep, usually a novel.", "A third dog follows them.",
         "after hearing from all the witnesses and reviewing the documents submitted during the inquiry."),
        strict=True,
    )
) * 2  # fmt: skip


@dataclass(frozen=True)
class Choice:
    """What ``auto`` picked on the CPU and why: sentences/s per candidate on the built-in sample."""

    backend: str  # the winning candidate: a backend, or "<backend> fp32" for exact fp32 on a bf16 request
    precision: str  # the precision asked for
    rates: dict[str, float]  # candidate ("onnx", "openvino fp32", ...) -> sentences/s (fastest pass)
    measured: bool  # False when read back from the cache
    key: str
    path: str = ""
    errors: dict[str, str] = field(default_factory=dict)  # backend -> why it could not be timed

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "sentences_per_s": {name: round(rate, 1) for name, rate in self.rates.items()},
            "source": "measured now" if self.measured else "cached",
            "cache": self.path,
            **({"failed": dict(self.errors)} if self.errors else {}),
        }


def candidate_parts(label: str) -> tuple[str, str | None]:
    """(backend, precision it runs at or None for the requested one) of a candidate: "onnx", "openvino fp32"."""
    backend, _, precision = label.partition(" ")
    return backend, precision or None


def candidate_config(config: EncoderConfig, label: str) -> EncoderConfig:
    """``config`` set to run the candidate ``label``: "onnx", or "openvino fp32" (that backend at exact fp32)."""
    from sentemb.config import Precision

    backend, own = candidate_parts(label)
    return config.replace(backend=backend, precision=Precision(own) if own else config.precision)


def installed(label: str, precision: str, find: Callable[[str], bool]) -> bool:
    backend, own = candidate_parts(label)
    precision = own or precision
    needs = _INT8_NEEDS.get(backend, _NEEDS[backend]) if precision == "int8" else _NEEDS[backend]
    return all(find(module) for module in needs)


def choice_key(
    weights_sha256: Sequence[str],
    precision: str,
    versions: dict[str, str],
    cpu: dict[str, object],
    head: str = "hidden",
    *,
    fp32_matmuls: Sequence[str] = (),
) -> str:
    facts = {"schema": SCHEMA, "cpu": cpu, "versions": versions, "weights": sorted(weights_sha256),
             "precision": precision}  # fmt: skip
    if head != "hidden":  # the same weights run as another kind (a classifier's logits) rank backends apart
        facts["head"] = head
    if fp32_matmuls:  # an int8 graph that keeps some MatMuls fp32 runs at another speed
        facts["fp32_matmuls"] = sorted(fp32_matmuls)
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def read_cached(path: Path, key: str, candidates: Sequence[str]) -> Choice | None:
    """The cached choice at ``path``, or None if missing, damaged, for another key or no longer installed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        backend, precision, rates = str(data["backend"]), str(data["precision"]), dict(data["rates"])
        if data["key"] != key:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if backend not in candidates:
        log.info("sentemb: the cached choice %s is no longer installed; measuring again", backend)
        return None
    return Choice(backend, precision, {str(k): float(v) for k, v in rates.items()}, False, key, str(path))


def write_cached(path: Path, choice: Choice) -> None:
    """Write ``choice`` atomically (a private file renamed into place, as the export cache publishes);
    a cache that cannot be written only costs a new measurement next time."""
    data = {"key": choice.key, "backend": choice.backend, "precision": choice.precision, "rates": choice.rates,
            "errors": choice.errors}  # fmt: skip
    try:
        write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))
    except OSError as exc:
        log.warning("sentemb: could not keep the backend choice in %s (%s); it is measured again next time", path, exc)


B = TypeVar("B")


def time_backends(
    backends: dict[str, B], run: Callable[[str, B], None], clock: Callable[[], float], passes: int = PASSES
) -> dict[str, float]:
    """Sentences/s of each backend's fastest pass over the sample, after one warm-up run each.

    The passes are interleaved (one pass of every backend, then the next round), so that load from
    other processes on a shared machine hits every backend alike; a backend stops early once its
    passes have used :data:`BUDGET_S` (it always gets at least one)."""
    best = dict.fromkeys(backends, float("inf"))
    spent = dict.fromkeys(backends, 0.0)
    for name, backend in backends.items():
        run(name, backend)
    for _ in range(passes):
        for name, backend in backends.items():
            if spent[name] >= BUDGET_S:
                continue
            start = clock()
            run(name, backend)
            took = clock() - start
            best[name], spent[name] = min(best[name], took), spent[name] + took
    return {name: len(SAMPLE) / max(took, 1e-9) for name, took in best.items()}


def measure(
    candidates: Sequence[str],
    build: Callable[[str], B],
    run: Callable[[str, B], None],
    *,
    precision: str,
    key: str,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[Choice, B]:
    """Build every candidate, time them interleaved; return the choice and the winner's (already built)
    backend (the others are dropped)."""
    built: dict[str, B] = {}
    errors: dict[str, str] = {}
    failures = (ImportError, RuntimeError, OSError, ValueError)  # a runtime that cannot run here
    for name in candidates:
        try:
            built[name] = build(name)
        except failures as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        rates = time_backends(built, run, clock)
    except failures:  # one of them fails while running: time them one at a time to find which
        rates = {}
        for name, backend in list(built.items()):
            try:
                rates.update(time_backends({name: backend}, run, clock))
            except failures as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"[:300]
                del built[name]
    if not rates:
        raise RuntimeError(f"no CPU backend could run: {errors}")
    winner = max(rates, key=lambda name: (rates[name], -list(candidates).index(name)))
    return Choice(winner, precision, rates, True, key, errors=errors), built[winner]


def choice_path(root: Path, key: str) -> Path:
    return root / "choice" / f"{key[:32]}.json"


def runtime_versions(find_version: Callable[[str], str]) -> dict[str, str]:
    names = ("sentemb", "torch", "onnxruntime", "openvino", "nncf")
    return {name: find_version(name) for name in names}


def precision_name(precision: Precision | str) -> str:
    return str(getattr(precision, "value", precision))
