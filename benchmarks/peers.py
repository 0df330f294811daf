"""The peers' own fast paths, as a user would pick them instead of sentemb (rows of bench.py).

sentence-transformers with backend="onnx" / "openvino", its dynamic int8 ONNX export with the
config for this CPU's ISA, its static int8 OpenVINO recipe calibrated on local STS sentences (its
helper would download a data set), and fastembed on the same ONNX file as a custom model. They need
optimum / optimum-intel / fastembed, which pin older transformers: build their venv with
benchmarks/make_peer_venv.sh. A row that cannot run returns its reason; it never stops the run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sentemb.machine import Machine

Encode = Callable[[list[str], int], np.ndarray]
# (label, builder name): built in this order; each builder returns an encode function.
PEERS = (
    ("sentence-transformers onnx fp32", "st_onnx"),
    ("sentence-transformers openvino (OpenVINO's default hint: bf16 where the CPU has it)", "st_openvino"),
    ("sentence-transformers onnx int8 (dynamic, ISA config)", "st_onnx_int8"),
    ("sentence-transformers openvino int8 (static, local calibration)", "st_openvino_int8"),
    ("fastembed (same ONNX file, custom model)", "fastembed"),
)


def ort_quantization_config(flags: list[str], machine: str, onednn_cap: str = "") -> str:
    """sentence-transformers' (optimum's) AutoQuantizationConfig for this CPU: arm64 on ARM, else the
    best x86 ISA the flags show (avx2 when ``ONEDNN_MAX_CPU_ISA`` emulates an AVX2 machine)."""
    if machine in ("arm64", "aarch64"):
        return "arm64"
    if onednn_cap.upper().startswith(("SSE", "AVX2")) or onednn_cap.upper() == "AVX":
        return "avx2"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


class Peers:
    """Builds the peer rows for one model folder; exports go into a private temporary folder."""

    def __init__(
        self, model: str, calibration: list[str], st_batch_size: int, cpu: Machine, keep: Path | None = None
    ) -> None:
        self.model = model
        self.calibration = calibration
        self.batch = st_batch_size
        self.cpu = cpu
        self.keep = keep is not None  # exports in ``keep`` are reused by later runs
        self.work = keep if keep is not None else Path(tempfile.mkdtemp(prefix="sentemb-peers-"))
        self.work.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    def _st(self, backend: str, **kwargs: object) -> Encode:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(self.model, device="cpu", backend=backend, **kwargs)  # type: ignore[arg-type]
        return self._encode(st)

    def _encode(self, st: object) -> Encode:
        def run(texts: list[str], bs: int) -> np.ndarray:
            return np.asarray(st.encode(texts, batch_size=bs or self.batch, convert_to_numpy=True))  # type: ignore[attr-defined]

        return run

    def st_onnx(self) -> Encode:
        return self._st("onnx")

    def _ov_config(self) -> dict[str, object]:
        """Under a oneDNN cap below bf16, the f32 hint OpenVINO picks on a CPU without bf16 (its default
        here, bf16, has no kernels left under the cap and fails to compile)."""
        if self.cpu.native_bf16 or not any("bf16" in flag for flag in self.cpu.flags):
            return {}
        return {"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}}

    def st_openvino(self) -> Encode:
        return self._st("openvino", model_kwargs=self._ov_config())

    def _saved(self, backend: str) -> tuple[object, Path]:
        from sentence_transformers import SentenceTransformer

        folder = self.work / backend
        extra = {"model_kwargs": self._ov_config()} if backend == "openvino" else {}
        if not folder.exists():
            SentenceTransformer(self.model, device="cpu", backend=backend, **extra).save_pretrained(str(folder))  # type: ignore[arg-type]
        return SentenceTransformer(str(folder), device="cpu", backend=backend, **extra), folder  # type: ignore[arg-type]

    def st_onnx_int8(self) -> Encode:
        from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

        st, folder = self._saved("onnx")
        caps = dict(self.cpu.isa_caps)
        onednn = caps.get("ONEDNN_MAX_CPU_ISA", "")
        config = ort_quantization_config(list(self.cpu.flags), self.cpu.arch, onednn)
        # the helper names the file <weights dtype>_<config>: qint8_avx512_vnni, quint8_avx2, ...
        made = list((folder / "onnx").glob(f"model_*int8_{config}.onnx"))
        if not made:
            export_dynamic_quantized_onnx_model(st, config, str(folder))
            made = list((folder / "onnx").glob(f"model_*int8_{config}.onnx"))
        name = f"onnx/{made[0].name}"
        quantized = SentenceTransformer(str(folder), device="cpu", backend="onnx", model_kwargs={"file_name": name})
        return self._encode(quantized)

    def st_openvino_int8(self) -> Encode:
        """The helper's own recipe (optimum-intel's OVQuantizer, default OVQuantizationConfig, its
        tokenisation), pointed at a local data folder instead of the GLUE set it would download."""
        import json

        from sentence_transformers import SentenceTransformer, export_static_quantized_openvino_model

        st, folder = self._saved("openvino")
        data = self.work / "calibration"
        data.mkdir(exist_ok=True)
        lines = (json.dumps({"sentence": text}) for text in self.calibration)
        (data / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        name = "openvino/openvino_model_qint8_quantized.xml"
        if not (folder / name).is_file():
            export_static_quantized_openvino_model(
                st, None, str(folder), dataset_name=str(data), dataset_config_name="default", dataset_split="train",
                column_name="sentence",
            )  # fmt: skip
        kwargs = {"file_name": name, **self._ov_config()}
        quantized = SentenceTransformer(str(folder), device="cpu", backend="openvino", model_kwargs=kwargs)
        return self._encode(quantized)

    def fastembed(self) -> Encode:
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        _, folder = self._saved("onnx")
        name = "local/sentemb-bench-minilm"
        TextEmbedding.add_custom_model(
            model=name, pooling=PoolingType.MEAN, normalization=True, sources=ModelSource(hf="local/none"),
            dim=384, model_file="onnx/model.onnx",
        )  # fmt: skip
        model = TextEmbedding(model_name=name, specific_model_path=str(folder), threads=None)

        def run(texts: list[str], bs: int) -> np.ndarray:
            return np.stack(list(model.embed(texts, batch_size=bs or self.batch)))

        return run


def load_peers(peers: Peers) -> list[tuple[str, Encode | str]]:
    """Each peer's encode function, or the reason it cannot run here (never raises)."""
    rows: list[tuple[str, Encode | str]] = []
    for label, builder in PEERS:
        try:
            rows.append((label, getattr(peers, builder)()))
        except Exception as exc:  # any failure of a peer is a row that says why
            lines = [line for line in str(exc).splitlines() if line.strip()]
            rows.append((label, f"{type(exc).__name__}: {lines[-1][:160] if lines else ''}"))  # the cause is last
    return rows
