"""The sparse vector type: CSR layout, dot products and search against dense numpy, decode, scipy."""

import numpy as np
import pytest

from sentemb.errors import VectorsError
from sentemb.sparse_vectors import SparseEmbeddings, sparse_dot, sparse_search


def _random(rows: int, dim: int, density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dense = rng.random((rows, dim)).astype(np.float32)
    dense[dense > density] = 0.0
    return dense


def test_from_dense_round_trips_with_ascending_ids_and_empty_rows():
    dense = _random(6, 40, 0.3, 0)
    dense[2] = 0.0
    vectors = SparseEmbeddings.from_dense(dense)
    assert len(vectors) == 6 and vectors.nnz_per_row()[2] == 0
    np.testing.assert_array_equal(vectors.to_dense(), dense)
    for row, vec in zip(dense, vectors, strict=True):
        np.testing.assert_array_equal(vec.indices, np.flatnonzero(row))
        assert vec.indices.dtype == np.int32 and vec.values.dtype == np.float32
    np.testing.assert_array_equal(vectors.to_scipy().toarray(), dense)


def test_max_active_dims_keeps_each_rows_largest_weights():
    dense = _random(4, 30, 0.9, 1)
    kept = SparseEmbeddings.from_dense(dense, max_active_dims=5).to_dense()
    for row, out in zip(dense, kept, strict=True):
        top = np.sort(row)[-5:]
        np.testing.assert_array_equal(np.sort(out[out > 0]), top)


def test_max_active_dims_selects_by_absolute_value_as_sentence_transformers():
    import torch
    from sentence_transformers.util import select_max_active_dims

    rng = np.random.default_rng(4)
    dense = (rng.standard_normal((5, 40)) * (rng.random((5, 40)) < 0.6)).astype(np.float32)  # signed, with zeros
    for k in (1, 3, 10, 30, 40, 50):
        ours = SparseEmbeddings.from_dense(dense, max_active_dims=k).to_dense()
        np.testing.assert_array_equal(ours, select_max_active_dims(torch.from_numpy(dense), k).numpy())
    with pytest.raises(VectorsError, match="at least 1"):
        SparseEmbeddings.from_dense(dense, max_active_dims=0)


def test_dot_and_search_match_dense_numpy():
    corpus, queries = _random(23, 50, 0.2, 2), _random(4, 50, 0.3, 3)
    c, q = SparseEmbeddings.from_dense(corpus), SparseEmbeddings.from_dense(queries)
    expected = queries @ corpus.T
    np.testing.assert_allclose(sparse_dot(q, c), expected, rtol=1e-6, atol=1e-6)
    hits = sparse_search(q, c, top_k=5, chunk_size=7)
    for row, found in zip(expected, hits, strict=True):
        assert [h.corpus_id for h in found] == list(np.argsort(-row, kind="stable")[:5])


def test_rows_slices_concat_and_decode():
    vectors = SparseEmbeddings.from_rows([([5, 1], [0.5, 2.0]), ([], []), ([3], [1.0])], dim=6, vocabulary="abcdef")
    np.testing.assert_array_equal(vectors[0].indices, [1, 5])
    assert vectors.decode(top_k=1) == [[("b", 2.0)], [], [("d", 1.0)]]
    joined = SparseEmbeddings.concat([vectors[1:], vectors[:1]])
    np.testing.assert_array_equal(joined.to_dense(), vectors.to_dense()[[1, 2, 0]])
    with pytest.raises(VectorsError, match="twice"):
        SparseEmbeddings.from_rows([([1, 1], [1.0, 2.0])], dim=6)
    with pytest.raises(VectorsError, match="outside the vocabulary"):
        SparseEmbeddings.from_rows([([9], [1.0])], dim=6)
    with pytest.raises(VectorsError, match="no vocabulary"):
        SparseEmbeddings.from_rows([([1], [1.0])], dim=6).decode()
