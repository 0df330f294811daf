"""The facts of this machine that decide what runs where: architecture, CPU model, the ISA flags that
change which backend wins and the caps put on them, usable cores, whether a GPU is present, and which
runtimes are installed.

:meth:`Machine.here` reads them (``/proc/cpuinfo`` may be missing, on macOS or Windows, or list ARM
``Features``: nothing here assumes x86 or Linux); tests build a ``Machine`` of their own and pass it
in, so a plan can be checked for an AVX2 laptop, an ARM server or a GPU box on any machine.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sentemb.extras import installed, openvino_runs

# CPU flags that change which backend wins (x86 and ARM spellings); the rest are left out.
RELEVANT_FLAGS = (
    "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile",
    "asimd", "asimddp", "bf16", "i8mm", "sve", "sve2", "sme",
)  # fmt: skip
# Environment variables that make this CPU's kernels behave like an older CPU's: oneDNN (OpenVINO,
# torch bf16), ATen and MKL (torch fp32). ONNX Runtime picks its kernels by CPUID and has no such cap.
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
_ONEDNN_BELOW_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"})
# The optional runtimes a plan chooses between (int8 on OpenVINO also needs NNCF to quantise).
RUNTIME_MODULES = ("torch", "transformers", "onnxruntime", "openvino", "nncf")


@dataclass(frozen=True, kw_only=True)
class Machine:
    """What a plan needs to know about the machine; ``Machine.here()`` reads this one."""

    arch: str = "x86_64"
    cpu: str = ""
    flags: frozenset[str] = frozenset()
    cores: int = 1
    isa_caps: tuple[tuple[str, str], ...] = ()
    gpu: bool = False
    modules: frozenset[str] = field(default_factory=lambda: frozenset(RUNTIME_MODULES))

    @classmethod
    def here(
        cls,
        *,
        cpuinfo: str | None = None,
        environ: Mapping[str, str] | None = None,
        find: Callable[[str], bool] | None = None,
    ) -> Machine:
        """This machine (or the ``cpuinfo`` text, environment and module finder given instead)."""
        if cpuinfo is None:
            try:
                cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
            except OSError:
                cpuinfo = ""
        env = os.environ if environ is None else environ
        find = find or installed
        model, flags = parse_cpuinfo(cpuinfo)
        return cls(
            arch=platform.machine().lower(),
            cpu=model or platform.processor(),
            flags=flags & frozenset(RELEVANT_FLAGS),
            cores=usable_cores(),
            isa_caps=tuple((name, env[name]) for name in ISA_CAPS if env.get(name)),
            gpu=gpu_present(),
            modules=frozenset(name for name in RUNTIME_MODULES if find(name)),
        )

    def has(self, module: str) -> bool:
        return module in self.modules

    @property
    def torch(self) -> bool:
        """Whether the torch extra (torch and transformers) is installed."""
        return self.has("torch") and self.has("transformers")

    def openvino_runs(self, int8: bool) -> bool:
        return openvino_runs(int8, self.has)

    @property
    def native_bf16(self) -> bool:
        """Whether bf16 matmuls run natively: AVX512-BF16 or AMX on x86, the BF16 extension on ARM, and no
        ``ONEDNN_MAX_CPU_ISA`` cap below them (capped, oneDNN emulates bf16 as an older CPU would)."""
        capped = dict(self.isa_caps).get("ONEDNN_MAX_CPU_ISA", "").upper() in _ONEDNN_BELOW_BF16
        return not capped and any(flag in self.flags for flag in ("avx512_bf16", "amx_bf16", "bf16"))

    def facts(self) -> dict[str, object]:
        """The CPU facts a measured backend choice depends on (part of its cache key)."""
        return {"machine": self.arch, "model": self.cpu, "flags": sorted(self.flags), "cores": self.cores,
                "isa_caps": dict(self.isa_caps)}  # fmt: skip


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """CPU model and flags from ``/proc/cpuinfo`` text: x86 ``model name``/``flags`` or ARM
    ``Hardware``/``CPU part``/``Features``; unknown layouts give ('', {})."""
    model, flags = "", set[str]()
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip().lower()
        if name in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif name == "cpu part" and not model:
            model = f"cpu part {value.strip()}"
        elif name in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, frozenset(flags)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU, without importing torch (1 s) to ask."""
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/dxg")
