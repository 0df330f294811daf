"""The line every benchmark prints first: which CPU, and which of the ISA flags that pick the kernels it has."""

from __future__ import annotations

import os

# what decides the fast paths: VNNI/BF16/AMX int8 and bf16 kernels on x86, dot-product/bf16/i8mm on ARM
X86 = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")
ARM = ("asimd", "asimddp", "bf16", "i8mm", "sve", "sve2")


# Environment variables that make this CPU run like an older one, and the kernels each one reaches.
ISA_CAPS = (
    ("ONEDNN_MAX_CPU_ISA", "oneDNN: OpenVINO's kernels, torch bf16 linear layers"),
    ("ATEN_CPU_CAPABILITY", "torch's own vectorised kernels"),
    ("MKL_ENABLE_INSTRUCTIONS", "MKL: torch fp32 matmuls"),
)


def cpu_line() -> str:
    """CPU model, architecture, cores and ISA flags, then the ISA caps in force (when any is set)."""
    from sentemb.machine import Machine

    machine = Machine.here()
    facts = machine.facts()
    flags = machine.flags
    wanted = ARM if machine.arch in ("aarch64", "arm64") else X86
    shown = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in wanted)
    return f"CPU: {facts['model']} ({facts['machine']}, {facts['cores']} cores); {shown}{isa_caps()}"


def isa_caps() -> str:
    """The ISA caps in force and what they leave alone (ONNX Runtime's MLAS reads CPUID, with no cap)."""
    caps = [f"{name}={os.environ[name]} ({what})" for name, what in ISA_CAPS if os.environ.get(name)]
    if not caps:
        return ""
    return "\nISA caps: " + "; ".join(caps) + "; not capped: ONNX Runtime (MLAS picks kernels by CPUID)"


if __name__ == "__main__":
    print(cpu_line())
