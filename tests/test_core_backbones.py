"""Parity with sentence-transformers on tiny random models of every supported backbone."""


import numpy as np
import pytest

import sentemb
from tiny_models import BACKBONES, build_tiny_model, sentence_transformer

TEXTS = [
    "A man is playing a guitar.",
    "",
    "   ",
    "Short",
    "The quick brown fox jumps over the lazy dog near the river bank. " * 12,  # over 64 tokens: truncated
    "Ünïcödé, emoji 🙂 and punctuation!?",
]


@pytest.mark.parametrize("model_type", BACKBONES)
def test_vectors_match_sentence_transformers(tiny_dirs, model_type):
    folder = tiny_dirs[model_type]
    ours = sentemb.load(folder, device="cpu").encode(TEXTS)
    reference = sentence_transformer(folder).encode(TEXTS, convert_to_numpy=True, batch_size=4)
    assert ours.shape == reference.shape == (len(TEXTS), 32)
    assert ours.dtype == np.float32
    assert np.abs(ours - reference).max() <= 1e-5


@pytest.mark.parametrize("pooling", ["cls", "max", "mean_sqrt_len"])
def test_other_pooling_modes_match_sentence_transformers(tmp_path, pooling):
    folder = build_tiny_model("bert", tmp_path, pooling=pooling, normalize=True)
    encoder = sentemb.load(folder, device="cpu")
    assert encoder.pooling is sentemb.Pooling(pooling)
    assert encoder.normalizes
    reference = sentence_transformer(folder).encode(TEXTS, convert_to_numpy=True)
    assert np.abs(encoder.encode(TEXTS) - reference).max() <= 1e-5


@pytest.mark.parametrize("model_type", ["bert", "roberta", "bart"])
def test_saved_folder_loads_in_both_libraries_with_the_same_vectors(tiny_dirs, tmp_path, model_type):
    encoder = sentemb.load(tiny_dirs[model_type], device="cpu", pooling="max", normalize=True, max_length=32)
    before = encoder.encode(TEXTS)
    saved = encoder.save(tmp_path / "saved")
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json", "config.json"):
        assert (saved / name).is_file(), name
    assert (saved / "2_Normalize").is_dir()
    again = sentemb.load(saved, device="cpu")
    assert (again.pooling, again.normalizes, again.max_length) == (sentemb.Pooling.MAX, True, 32)
    np.testing.assert_allclose(again.encode(TEXTS), before, atol=1e-6)
    reference = sentence_transformer(saved)
    assert reference.max_seq_length == 32
    assert np.abs(reference.encode(TEXTS, convert_to_numpy=True) - before).max() <= 1e-5


def test_folder_saved_by_sentence_transformers_loads_with_its_settings(tiny_dirs, tmp_path):
    reference = sentence_transformer(tiny_dirs["mpnet"])
    reference.max_seq_length = 20
    reference.save(str(tmp_path / "st"))
    encoder = sentemb.load(tmp_path / "st", device="cpu")
    assert encoder.max_length == 20
    assert np.abs(encoder.encode(TEXTS) - reference.encode(TEXTS, convert_to_numpy=True)).max() <= 1e-5


def test_plain_transformers_folder_uses_mean_pooling_without_normalisation(tiny_dirs, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    plain = tmp_path / "plain"
    AutoModel.from_pretrained(tiny_dirs["distilbert"]).save_pretrained(plain)
    AutoTokenizer.from_pretrained(tiny_dirs["distilbert"]).save_pretrained(plain)
    encoder = sentemb.load(plain, device="cpu")
    assert (encoder.pooling, encoder.normalizes, encoder.max_length) == (sentemb.Pooling.MEAN, False, 128)
    # same weights as the sentence-transformers folder, whose only other difference is max_length=64
    reference = sentemb.load(tiny_dirs["distilbert"], device="cpu", max_length=128)
    np.testing.assert_allclose(encoder.encode(TEXTS), reference.encode(TEXTS), atol=1e-6)
