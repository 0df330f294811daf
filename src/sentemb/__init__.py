"""sentemb: sentences in, faithful fixed-length float32 vectors out.

import sentemb
enc = sentemb.load()                      # all-MiniLM-L6-v2, offline
vecs = enc.encode(["a sentence", "another"])
sentemb.cos_sim(vecs, vecs)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sentemb.config import DEFAULT_MODEL, BackendName, EncoderConfig, LongText, Pooling, Precision
from sentemb.errors import (
    BackendError,
    ConfigError,
    IndexFileError,
    IntegrityError,
    InvalidInputError,
    InvalidTextError,
    ModelMismatchError,
    ModelNotFoundError,
    SentembError,
    TextTooLongError,
    UnsafeModelError,
    UnsupportedModelError,
    VectorsError,
)
from sentemb.facts import EncoderFacts
from sentemb.similarity import Hit, cos_sim, dot_score, semantic_search

if TYPE_CHECKING:
    from sentemb.distillation import distill
    from sentemb.encoder import Encoder, EncodeResult, load
    from sentemb.evaluation import StsResult, evaluate_sts, read_sts
    from sentemb.rerank import RankHit, Reranker, load_reranker
    from sentemb.retrieval.index import Index
    from sentemb.retrieval.quantize import quantize
    from sentemb.sparse import SparseEncoder, SparseEncodeResult, load_sparse
    from sentemb.sparse_vectors import SparseEmbeddings
    from sentemb.tokenize import TextInfo

__version__ = "0.1.0"

# Names whose modules import heavy packages (tokenizers, transformers): loaded on first use.
_LAZY = {
    "load": "sentemb.encoder",
    "distill": "sentemb.distillation",
    "Encoder": "sentemb.encoder",
    "EncodeResult": "sentemb.encoder",
    "evaluate_sts": "sentemb.evaluation",
    "read_sts": "sentemb.evaluation",
    "StsResult": "sentemb.evaluation",
    "TextInfo": "sentemb.tokenize",
    "load_reranker": "sentemb.rerank",
    "Reranker": "sentemb.rerank",
    "RankHit": "sentemb.rerank",
    "load_sparse": "sentemb.sparse",
    "SparseEncoder": "sentemb.sparse",
    "SparseEncodeResult": "sentemb.sparse",
    "SparseEmbeddings": "sentemb.sparse_vectors",
    "Index": "sentemb.retrieval.index",
    "quantize": "sentemb.retrieval.quantize",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sentemb' has no attribute {name!r}")


__all__ = [
    "DEFAULT_MODEL",
    "BackendError",
    "BackendName",
    "ConfigError",
    "EncodeResult",
    "Encoder",
    "EncoderConfig",
    "EncoderFacts",
    "Hit",
    "Index",
    "IndexFileError",
    "IntegrityError",
    "InvalidInputError",
    "InvalidTextError",
    "LongText",
    "ModelMismatchError",
    "ModelNotFoundError",
    "Pooling",
    "Precision",
    "RankHit",
    "Reranker",
    "SentembError",
    "SparseEmbeddings",
    "SparseEncodeResult",
    "SparseEncoder",
    "StsResult",
    "TextInfo",
    "TextTooLongError",
    "UnsafeModelError",
    "UnsupportedModelError",
    "VectorsError",
    "__version__",
    "cos_sim",
    "distill",
    "dot_score",
    "evaluate_sts",
    "load",
    "load_reranker",
    "load_sparse",
    "quantize",
    "read_sts",
    "semantic_search",
]
