"""`sentemb distill` / sentemb.distill: the same static model as model2vec's distill with the same options,
on a tiny random BERT; the folder round-trips through model2vec and sentence-transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sentemb
from cli_helpers import invoke
from tiny_models import PARITY_TEXTS, build_tiny_model

WORDS = ["electroencephalography", "Zeitgeist", "new york city"]  # a new word, a new one once lowercased, a phrase
KNOWN_TEXTS = [text for text in PARITY_TEXTS if "🙂" not in text]  # without BERT's unknown token


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return build_tiny_model("bert", tmp_path_factory.mktemp("distill") / "bert")


def _model2vec(folder, **options):
    from model2vec.distill import distill

    return distill(str(folder), pca_dims=options.pop("pca_dims", 16), quantize_to="float32", device="cpu", **options)


def _same_up_to_column_signs(got, want, atol):
    """PCA components have no sign of their own; both libraries pick it by the largest score, which
    float noise could flip for a component whose two extremes tie. Compare column by column."""
    signs = np.sign(np.sum(got * want, axis=0))
    np.testing.assert_allclose(got * signs, want, atol=atol)
    return signs


@pytest.fixture(scope="module")
def distilled(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("distilled") / "static"
    return sentemb.distill(tiny_bert, out, dim=16, device="cpu")


def test_the_table_and_tokenizer_are_model2vec_s(tiny_bert, distilled):
    from model2vec import StaticModel

    want = _model2vec(tiny_bert)
    got = StaticModel.from_pretrained(distilled)
    assert got.tokens == want.tokens
    signs = _same_up_to_column_signs(got.embedding, want.embedding, atol=1e-4)
    assert (signs == 1).all(), "the components' signs differ from model2vec's"
    np.testing.assert_allclose(sentemb.load(distilled).encode(PARITY_TEXTS), want.encode(PARITY_TEXTS), atol=1e-4)


def test_the_folder_round_trips_through_model2vec_and_sentence_transformers(distilled):
    from model2vec import StaticModel
    from sentence_transformers import SentenceTransformer

    ours = sentemb.load(distilled)
    assert ours.describe().model_type == "model2vec" and ours.dim == 16 and ours.normalizes
    vectors = ours.encode(PARITY_TEXTS)
    np.testing.assert_allclose(StaticModel.from_pretrained(distilled).encode(PARITY_TEXTS), vectors, atol=1e-6)
    st = SentenceTransformer(str(distilled), device="cpu")
    np.testing.assert_allclose(st.encode(KNOWN_TEXTS, convert_to_numpy=True), ours.encode(KNOWN_TEXTS), atol=1e-6)


def test_options_match_model2vec_s(tiny_bert, tmp_path):
    """No PCA, no weighting, an extra vocabulary: the same tokens and rows as model2vec."""
    from model2vec import StaticModel

    want = _model2vec(tiny_bert, pca_dims=None, sif_coefficient=None, vocabulary=WORDS)
    out = sentemb.distill(tiny_bert, tmp_path / "s", dim=None, sif_coefficient=None, vocabulary=WORDS, device="cpu")
    got = StaticModel.from_pretrained(out)
    assert got.tokens == want.tokens and "electroencephalography" in got.tokens
    np.testing.assert_allclose(got.embedding, want.embedding, atol=1e-5)
    texts = [*PARITY_TEXTS, "Electroencephalography in New York City"]
    np.testing.assert_allclose(sentemb.load(out).encode(texts), want.encode(texts), atol=1e-5)


@pytest.mark.parametrize("backbone", ["roberta", "albert"])
def test_byte_level_bpe_and_unigram_tokenizers_match_model2vec_s(backbone, tmp_path):
    """RoBERTa (byte-level BPE, no unknown token of its own) and ALBERT (Unigram), without PCA: PCA of
    these 32-wide random models has near-equal eigenvalues, whose axes float noise may turn."""
    from model2vec import StaticModel

    folder = build_tiny_model(backbone, tmp_path / backbone)
    want = _model2vec(folder, pca_dims=None)
    out = sentemb.distill(folder, tmp_path / "static", dim=None, device="cpu")
    assert StaticModel.from_pretrained(out).tokens == want.tokens
    np.testing.assert_allclose(sentemb.load(out).encode(PARITY_TEXTS), want.encode(PARITY_TEXTS), atol=1e-5)


def test_pca_to_the_full_width_and_beyond(tiny_bert, tmp_path):
    from sentemb.distillation import apply_pca

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((50, 8)).astype(np.float32)
    full = apply_pca(rows, 100)  # more than the width: every component, rotated
    assert full.shape == (50, 8)
    np.testing.assert_allclose(np.abs(np.corrcoef(full.T) - np.eye(8)).max(), 0, atol=1e-4)  # uncorrelated axes
    assert apply_pca(rows[:5], 6) is not None and apply_pca(rows[:5], 6).shape == (5, 8)  # fewer rows: unchanged


def test_cli_distill_then_encode(tiny_bert, tmp_path):
    out = tmp_path / "static"
    done = invoke("distill", str(tiny_bert), "-o", str(out), "--dim", "8", "--device", "cpu")
    assert "wrote a static model" in done.stderr
    assert json.loads((out / "config.json").read_text())["hidden_dim"] == 8
    invoke("distill", str(tiny_bert), "-o", str(out), code=4)  # not empty, no --force
    vectors = tmp_path / "v.npy"
    invoke("encode", "--text", "A man is playing a guitar.", "-m", str(out), "-o", str(vectors))
    np.testing.assert_allclose(np.load(vectors), sentemb.load(out).encode(["A man is playing a guitar."]), atol=1e-6)


def test_distilling_a_static_model_or_a_bad_option_is_refused(distilled, tiny_bert, tmp_path):
    with pytest.raises(sentemb.ConfigError, match="already a static embedding model"):
        sentemb.distill(distilled, tmp_path / "again")
    with pytest.raises(sentemb.ConfigError, match="by mean, cls or lasttoken"):
        sentemb.distill(tiny_bert, tmp_path / "max", pooling="max")
    with pytest.raises(sentemb.ConfigError, match="unknown option"):
        sentemb.distill(tiny_bert, tmp_path / "colour", colour="red")
