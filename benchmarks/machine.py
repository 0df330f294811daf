"""The line every benchmark prints first: which CPU, and which of the ISA flags that pick the kernels it has."""

from __future__ import annotations

import os

# what decides the fast paths: VNNI/BF16/AMX int8 and bf16 kernels on x86, dot-product/bf16/i8mm on ARM
X86 = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")
ARM = ("asimd", "asimddp", "bf16", "i8mm", "sve", "sve2")


def cpu_line() -> str:
    """CPU model, architecture, cores and ISA flags (plus an ISA cap, when one is set)."""
    from sentemb.backends.choice import cpu_facts

    facts = cpu_facts()
    flags = set(facts["flags"])  # type: ignore[call-overload]
    wanted = ARM if str(facts["machine"]) in ("aarch64", "arm64") else X86
    shown = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in wanted)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    capped = f"; ONEDNN_MAX_CPU_ISA={isa} (caps oneDNN: torch, OpenVINO; not ONNX Runtime's MLAS)" if isa else ""
    return f"CPU: {facts['model']} ({facts['machine']}, {facts['cores']} cores); {shown}{capped}"


if __name__ == "__main__":
    print(cpu_line())
