"""sentence-transformers folders: refused modules, Dense weights that do not fit, prompts, the model's
similarity function, and round trips (sentemb save -> sentence-transformers load and back)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import sentemb
from sentemb.similarity import similarity_matrix, similarity_pairwise
from st_shapes import PROMPTS, SHAPES, build_st_folder
from tiny_models import PARITY_TEXTS, build_tiny_model

REFUSED = [
    "sentence_transformers.models.CNN",
    "sentence_transformers.models.LSTM",
    "sentence_transformers.models.WordEmbeddings",
    "sentence_transformers.models.WordWeights",
    "sentence_transformers.models.BoW",
    "sentence_transformers.models.LayerNorm",
    "sentence_transformers.models.Dropout",
    "sentence_transformers.models.WeightedLayerPooling",
    "sentence_transformers.models.StaticEmbedding",
    "sentence_transformers.models.Router",
    "my_package.layers.Dense",  # a custom class, even with a familiar name
]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return build_tiny_model("bert", tmp_path_factory.mktemp("st-backbone") / "bert")


@pytest.fixture(scope="module")
def dense_folder(backbone, tmp_path_factory):
    """Mean pooling, Dense 32 -> 16 Tanh, Normalize; e5-style prompts, query by default, dot similarity."""
    out = tmp_path_factory.mktemp("st-dense") / "model"
    shape = SHAPES["dense+normalize"]
    return build_st_folder(backbone, shape, out, default_prompt_name="query", similarity_fn_name="dot")


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def _modules(folder):
    return json.loads((folder / "modules.json").read_text())


@pytest.mark.parametrize("kind", REFUSED)
def test_every_other_module_type_is_refused_naming_module_folder_and_what_runs(dense_folder, tmp_path, kind):
    folder = _copy(dense_folder, tmp_path)
    modules = _modules(folder)
    modules.insert(2, {"idx": 2, "name": "extra", "path": "2_Extra", "type": kind})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(sentemb.UnsupportedModelError) as caught:
        sentemb.load(folder, device="cpu")
    message = str(caught.value)
    assert kind in message and str(folder / "2_Extra") in message
    assert "Transformer, Pooling, Dense (any number) and Normalize (last)" in message
    assert isinstance(caught.value, sentemb.ModelNotFoundError)


def test_normalize_before_dense_is_refused(dense_folder, tmp_path):
    folder = _copy(dense_folder, tmp_path)
    modules = _modules(folder)
    modules[2], modules[3] = modules[3], modules[2]
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(sentemb.UnsupportedModelError, match=r"module 3 is .*Dense"):
        sentemb.load(folder, device="cpu")


def test_concatenated_pooling_modes_and_unknown_activations_are_refused(dense_folder, tmp_path):
    folder = _copy(dense_folder, tmp_path)
    pool = folder / "1_Pooling" / "config.json"
    pool.write_text(json.dumps({"embedding_dimension": 32, "pooling_mode": ["mean", "max"]}))
    with pytest.raises(sentemb.UnsupportedModelError, match=r"pooling mode \['mean', 'max'\].*exactly one of cls"):
        sentemb.load(folder, device="cpu")
    pool.write_text(json.dumps({"embedding_dimension": 32, "pooling_mode": "mean"}))
    dense = folder / "2_Dense" / "config.json"
    dense.write_text(json.dumps({**json.loads(dense.read_text()), "activation_function": "my.Swish"}))
    with pytest.raises(sentemb.UnsupportedModelError, match=r"activation 'my.Swish' is not supported.*Tanh"):
        sentemb.load(folder, device="cpu")


def test_dense_weights_that_do_not_fit_are_refused(dense_folder, tmp_path):
    from safetensors.numpy import save_file

    folder = _copy(dense_folder, tmp_path)
    save_file({"linear.weight": np.zeros((16, 8), np.float32), "linear.bias": np.zeros(16, np.float32)},
              str(folder / "2_Dense" / "model.safetensors"))  # fmt: skip
    with pytest.raises(sentemb.UnsupportedModelError, match=r"Dense weights do not fit its config.*\(16, 8\)"):
        sentemb.load(folder, device="cpu")
    # Weights and config agree, but the Dense takes 8 numbers while the transformer gives 32.
    config = folder / "2_Dense" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "in_features": 8}))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "mean"}))
    with pytest.raises(sentemb.UnsupportedModelError, match="Dense takes 8 numbers but the transformer gives 32"):
        sentemb.load(folder, device="cpu")


def test_pickled_dense_weights_need_allow_pickle(dense_folder, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = _copy(dense_folder, tmp_path)
    weights = folder / "2_Dense" / "model.safetensors"
    torch.save(load_file(weights), folder / "2_Dense" / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(sentemb.UnsafeModelError, match=r"pytorch_model.bin is a pickle file.*allow_pickle=True"):
        sentemb.load(folder, device="cpu")
    pickled = sentemb.load(folder, device="cpu", allow_pickle=True).encode(PARITY_TEXTS)
    np.testing.assert_array_equal(pickled, sentemb.load(dense_folder, device="cpu").encode(PARITY_TEXTS))


def test_prompts_default_prompt_and_encode_query_document_follow_sentence_transformers(dense_folder):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(dense_folder), device="cpu")
    ours = sentemb.load(dense_folder, device="cpu")
    assert ours.prompts == st.prompts == {"query": "query: ", "document": "", "passage": "passage: "}
    assert ours.default_prompt_name == "query" and ours.dim == 16
    texts = PARITY_TEXTS[:3]
    calls = {
        "encode": ({}, {}),
        "encode prompt_name=passage": ({"prompt_name": "passage"}, {"prompt_name": "passage"}),
        "encode prompt=...": ({"prompt": "Represent this: "}, {"prompt": "Represent this: "}),
        "encode prompt=''": ({"prompt": ""}, {"prompt": ""}),
    }
    for label, (mine, theirs) in calls.items():
        assert np.abs(ours.encode(texts, **mine) - st.encode(texts, **theirs)).max() <= 1e-5, label
    assert np.abs(ours.encode_query(texts) - st.encode_query(texts)).max() <= 1e-5
    assert np.abs(ours.encode_document(texts) - st.encode_document(texts)).max() <= 1e-5
    no_default = sentemb.load(dense_folder, device="cpu", default_prompt_name="")
    np.testing.assert_array_equal(no_default.encode(texts), ours.encode(texts, prompt=""))


def test_unknown_prompt_names_are_config_errors_listing_the_prompts(dense_folder):
    ours = sentemb.load(dense_folder, device="cpu")
    with pytest.raises(sentemb.ConfigError, match=r"prompt_name='search' .* 'query' \('query: '\), .*'passage'"):
        ours.encode("x", prompt_name="search")
    with pytest.raises(sentemb.ConfigError, match="prompt_name='nope' is not one of this model's prompts"):
        sentemb.load(dense_folder, device="cpu", default_prompt_name="nope")


def test_prompt_tokens_count_in_the_truncation_report(dense_folder):
    ours = sentemb.load(dense_folder, device="cpu", max_length=16)
    text = "a b c d e f g h i j k l m"  # 13 tokens: 15 with [CLS] and [SEP], 17 with the prompt
    plain = ours.encode_with_info([text], prompt="").info[0]
    prompted = ours.encode_with_info([text], prompt_name="query").info[0]
    assert prompted.num_tokens == plain.num_tokens + 2  # "query", ":"
    assert prompted.truncated and not plain.truncated


@pytest.mark.parametrize("fn", ["cosine", "dot", "euclidean", "manhattan"])
def test_similarity_functions_match_sentence_transformers(fn):
    from sentence_transformers.util import similarity as st_similarity

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 16)).astype(np.float32), rng.normal(size=(5, 16)).astype(np.float32)
    names = {"cosine": "cos_sim", "dot": "dot_score", "euclidean": "euclidean_sim", "manhattan": "manhattan_sim"}
    want = getattr(st_similarity, names[fn])(a, b).numpy()
    np.testing.assert_allclose(similarity_matrix(a, b, fn), want, atol=1e-4)
    want_pairs = getattr(st_similarity, f"pairwise_{names[fn]}")(a, b[:4]).numpy()
    np.testing.assert_allclose(similarity_pairwise(a, b[:4], fn), want_pairs, atol=1e-4)


def test_encoder_similarity_uses_the_folders_function(dense_folder):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(dense_folder), device="cpu")
    ours = sentemb.load(dense_folder, device="cpu")
    assert ours.similarity_fn_name == st.similarity_fn_name == "dot"
    vectors = ours.encode(PARITY_TEXTS)
    np.testing.assert_allclose(ours.similarity(vectors, vectors), st.similarity(vectors, vectors).numpy(), atol=1e-5)
    reverse = vectors[::-1].copy()
    np.testing.assert_allclose(
        ours.similarity_pairwise(vectors, reverse), st.similarity_pairwise(vectors, reverse).numpy(), atol=1e-5
    )


def test_similarity_module_raises_the_packages_errors():
    with pytest.raises(sentemb.ConfigError, match="differ in size"):
        sentemb.cos_sim(np.ones((1, 2)), np.ones((1, 3)))
    with pytest.raises(sentemb.ConfigError, match="choose one of cosine, dot, euclidean, manhattan"):
        sentemb.semantic_search(np.ones((1, 2)), np.ones((3, 2)), score="jaccard")
    with pytest.raises(sentemb.ConfigError, match="2-D array"):
        similarity_matrix(np.ones((1, 2, 2)), np.ones((1, 2)))


@pytest.mark.parametrize("fn", ["euclidean", "manhattan"])
def test_search_by_distance_ranks_the_nearest_first(fn):
    rng = np.random.default_rng(1)
    queries, corpus = rng.normal(size=(3, 8)), rng.normal(size=(97, 8))
    hits = sentemb.semantic_search(queries, corpus, top_k=5, score=fn, chunk_size=10)
    full = similarity_matrix(queries, corpus, fn)
    for q, row in enumerate(hits):
        assert [h.corpus_id for h in row] == np.argsort(-full[q], kind="stable")[:5].tolist()


def test_sentemb_save_loads_in_sentence_transformers_with_the_same_vectors_and_prompts(dense_folder, tmp_path):
    from sentence_transformers import SentenceTransformer

    ours = sentemb.load(dense_folder, device="cpu", truncate_dim=12)
    saved = ours.save(tmp_path / "saved")
    st = SentenceTransformer(str(saved), device="cpu")
    assert st.prompts == ours.prompts and st.default_prompt_name == "query"
    assert (st.similarity_fn_name, st.truncate_dim) == ("dot", 12)
    for prompt_name in (None, "query", "passage"):
        mine = ours.encode(PARITY_TEXTS, prompt_name=prompt_name)
        assert mine.shape == (len(PARITY_TEXTS), 12)
        assert np.abs(st.encode(PARITY_TEXTS, prompt_name=prompt_name) - mine).max() <= 1e-5, prompt_name
    again = sentemb.load(saved, device="cpu")
    np.testing.assert_array_equal(again.encode(PARITY_TEXTS), ours.encode(PARITY_TEXTS))
    assert (again.truncate_dim, again.similarity_fn_name, again.default_prompt_name) == (12, "dot", "query")


@pytest.mark.parametrize("shape", ["two_dense", "lasttoken/no_prompt", "weightedmean"])
def test_round_trip_keeps_every_module(backbone, tmp_path, shape):
    from sentence_transformers import SentenceTransformer

    folder = build_st_folder(backbone, SHAPES[shape], tmp_path / "st")
    ours = sentemb.load(folder, device="cpu")
    saved = ours.save(tmp_path / "saved")
    st, original = SentenceTransformer(str(saved), device="cpu"), SentenceTransformer(str(folder), device="cpu")
    reloaded = sentemb.load(saved, device="cpu")
    for prompt_name in (None, "query"):
        want = original.encode(PARITY_TEXTS, prompt_name=prompt_name)
        assert np.abs(st.encode(PARITY_TEXTS, prompt_name=prompt_name) - want).max() <= 1e-5
        assert np.abs(reloaded.encode(PARITY_TEXTS, prompt_name=prompt_name) - want).max() <= 1e-5
    assert ours.prompts == {**PROMPTS, "document": ""}
