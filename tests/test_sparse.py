"""Sparse (SPLADE) encoders: the same ids and weights as sentence-transformers' SparseEncoder.encode on tiny
random models it saves, on every backend; inference-free (Router) models; max_active_dims; prompts; what is
refused and how."""

from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import pytest

import sentemb
from tiny_models import PARITY_TEXTS, build_tiny_inference_free, build_tiny_model, build_tiny_splade

pytest.importorskip("sentence_transformers")

BACKENDS = ["torch", "onnx", "openvino"]
# name -> (backbone, pooling, activation, extra settings)
SPLADES = {
    "bert": ("bert", "max", "relu", {}),
    "bert-sum": ("bert", "sum", "relu", {}),
    "distilbert": ("distilbert", "max", "log1p_relu", {}),
    "distilbert-sum": ("distilbert", "sum", "log1p_relu", {}),
    "prompts": ("bert", "max", "relu", {"prompts": {"query": "query: ", "document": "passage: "}}),
    "topk": ("bert", "max", "relu", {"max_active_dims": 24}),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny SPLADE models: both poolings, both activations, BERT and DistilBERT, prompts, a saved top-k,
    and an inference-free Router."""
    root = tmp_path_factory.mktemp("sparse")
    built = {name: build_tiny_splade(backbone, root / name, pooling=pooling, activation=activation, seed=i, **extra)
             for i, (name, (backbone, pooling, activation, extra)) in enumerate(SPLADES.items())}  # fmt: skip
    built["router"] = build_tiny_inference_free(root / "router", seed=7)
    return built


@functools.cache
def _st(folder: str):
    from sentence_transformers import SparseEncoder

    return SparseEncoder(folder, device="cpu")


def st_vectors(folder, method="encode", texts=tuple(PARITY_TEXTS), **kwargs) -> np.ndarray:
    """sentence-transformers' vectors as a dense (N, vocab) float32 matrix."""
    out = getattr(_st(str(folder)), method)(list(texts), **kwargs)
    return out.to_dense().numpy()


def assert_same_vectors(ours: sentemb.SparseEmbeddings, reference: np.ndarray, atol: float = 1e-5) -> None:
    """The same non-zero ids per row, and weights within ``atol``."""
    assert len(ours) == len(reference) and ours.dim == reference.shape[1]
    for row, vector in enumerate(ours):
        np.testing.assert_array_equal(vector.indices, np.flatnonzero(reference[row]), err_msg=f"row {row}")
        np.testing.assert_allclose(vector.values, reference[row][vector.indices], atol=atol, rtol=0)


def _needs(backend: str) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(SPLADES))
def test_weights_equal_sentence_transformers(onnx_cache, models, name, backend):
    _needs(backend)
    encoder = sentemb.load_sparse(str(models[name]), backend=backend, device="cpu")
    assert encoder.plan.kind == "sparse" and encoder.backend == backend and encoder.dim == 30522
    assert_same_vectors(encoder.encode(PARITY_TEXTS), st_vectors(models[name]))
    assert_same_vectors(encoder.encode_query(PARITY_TEXTS), st_vectors(models[name], "encode_query"))
    assert_same_vectors(encoder.encode_document(PARITY_TEXTS), st_vectors(models[name], "encode_document"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_free_queries_and_splade_documents(onnx_cache, models, backend):
    _needs(backend)
    encoder = sentemb.load_sparse(str(models["router"]), backend=backend, device="cpu")
    assert encoder.describe()["inference_free_queries"] is True
    queries = encoder.encode_query(PARITY_TEXTS)
    assert_same_vectors(queries, st_vectors(models["router"], "encode_query"))
    assert_same_vectors(encoder.encode_document(PARITY_TEXTS), st_vectors(models["router"], "encode_document"))
    assert_same_vectors(encoder.encode(PARITY_TEXTS), st_vectors(models["router"]))  # the default route
    assert max(queries.nnz_per_row()) < 40  # a weight per token the text holds, nothing more


def test_max_active_dims_keeps_the_same_top_k(models):
    saved = sentemb.load_sparse(str(models["topk"]), device="cpu")
    assert saved.max_active_dims == 24 and max(saved.encode(PARITY_TEXTS).nnz_per_row()) == 24
    assert_same_vectors(saved.encode(PARITY_TEXTS), st_vectors(models["topk"]))
    assert_same_vectors(saved.encode(PARITY_TEXTS, max_active_dims=5), st_vectors(models["topk"], max_active_dims=5))
    loaded = sentemb.load_sparse(str(models["bert"]), device="cpu", max_active_dims=7)
    assert_same_vectors(loaded.encode(PARITY_TEXTS), st_vectors(models["bert"], max_active_dims=7))
    with pytest.raises(sentemb.ConfigError, match="max_active_dims must be at least 1"):
        loaded.encode(["a"], max_active_dims=0)


def test_prompts_follow_sentence_transformers(models):
    encoder = sentemb.load_sparse(str(models["prompts"]), device="cpu")
    folder = models["prompts"]
    assert_same_vectors(encoder.encode(PARITY_TEXTS, prompt_name="query"), st_vectors(folder, prompt_name="query"))
    assert_same_vectors(encoder.encode(PARITY_TEXTS, prompt="x: "), st_vectors(folder, prompt="x: "))
    assert_same_vectors(encoder.encode_query(PARITY_TEXTS), st_vectors(folder, "encode_query"))
    default = sentemb.load_sparse(str(folder), device="cpu", default_prompt_name="document")
    assert_same_vectors(default.encode(PARITY_TEXTS), st_vectors(folder, prompt_name="document"))
    with pytest.raises(sentemb.ConfigError, match="prompt_name='nope'"):
        encoder.encode(["a"], prompt_name="nope")


def test_long_texts_are_cut_and_reported(models):
    encoder = sentemb.load_sparse(str(models["bert"]), device="cpu")
    result = encoder.encode_with_info(PARITY_TEXTS)
    assert [info.truncated for info in result.info] == [False, False, False, True, False, False]
    assert result.info[3].num_tokens > encoder.max_length == 64
    strict = sentemb.load_sparse(str(models["bert"]), device="cpu", long_text="error")
    with pytest.raises(sentemb.TextTooLongError):
        strict.encode(PARITY_TEXTS)


def test_vectors_decode_score_and_batch_like_sentence_transformers(models):
    encoder = sentemb.load_sparse(str(models["bert"]), device="cpu", batch_size=2)
    vectors = encoder.encode(PARITY_TEXTS)
    top = vectors.decode(3)[0]
    st = _st(str(models["bert"]))
    reference = st.decode(st.encode(PARITY_TEXTS[:1], convert_to_tensor=True)[0], top_k=3)
    assert [token for token, _ in top] == [token for token, _ in reference]
    np.testing.assert_allclose(encoder.similarity(vectors, vectors), st.similarity(*[st.encode(PARITY_TEXTS)] * 2),
                               rtol=1e-5)  # fmt: skip
    assert len(encoder.encode([])) == 0 and len(encoder.encode("one text")) == 1
    assert_same_vectors(encoder.encode(PARITY_TEXTS, batch_size=64), vectors.to_dense())


def test_the_graph_gives_vocab_weights_not_token_logits(onnx_cache, models):
    import onnx

    from sentemb.export.recipe import recipe_for
    from sentemb.models import read_model_folder

    encoder = sentemb.load_sparse(str(models["bert"]), backend="onnx", device="cpu")
    (output,) = onnx.load(encoder.plan.graph, load_external_data=False).graph.output
    assert output.name == "splade" and len(output.type.tensor_type.shape.dim) == 2
    heads = {recipe_for(read_model_folder(models[name]), sentemb.Precision.FP32).head for name in SPLADES}
    assert heads == {"splade-max-relu", "splade-sum-relu", "splade-max-log1p_relu", "splade-sum-log1p_relu"}


def test_auto_measures_the_backends_and_stays_exact(onnx_cache, models):
    encoder = sentemb.load_sparse(str(models["bert"]), backend="auto", device="cpu")
    assert encoder.choice is not None and encoder.backend in encoder.choice.rates
    assert_same_vectors(encoder.encode(PARITY_TEXTS), st_vectors(models["bert"]))
    assert encoder.describe()["auto_choice"]["backend"] == encoder.backend


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_int8_keeps_the_heaviest_ids(onnx_cache, models, backend):
    """The feed-forward layers stay fp32 (the masked-LM head is int8); benchmarks/sparse_bench.py measures
    the same agreement on a model of the default model's size."""
    from sentemb.export.recipe import recipe_for
    from sentemb.models import read_model_folder

    _needs(backend)
    recipe = recipe_for(read_model_folder(models["bert"]), sentemb.Precision.INT8, backend)
    assert recipe.fp32_matmuls == ("feed-forward",) and recipe.head == "splade-max-relu"
    fp32 = sentemb.load_sparse(str(models["bert"]), backend=backend, device="cpu").encode(PARITY_TEXTS)
    int8 = sentemb.load_sparse(str(models["bert"]), backend=backend, precision="int8", device="cpu")
    assert int8.plan.precision == "int8"
    assert top_k_agreement(int8.encode(PARITY_TEXTS), fp32, 50) >= 0.95


def top_k_agreement(a: sentemb.SparseEmbeddings, b: sentemb.SparseEmbeddings, k: int) -> float:
    """The share of each vector's ``k`` heaviest ids that both have among their ``k`` heaviest."""
    shared = total = 0
    for x, y in zip(a, b, strict=True):
        top_x = set(x.indices[np.argsort(-x.values, kind="stable")[:k]])
        top_y = set(y.indices[np.argsort(-y.values, kind="stable")[:k]])
        shared, total = shared + len(top_x & top_y), total + max(len(top_y), 1)
    return shared / total


def test_a_hub_model_loads_offline_from_the_cache(models, tmp_path):
    repo = tmp_path / "models--acme--tiny-splade"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(models["router"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    encoder = sentemb.load_sparse("acme/tiny-splade", cache_dir=str(tmp_path), device="cpu")
    assert encoder.describe()["source"] == "hub"
    assert_same_vectors(encoder.encode_query(PARITY_TEXTS), st_vectors(models["router"], "encode_query"))


def test_each_kind_is_refused_by_the_other_loaders(models, tmp_path):
    with pytest.raises(sentemb.UnsupportedModelError, match="load_sparse"):
        sentemb.load(str(models["bert"]))
    with pytest.raises(sentemb.UnsupportedModelError, match="load_sparse"):
        sentemb.load_reranker(str(models["router"]))
    dense = build_tiny_model("bert", tmp_path / "dense")
    with pytest.raises(sentemb.UnsupportedModelError, match=r"sentemb.load\(\)"):
        sentemb.load_sparse(str(dense))
    with pytest.raises(sentemb.ConfigError, match="pooling= is an embedding model's option"):
        sentemb.load_sparse(str(models["bert"]), pooling="cls")
    with pytest.raises(sentemb.ConfigError, match="long_text='chunk'"):
        sentemb.load_sparse(str(models["bert"]), long_text="chunk")


def _edited(source, folder, edit):
    shutil.copytree(source, folder)
    path = folder / "modules.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    return folder


def test_modules_sentemb_does_not_run_are_refused_by_name(models, tmp_path):
    csr = {"idx": 2, "name": "2", "path": "2_SparseAutoEncoder",
           "type": "sentence_transformers.sparse_encoder.modules.sparse_auto_encoder.SparseAutoEncoder"}  # fmt: skip
    folder = _edited(models["bert"], tmp_path / "csr", lambda modules: [*modules, csr])
    with pytest.raises(sentemb.UnsupportedModelError, match="SparseAutoEncoder"):
        sentemb.load_sparse(str(folder))
    folder = _edited(models["bert"], tmp_path / "no-pooling", lambda modules: modules[:1])
    with pytest.raises(sentemb.UnsupportedModelError, match="no SpladePooling module"):
        sentemb.load_sparse(str(folder))
    feature = tmp_path / "feature"
    shutil.copytree(models["bert"], feature)
    (feature / "sentence_bert_config.json").write_text(json.dumps({"transformer_task": "feature-extraction"}))
    with pytest.raises(sentemb.UnsupportedModelError, match="'feature-extraction' before SpladePooling"):
        sentemb.load_sparse(str(feature))
    router = tmp_path / "router"
    shutil.copytree(models["router"], router)
    config = json.loads((router / "router_config.json").read_text())
    config["structure"]["query"] = config["structure"]["document"]
    (router / "router_config.json").write_text(json.dumps(config))
    with pytest.raises(sentemb.UnsupportedModelError, match="the query route holds"):
        sentemb.load_sparse(str(router))


def test_a_legacy_mlm_transformer_folder_loads_the_same(models, tmp_path):
    """sentence-transformers 5.0-5.3 saved the transformer as MLMTransformer, without a task in its config."""
    folder = tmp_path / "legacy"
    shutil.copytree(models["distilbert"], folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules[0]["type"] = "sentence_transformers.sparse_encoder.models.MLMTransformer"
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    encoder = sentemb.load_sparse(str(folder), device="cpu")
    assert encoder.describe()["activation"] == "log1p_relu"
    assert_same_vectors(encoder.encode(PARITY_TEXTS), st_vectors(models["distilbert"]))
