"""The one frozen configuration shared by the library, the CLI, the server and the batch job."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import TypedDict

from sentemb.errors import ConfigError
from sentemb.options import option

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class BackendName(str, enum.Enum):
    """Which inference backend runs the forward pass; compares equal to its plain string ("torch" == TORCH)."""

    TORCH = "torch"
    ONNX = "onnx"
    OPENVINO = "openvino"
    AUTO = "auto"  # the fastest that meets the precision's fidelity here (resolved at load)

    def __str__(self) -> str:
        return self.value


class Pooling(str, enum.Enum):
    """How token embeddings become one vector (padding is always excluded)."""

    MEAN = "mean"
    CLS = "cls"
    MAX = "max"
    MEAN_SQRT_LEN = "mean_sqrt_len"
    WEIGHTED_MEAN = "weightedmean"  # position-weighted mean (token i weighs i + 1), as sentence-transformers
    LAST_TOKEN = "lasttoken"  # the last real token (decoder-style embedding models)


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
# sentence-transformers' names for the pooling modes, accepted as well.
_POOLING_ALIASES = {"mean_sqrt_len_tokens": "mean_sqrt_len", "weighted_mean": "weightedmean", "last_token": "lasttoken"}


def _enum(kind: type[enum.Enum], value: object, field: str) -> enum.Enum:
    if isinstance(value, kind):
        return value
    text = str(value).lower()
    if kind is Precision:
        text = _PRECISION_ALIASES.get(text, text)
    if kind is Pooling:
        text = _POOLING_ALIASES.get(text, text)
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

    model: str = option(
        DEFAULT_MODEL, help="Model folder or hub id (all-MiniLM-L6-v2 is bundled: offline).", short="-m",
        metavar="NAME|PATH",
    )  # fmt: skip
    revision: str | None = option(None, help="Hub revision (commit, tag or branch) to pin.")
    device: str = option("auto", help="cpu, cuda, cuda:N or auto.")
    backend: BackendName = option(
        BackendName.TORCH, help="Inference backend (auto: the fastest that meets the precision's fidelity here)."
    )
    precision: Precision = option(
        Precision.FP32, help="Numeric precision of the forward pass (vectors are always float32)."
    )
    pooling: Pooling | None = option(None, help="Pooling [default: the model's].")
    normalize: bool | None = option(None, help="Unit-length vectors [default: the model's].")
    max_length: int | None = option(None, help="Tokens per text [default: the model's].", min=4)
    long_text: LongText = option(
        LongText.TRUNCATE, help="Texts over --max-length: cut, fail, or embed in overlapping chunks."
    )
    # tokens shared by neighbouring windows (at most half a window)
    chunk_overlap: int = option(32, help="Tokens shared by neighbouring chunks (--long-text chunk).", min=0)
    max_chars: int | None = option(
        None, help="Characters per text, cut before tokenising (refused with --long-text error) "
        "[default: no cap; serve: 32768].", min=1,
    )  # fmt: skip
    batch_size: int | None = option(None, help="Texts per batch [default: 64 on the CPU, 1024 on a GPU].", min=1)
    forward_tokens: int = option(16384, help="Most padded tokens per forward batch (count x longest).", min=1)
    show_progress: bool | None = None  # not a flag: each command draws its own progress
    trust_remote_code: bool = option(False, help="Run the model repository's own code: only if you trust it.")
    allow_pickle: bool = option(False, help="Allow pickle (.bin) weights: only for models you trust.")
    cache_dir: str | None = option(
        None, help="Hugging Face hub cache to look in [default: the hub's own].", metavar="DIR"
    )
    export_dir: str | None = option(
        None, help="Folder of the ONNX/OpenVINO export cache [default: $SENTEMB_CACHE, else ~/.cache/sentemb].",
        metavar="DIR",
    )  # fmt: skip
    default_prompt_name: str | None = option(
        None, help="Prompt used when a call names none [default: the model's default_prompt_name; '' for none]."
    )
    truncate_dim: int | None = option(
        None, help="Keep the first N dimensions (Matryoshka), as sentence-transformers' truncate_dim.", min=1
    )
    file_name: str | None = option(
        None, help="Graph file the model folder ships, for --backend onnx/openvino (model_qint8_avx512_vnni.onnx).",
        metavar="FILE",
    )  # fmt: skip

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "precision", _enum(Precision, self.precision, "precision"))
        set_(self, "long_text", _enum(LongText, self.long_text, "long_text"))
        if self.pooling is not None:
            set_(self, "pooling", _enum(Pooling, self.pooling, "pooling"))
        set_(self, "backend", _enum(BackendName, self.backend, "backend"))
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ConfigError(f"device={self.device!r} is not valid; choose 'cpu', 'cuda', 'cuda:N' or 'auto'")
        for name in ("batch_size", "forward_tokens"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_length is not None and self.max_length < 4:
            raise ConfigError(f"max_length must be at least 4 tokens, got {self.max_length}")
        if self.max_chars is not None and self.max_chars < 1:
            raise ConfigError(f"max_chars must be at least 1 character, got {self.max_chars}")
        if self.truncate_dim is not None and self.truncate_dim < 1:
            raise ConfigError(f"truncate_dim must be at least 1, got {self.truncate_dim}")
        if self.chunk_overlap < 0:
            raise ConfigError(f"chunk_overlap must be >= 0, got {self.chunk_overlap}")

    def replace(self, **changes: object) -> EncoderConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


class LoadOptions(TypedDict, total=False):
    """The keyword arguments of :func:`sentemb.load`: :class:`EncoderConfig`'s fields but ``model``
    (a test keeps the two in step). Each one given replaces the base config's."""

    revision: str | None
    device: str
    backend: BackendName | str
    precision: Precision | str
    pooling: Pooling | str | None
    normalize: bool | None
    max_length: int | None
    long_text: LongText | str
    chunk_overlap: int
    max_chars: int | None
    batch_size: int | None
    forward_tokens: int
    show_progress: bool | None
    trust_remote_code: bool
    allow_pickle: bool
    cache_dir: str | None
    export_dir: str | None
    default_prompt_name: str | None
    truncate_dim: int | None
    file_name: str | None
