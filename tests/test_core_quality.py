"""The real default model: the numbers users compare against sentence-transformers."""

import numpy as np

import sentemb
from conftest import STS_SENTENCES


def test_three_sentences_similarities(default_encoder):
    scores = sentemb.cos_sim(default_encoder.encode(STS_SENTENCES), default_encoder.encode(STS_SENTENCES))
    np.testing.assert_allclose([scores[0, 1], scores[0, 2], scores[1, 2]], [0.6660, 0.1046, 0.1411], atol=1e-4)


def test_sts_dev_spearman(default_encoder, sts_dev_path):
    data = sentemb.read_sts(sts_dev_path)
    assert len(data.scores) == 1500
    result = sentemb.evaluate_sts(default_encoder, data.sentences1, data.sentences2, data.scores)
    assert abs(result.spearman - 86.72) <= 0.02, result.spearman
    assert 80 < result.pearson < 95


def test_sts_dev_vectors_match_sentence_transformers(default_encoder, default_model_dir, sts_dev_path):
    from sentence_transformers import SentenceTransformer

    data = sentemb.read_sts(sts_dev_path)
    texts = list(dict.fromkeys(data.sentences1 + data.sentences2))[:1000]
    reference = SentenceTransformer(str(default_model_dir), device="cpu").encode(texts, convert_to_numpy=True)
    assert np.abs(default_encoder.encode(texts) - reference).max() <= 1e-5


def test_semantic_search_ranks_the_paraphrase_first(default_encoder):
    corpus = [
        "A man is eating food.",
        "A monkey is playing drums.",
        "The girl is carrying a baby.",
        "A man rides a horse.",
    ]
    hits = sentemb.semantic_search(
        default_encoder.encode(["Someone is having a meal."]), default_encoder.encode(corpus), top_k=2
    )
    assert hits[0][0].corpus_id == 0
    assert hits[0][0].score > hits[0][1].score > 0
