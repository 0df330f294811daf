"""The one frozen configuration shared by the library, the CLI, the server and the batch job."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from sentemb.errors import ConfigError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("torch", "onnx", "openvino", "auto")


class Pooling(str, enum.Enum):
    """How token embeddings become one vector (padding is always excluded)."""

    MEAN = "mean"
    CLS = "cls"
    MAX = "max"
    MEAN_SQRT_LEN = "mean_sqrt_len"


class LongText(str, enum.Enum):
    """What to do with a text longer than ``max_length`` tokens."""

    TRUNCATE = "truncate"  # keep the first max_length tokens (reported by encode_with_info)
    ERROR = "error"  # raise TextTooLongError
    CHUNK = "chunk"  # overlapping windows, pooled into one token-weighted vector


class Precision(str, enum.Enum):
    """Numeric precision of the forward pass; vectors are always returned as float32."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"


_PRECISION_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}


def _enum(kind: type[enum.Enum], value: object, field: str) -> enum.Enum:
    if isinstance(value, kind):
        return value
    text = str(value).lower()
    if kind is Precision:
        text = _PRECISION_ALIASES.get(text, text)
    try:
        return kind(text)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in kind)  # type: ignore[attr-defined]
        raise ConfigError(f"{field}={value!r} is not valid; choose one of {choices}") from None


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """Everything that decides which vectors come out and how fast.

    ``None`` for pooling, normalize and max_length means: take it from the model folder.
    """

    model: str = DEFAULT_MODEL
    revision: str | None = None
    device: str = "auto"
    backend: str = "torch"
    precision: Precision = Precision.FP32
    pooling: Pooling | None = None
    normalize: bool | None = None
    max_length: int | None = None
    long_text: LongText = LongText.TRUNCATE
    chunk_overlap: int = 32  # tokens shared by neighbouring windows (at most half a window)
    batch_size: int | None = None  # texts per batch; None: 64 on the CPU, 1024 on a GPU
    token_budget: int = 16384
    show_progress: bool | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    cache_dir: str | None = None
    export_dir: str | None = dataclasses.field(
        default=None,
        metadata={"help": "Folder of the ONNX/OpenVINO export cache (default: $SENTEMB_CACHE, else ~/.cache/sentemb)."},
    )
    file_name: str | None = dataclasses.field(
        default=None,
        metadata={"help": "Graph file the model folder ships to run (e.g. onnx/model_qint8_avx512_vnni.onnx)."},
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "precision", _enum(Precision, self.precision, "precision"))
        set_(self, "long_text", _enum(LongText, self.long_text, "long_text"))
        if self.pooling is not None:
            set_(self, "pooling", _enum(Pooling, self.pooling, "pooling"))
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r} is not valid; choose one of {', '.join(map(repr, BACKENDS))}")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ConfigError(f"device={self.device!r} is not valid; choose 'cpu', 'cuda', 'cuda:N' or 'auto'")
        for name in ("batch_size", "token_budget"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_length is not None and self.max_length < 4:
            raise ConfigError(f"max_length must be at least 4 tokens, got {self.max_length}")
        if self.chunk_overlap < 0:
            raise ConfigError(f"chunk_overlap must be >= 0, got {self.chunk_overlap}")

    def replace(self, **changes: object) -> EncoderConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
