"""Print the parity table of issue 12: module shape x backend -> max abs difference to sentence-transformers.

Each folder is built and saved by sentence-transformers (tests/st_shapes.py), loaded by sentemb on
torch, ONNX and OpenVINO (fp32), and compared without a prompt, with the "query" prompt and, where
marked, with truncate_dim=8. Not a speed benchmark (takes 2-4 minutes: one export per module list).

    .venv/bin/python benchmarks/st_modules_parity.py
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SENTEMB_CACHE", tempfile.mkdtemp(prefix="sentemb-parity-"))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def cpu_line() -> str:
    """The CPU model and the ISA flags that decide the fast paths."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ("avx512_vnni", "avx512_bf16", "amx_tile", "avx2")
    isa = " ".join(f"{flag}={'yes' if flag in flags else 'no'}" for flag in wanted)
    return f"{name}; {isa}"


def main() -> None:
    from sentence_transformers import SentenceTransformer

    from st_shapes import SHAPES, TRUNCATE, build_st_folder
    from test_core_st_parity import parity
    from tiny_models import PARITY_TEXTS, build_tiny_model

    print(cpu_line())
    backends = ["torch", "onnx", "openvino"]
    print(f"{'shape':<24}" + "".join(f"{b:>12}" for b in backends) + "   cases")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        backbone = build_tiny_model("bert", root / "backbone")
        for name, shape in SHAPES.items():
            folder = build_st_folder(backbone, shape, root / name.replace("/", "-"))
            st = SentenceTransformer(str(folder), device="cpu")
            refs = {"plain": st.encode(PARITY_TEXTS), "query": st.encode(PARITY_TEXTS, prompt_name="query")}
            if shape.truncate:
                refs["truncated"] = SentenceTransformer(str(folder), device="cpu", truncate_dim=TRUNCATE).encode(
                    PARITY_TEXTS
                )
            row = [parity(folder, refs, backend) for backend in backends]
            cells = "".join(f"{max(diffs.values()):>12.1e}" for diffs in row)
            print(f"{name:<24}{cells}   {', '.join(row[0])}", flush=True)


if __name__ == "__main__":
    main()
