import numpy as np
import pytest

import sentemb
from sentemb.evaluation import correlations, read_sts


def test_cos_sim_and_dot_score_shapes_and_values():
    a = np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    b = np.array([[0.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(sentemb.cos_sim(a, b), [[0.0], [np.sqrt(0.5)]], atol=1e-6)
    np.testing.assert_allclose(sentemb.dot_score(a, b), [[0.0], [2.0]])
    assert sentemb.cos_sim(a[0], a[0]).shape == (1, 1)
    with pytest.raises(ValueError, match="differ in size"):
        sentemb.cos_sim(a, np.ones((1, 3)))


def test_semantic_search_matches_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    queries, corpus = rng.normal(size=(5, 8)), rng.normal(size=(503, 8))
    hits = sentemb.semantic_search(queries, corpus, top_k=7, chunk_size=50)
    full = sentemb.cos_sim(queries, corpus)
    for q, row in enumerate(hits):
        expected = np.argsort(-full[q])[:7]
        assert [h.corpus_id for h in row] == expected.tolist()
        np.testing.assert_allclose([h.score for h in row], full[q, expected], rtol=1e-5)
    assert len(sentemb.semantic_search(queries, corpus[:3], top_k=10)[0]) == 3


def test_correlations_agree_with_scipy():
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(1)
    gold = rng.integers(0, 6, size=200).astype(float)  # many ties
    predicted = gold + rng.normal(size=200)
    spearman, pearson = correlations(predicted, gold)
    assert spearman == pytest.approx(100 * spearmanr(predicted, gold).statistic, abs=1e-9)
    assert pearson == pytest.approx(100 * pearsonr(predicted, gold).statistic, abs=1e-9)


def test_read_sts_ignores_extra_fields_and_names_bad_lines(tmp_path):
    good = tmp_path / "sts.csv"
    good.write_text(
        "g\tf\t2012\t1\t4.5\tA cat.\tA kitten.\textra\tfields\n\ng\tf\t2012\t2\t0\tX\tY\n", encoding="utf-8"
    )
    data = read_sts(good)
    assert data.sentences1 == ["A cat.", "X"] and data.sentences2 == ["A kitten.", "Y"] and data.scores == [4.5, 0.0]
    bad = tmp_path / "bad.csv"
    bad.write_text("g\tf\t2012\t1\tfive\tA\tB\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.csv:1: score 'five'"):
        read_sts(bad)
