"""Print the parity table of issue 12: module shape x backend -> max abs difference to sentence-transformers.

Each folder is built and saved by sentence-transformers (tests/st_shapes.py), loaded by sentemb on
torch, ONNX and OpenVINO (fp32), and compared without a prompt, with the "query" prompt and, where
marked, with truncate_dim=8. Not a speed benchmark (takes 2-4 minutes: one export per module list).

    .venv/bin/python benchmarks/st_modules_parity.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from machine import cpu_line

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SENTEMB_CACHE", tempfile.mkdtemp(prefix="sentemb-parity-"))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


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
