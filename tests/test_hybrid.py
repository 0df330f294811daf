"""Fusing a dense and a sparse retriever's hits (reciprocal rank, weighted min-max) and recall@k."""

from __future__ import annotations

import pytest

from sentemb.errors import ConfigError
from sentemb.retrieval.hybrid import fuse, min_max, recall_at_k, reciprocal_rank_fusion, weighted_fusion
from sentemb.similarity import Hit


def hits(*pairs):
    return [Hit(row, score) for row, score in pairs]


DENSE = [hits((0, 0.9), (1, 0.8), (2, 0.1))]
SPARSE = [hits((2, 30.0), (0, 10.0), (3, 5.0))]


def test_rrf_adds_one_over_k_plus_rank_over_the_lists_that_hold_a_row():
    fused = reciprocal_rank_fusion([DENSE, SPARSE], top_k=4)[0]
    expected = {0: 1 / 61 + 1 / 62, 1: 1 / 62, 2: 1 / 63 + 1 / 61, 3: 1 / 63}
    assert [hit.corpus_id for hit in fused] == [0, 2, 1, 3]
    for hit in fused:
        assert hit.score == pytest.approx(expected[hit.corpus_id])


def test_rrf_uses_ranks_only_and_honours_k_and_weights():
    rescaled = [hits((2, 3e6), (0, 1e6), (3, 1.0))]  # the same order on another scale: the same fusion
    assert reciprocal_rank_fusion([DENSE, rescaled], 4) == reciprocal_rank_fusion([DENSE, SPARSE], 4)
    fused = reciprocal_rank_fusion([DENSE, SPARSE], 2, k=0, weights=[1.0, 3.0])[0]
    assert fused == [Hit(2, 1 / 3 + 3 / 1), Hit(0, 1 / 1 + 3 / 2)]


def test_weighted_fusion_sums_min_max_normalised_scores():
    fused = weighted_fusion([DENSE, SPARSE], top_k=4, weights=[0.7, 0.3])[0]
    dense = {0: 1.0, 1: 0.875, 2: 0.0}
    sparse = {2: 1.0, 0: 0.2, 3: 0.0}
    expected = {row: 0.7 * dense.get(row, 0.0) + 0.3 * sparse.get(row, 0.0) for row in range(4)}
    assert [hit.corpus_id for hit in fused] == sorted(expected, key=lambda r: -expected[r])
    for hit in fused:
        assert hit.score == pytest.approx(expected[hit.corpus_id])


def test_min_max_of_equal_scores_is_one_and_ties_go_to_the_lower_row():
    assert min_max(hits((5, 2.0), (1, 2.0))).tolist() == [1.0, 1.0]
    assert min_max([]).tolist() == []
    fused = weighted_fusion([[hits((5, 2.0), (1, 2.0))]], 2)[0]
    assert [hit.corpus_id for hit in fused] == [1, 5]


def test_fuse_names_the_method_and_refuses_bad_arguments():
    assert fuse("rrf", [DENSE, SPARSE], 3) == reciprocal_rank_fusion([DENSE, SPARSE], 3)
    assert fuse("weighted", [DENSE, SPARSE], 3) == weighted_fusion([DENSE, SPARSE], 3)
    with pytest.raises(ConfigError, match="rrf, weighted"):
        fuse("max", [DENSE, SPARSE], 3)
    with pytest.raises(ConfigError, match="one hit list per query"):
        fuse("rrf", [DENSE, SPARSE + SPARSE], 3)
    with pytest.raises(ConfigError, match="2 numbers"):
        fuse("weighted", [DENSE, SPARSE], 3, weights=[1.0])
    with pytest.raises(ConfigError, match="not all 0"):
        fuse("rrf", [DENSE, SPARSE], 3, weights=[0.0, 0.0])
    with pytest.raises(ConfigError, match="top_k"):
        fuse("rrf", [DENSE, SPARSE], 0)
    with pytest.raises(ConfigError, match="at least one"):
        fuse("rrf", [], 3)


def test_recall_at_k_is_the_mean_share_of_relevant_rows_found():
    found = [hits((0, 1.0), (1, 0.5), (2, 0.1)), [3, 4, 5], [7]]
    relevant = [{1, 9}, {5}, set()]  # the last query has nothing relevant: left out
    assert recall_at_k(found, relevant, k=2) == pytest.approx((0.5 + 0.0) / 2)
    assert recall_at_k(found, relevant, k=3) == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(ConfigError, match="undefined"):
        recall_at_k([[1]], [set()], 1)
    with pytest.raises(ConfigError, match="one per query"):
        recall_at_k([[1]], [], 1)
    with pytest.raises(ConfigError, match="at least 1"):
        recall_at_k([[1]], [{1}], 0)


def test_hybrid_recall_on_sts_pairs_beside_dense_and_sparse_alone(default_encoder, sts_dev_path):
    """A small labelled set: STS dev pairs scored >= 4, each first sentence a query whose relevant row is
    its second sentence among all second sentences. The sparse side is the lexical fake (word-piece
    counts), the dense side the default model; both fusions must keep what either side finds."""
    import sentemb
    from fakes import FakeSparseEncoder
    from sentemb.sparse_vectors import sparse_search

    dev = sentemb.read_sts(sts_dev_path)
    pairs = list(zip(dev.sentences1, dev.sentences2, dev.scores, strict=True))[:400]
    corpus = list(dict.fromkeys(second for _, second, _ in pairs))
    row = {text: i for i, text in enumerate(corpus)}
    queries = [first for first, _, score in pairs if score >= 4]
    relevant = [{row[second]} for _, second, score in pairs if score >= 4]
    dense = sentemb.semantic_search(default_encoder.encode(queries), default_encoder.encode(corpus), top_k=100)
    sparse_model = FakeSparseEncoder(max_length=128)
    sparse = sparse_search(sparse_model.encode_query(queries), sparse_model.encode_document(corpus), top_k=100)
    recall = {
        "dense": recall_at_k(dense, relevant, 10),
        "sparse": recall_at_k(sparse, relevant, 10),
        "rrf": recall_at_k(fuse("rrf", [dense, sparse], top_k=10), relevant, 10),
        "weighted": recall_at_k(fuse("weighted", [dense, sparse], top_k=10), relevant, 10),
    }
    print("recall@10 on", len(queries), "STS dev queries:", recall)
    assert len(queries) > 50
    assert recall["dense"] > 0.9 and recall["sparse"] > 0.6
    for method in ("rrf", "weighted"):
        assert min(recall["dense"], recall["sparse"]) <= recall[method] <= 1.0
