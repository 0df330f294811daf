"""`sentemb search --sparse-model`: sparse search alone, or fused with the dense model's hits (--hybrid).

Each side retrieves a deeper list than asked (at least :data:`FUSION_DEPTH` rows) so that a row ranked
low by one side and high by the other still reaches the fusion; the fused list is cut to the rows asked.
Queries go through the model's query side (``encode_query``: its "query" prompt, a Router's query
route), the corpus through its document side, as sentence-transformers' retrieval does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sentemb.cli.common import InputError
from sentemb.cli.encode import CHUNK_ROWS
from sentemb.cli.io import Source, read_blocks
from sentemb.cli.sparse import check_sparse_facts, load_sparse_model

if TYPE_CHECKING:
    from sentemb.similarity import Hit
    from sentemb.sparse import SparseEncoder
    from sentemb.sparse_vectors import SparseEmbeddings

FUSION_DEPTH = 100

DenseHits = Callable[[int], "tuple[list[Any], list[str], list[list[Hit]]]"]
Found = list[list[tuple[Any, float, "str | None"]]]


class SparseSearch:
    """What the sparse flags ask for: the model, saved vectors, and the fusion (None: sparse alone)."""

    def __init__(
        self, model: str, max_active_dims: int | None, saved: str | None, fusion: str | None, sparse_weight: float,
        *, prompts: tuple[str | None, ...],
    ) -> None:  # fmt: skip
        self.model, self.max_active_dims, self.saved = model, max_active_dims, saved
        self.fusion, self.sparse_weight, self.prompts = fusion, sparse_weight, prompts

    def run(
        self, queries: list[str], corpus: Source | None, top_k: int, *, dense: DenseHits, params: dict[str, Any]
    ) -> tuple[Found, str]:
        """The hits as (id, score, text or None) per query, and the method that found them."""
        sparse = load_sparse_model(self.model, params, self.max_active_dims, beside_dense=self.fusion is not None)
        ids, texts, vectors = self._corpus(sparse, corpus)
        depth = top_k if self.fusion is None else max(top_k, FUSION_DEPTH)
        query_vectors = sparse.encode_query(queries, **_prompt(self.prompts[0], self.prompts[1]))
        from sentemb.sparse_vectors import sparse_search

        hits = sparse_search(query_vectors, vectors, min(depth, len(vectors)))
        method = "sparse"
        if self.fusion is not None:
            dense_ids, dense_texts, dense_found = dense(min(depth, len(vectors)))
            if len(dense_ids) != len(ids):
                raise InputError(f"the dense corpus has {len(dense_ids):,} rows and the sparse one {len(ids):,}; "
                                 "give both sides the same corpus, in the same order")  # fmt: skip
            from sentemb.retrieval.hybrid import fuse

            weights = [1.0 - self.sparse_weight, self.sparse_weight]
            hits = fuse(self.fusion, [dense_found, hits], top_k, weights=weights)
            method = f"hybrid {self.fusion}"
            texts = texts or dense_texts
        return [[(ids[h.corpus_id], h.score, texts[h.corpus_id] if texts else None) for h in row[:top_k]]
                for row in hits], method  # fmt: skip

    def _corpus(self, model: SparseEncoder, source: Source | None) -> tuple[list[Any], list[str], SparseEmbeddings]:
        """Ids, texts (none without --corpus) and sparse vectors: the saved ones, or the corpus encoded now."""
        from sentemb.sparse_vectors import SparseEmbeddings

        ids: list[Any] = []
        texts: list[str] = []
        parts: list[SparseEmbeddings] = []
        if self.saved is not None:
            from sentemb.cli.corpus import retrieval_errors
            from sentemb.retrieval.sparse_files import read_sparse

            with retrieval_errors():
                read = read_sparse(self.saved, dim=model.dim)
            check_sparse_facts(read.model, model, self.saved)
            ids, parts = read.ids, [read.embeddings]
        if source is not None:
            corpus_ids: list[Any] = []
            prompt = _prompt(self.prompts[2], self.prompts[3])
            for chunk in read_blocks(source, CHUNK_ROWS):
                corpus_ids += chunk.ids
                texts += chunk.texts
                if self.saved is None and chunk.texts:
                    parts.append(model.encode_document(chunk.texts, **prompt))
            if not texts:
                raise InputError(f"{source.label}: no texts in the corpus")
            if self.saved is not None and len(texts) != len(ids):
                raise InputError(f"--corpus has {len(texts):,} texts but --sparse-embeddings has {len(ids):,} vectors")
            ids = corpus_ids if self.saved is None or source.id_field else ids
        return ids, texts, SparseEmbeddings.concat(parts)


def _prompt(name: str | None, text: str | None) -> dict[str, str]:
    """The keywords of a prompt flag pair (none when neither is given: the model's own choice)."""
    if text is not None:
        return {"prompt": text}
    return {"prompt_name": name} if name is not None else {}
