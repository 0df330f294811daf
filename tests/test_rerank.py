"""Cross-encoders: the same scores as sentence-transformers' CrossEncoder.predict on tiny random models it
saves, on every backend; rank(); what is refused and how."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sentemb
from tiny_models import CROSS_ENCODERS, build_tiny_cross_encoder

pytest.importorskip("sentence_transformers")

PAIRS = [
    ("what is the capital of France?", "Paris is the capital and most populous city of France."),
    ("", "an empty query"),
    ("short", "The quick brown fox jumps over the lazy dog near the river bank. " * 10),  # cut at 64 tokens
    ("a much longer query that goes on and on " * 8, "short doc"),  # cut from the query's side
    ("Ünïcödé query 🙂", "Two sentences. The second one is a little longer than the first one."),
]
BACKENDS = ["torch", "onnx", "openvino"]


def st_scores(folder, **kwargs):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(folder), device="cpu").predict(PAIRS, **kwargs)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny cross-encoders: every family with one label; NLI-style three labels; each activation setting."""
    root = tmp_path_factory.mktemp("cross-encoders")
    built = {family: build_tiny_cross_encoder(family, root / family) for family in CROSS_ENCODERS}
    built["nli"] = build_tiny_cross_encoder("bert", root / "nli", labels=3, seed=1)
    built["ms-marco"] = build_tiny_cross_encoder("bert", root / "msmarco", activation="identity", seed=2)
    built["tanh"] = build_tiny_cross_encoder("bert", root / "tanh", activation="tanh", seed=3)
    built["st4"] = build_tiny_cross_encoder("roberta", root / "st4", layout="st4", activation="identity", seed=4)
    built["plain"] = build_tiny_cross_encoder("distilbert", root / "plain", layout="hf", seed=5)
    return built


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", [*CROSS_ENCODERS, "nli", "ms-marco", "tanh", "st4", "plain"])
def test_scores_equal_sentence_transformers(onnx_cache, models, name, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    reranker = sentemb.load_reranker(str(models[name]), backend=backend, device="cpu")
    ours = reranker.predict(PAIRS)
    reference = st_scores(models[name])
    assert ours.dtype == np.float32 and ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)


def test_activation_follows_sentence_transformers_and_can_be_overridden(models):
    assert sentemb.load_reranker(str(models["bert"]), device="cpu").activation == "sigmoid"  # one label
    assert sentemb.load_reranker(str(models["ms-marco"]), device="cpu").activation == "identity"  # saved
    assert sentemb.load_reranker(str(models["st4"]), device="cpu").activation == "identity"  # config.json
    assert sentemb.load_reranker(str(models["plain"]), device="cpu").activation == "sigmoid"  # none at all
    nli = sentemb.load_reranker(str(models["nli"]), device="cpu")
    assert nli.activation == "identity" and nli.labels == 3
    np.testing.assert_allclose(nli.predict(PAIRS, apply_softmax=True), st_scores(models["nli"], apply_softmax=True),
                               atol=1e-6)  # fmt: skip
    assert np.allclose(nli.predict(PAIRS, apply_softmax=True).sum(axis=1), 1.0, atol=1e-6)
    import torch

    raw = sentemb.load_reranker(str(models["bert"]), device="cpu", activation="identity").predict(PAIRS)
    np.testing.assert_allclose(raw, st_scores(models["bert"], activation_fn=torch.nn.Identity()), atol=1e-6)
    tanh = sentemb.load_reranker(str(models["bert"]), device="cpu").predict(PAIRS, activation="tanh")
    np.testing.assert_allclose(tanh, np.tanh(raw), atol=1e-6)


def test_long_pairs_are_cut_longest_first_and_reported(models):
    reranker = sentemb.load_reranker(str(models["bert"]), device="cpu")
    result = reranker.predict_with_info(PAIRS)
    assert [info.truncated for info in result.info] == [False, False, True, True, False]
    assert result.info[2].num_tokens > reranker.max_length
    np.testing.assert_array_equal(result.scores, reranker.predict(PAIRS))


def test_rank_is_best_first_like_sentence_transformers(models):
    from sentence_transformers import CrossEncoder

    query, documents = "capital of France", [doc for _, doc in PAIRS]
    reranker = sentemb.load_reranker(str(models["ms-marco"]), device="cpu")
    hits = reranker.rank(query, documents, return_documents=True)
    theirs = CrossEncoder(str(models["ms-marco"]), device="cpu").rank(query, documents)
    assert [hit.corpus_id for hit in hits] == [int(hit["corpus_id"]) for hit in theirs]
    np.testing.assert_allclose([hit.score for hit in hits], [float(hit["score"]) for hit in theirs], atol=1e-6)
    assert all(hit.text == documents[hit.corpus_id] for hit in hits)
    top = reranker.rank(query, documents, top_k=2)
    assert [hit.corpus_id for hit in top] == [hit.corpus_id for hit in hits[:2]] and top[0].text is None
    with pytest.raises(sentemb.ConfigError, match="one-label"):
        sentemb.load_reranker(str(models["nli"]), device="cpu").rank(query, documents)


def test_inputs_are_checked_and_named(models):
    reranker = sentemb.load_reranker(str(models["bert"]), device="cpu")
    assert reranker.predict([]).shape == (0,)
    with pytest.raises(sentemb.InvalidInputError, match=r"pairs\[1\] is not a \(query, document\) pair"):
        reranker.predict([("a", "b"), ("only one",)])
    with pytest.raises(sentemb.InvalidInputError, match=r"pairs\[0\]\[1\] is int"):
        reranker.predict([("a", 3)])
    with pytest.raises(sentemb.InvalidTextError, match=r"pairs\[0\]\[0\] is not valid Unicode"):
        reranker.predict([("bad \ud800", "b")])
    with pytest.raises(sentemb.ConfigError, match="activation='softplus'"):
        reranker.predict(PAIRS, activation="softplus")


def test_each_kind_is_refused_by_the_other_loader(models, tiny_dirs):
    with pytest.raises(sentemb.UnsupportedModelError, match="load_reranker"):
        sentemb.load(str(models["bert"]))
    with pytest.raises(sentemb.UnsupportedModelError, match=r"sentemb.load\(\)"):
        sentemb.load_reranker(str(tiny_dirs["bert"]))
    with pytest.raises(sentemb.ConfigError, match="pooling= is an embedding model's option"):
        sentemb.load_reranker(str(models["bert"]), pooling="cls")


def test_an_activation_sentemb_cannot_run_is_refused(models, tmp_path):
    import shutil

    folder = tmp_path / "custom"
    shutil.copytree(models["bert"], folder)
    path = folder / "config_sentence_transformers.json"
    config = json.loads(path.read_text())
    config["activation_fn"] = "torch.nn.modules.activation.Softplus"
    path.write_text(json.dumps(config))
    with pytest.raises(sentemb.UnsupportedModelError, match="Softplus"):
        sentemb.load_reranker(str(folder))
    assert sentemb.load_reranker(str(folder), activation="sigmoid").activation == "sigmoid"


def test_int8_without_rescoring_says_what_it_costs(onnx_cache, models, caplog):
    from sentemb.rerank import INT8_CAVEAT

    fp32 = sentemb.load_reranker(str(models["ms-marco"]), backend="onnx", device="cpu").predict(PAIRS)
    with caplog.at_level("WARNING", logger="sentemb"):
        int8 = sentemb.load_reranker(str(models["ms-marco"]), backend="onnx", precision="int8", device="cpu")
    assert int8.plan.precision == "int8" and int8.rescorer is None
    assert INT8_CAVEAT in int8.plan.why and INT8_CAVEAT in caplog.text  # the plan and the log say it
    np.testing.assert_allclose(int8.predict(PAIRS), fp32, atol=0.05)


RANKED = [f"{w} {v} the river bank near the old mill, said the {n}." for w in ("Fishing", "Walking", "Sleeping")
          for v in ("along", "beside", "under", "past") for n in ("miller", "baker", "child", "dog")]  # fmt: skip


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_int8_rank_rescores_its_top_candidates_in_fp32(onnx_cache, models, backend):
    if backend == "openvino":
        pytest.importorskip("nncf")
    folder, query = str(models["ms-marco"]), "who walked along the river?"
    fp32 = sentemb.load_reranker(folder, backend=backend, device="cpu")
    int8 = sentemb.load_reranker(folder, backend=backend, precision="int8", device="cpu", rescore=True)
    rescorer = int8.rescorer
    assert rescorer is not None and rescorer.exact.config.precision.value == "fp32" and rescorer.margin > 0
    assert int8.describe()["rescore"]["margin"] == round(rescorer.margin, 6) and "re-scores" in int8.plan.why[-1]
    logits = int8.predict([(query, d) for d in RANKED])
    assert not np.array_equal(logits, fp32.predict([(query, d) for d in RANKED]))  # int8 scores differ
    assert len(rescorer.band(logits, 5)) >= 5
    for top_k in (1, 5, None):
        exact = fp32.rank(query, RANKED, top_k=top_k)
        assert [h.corpus_id for h in int8.rank(query, RANKED, top_k=top_k)] == [h.corpus_id for h in exact]
        np.testing.assert_allclose([h.score for h in int8.rank(query, RANKED, top_k=top_k)],
                                   [h.score for h in exact], atol=1e-6)  # fmt: skip
    with pytest.raises(sentemb.ConfigError, match="rescore=True re-scores int8"):
        sentemb.load_reranker(folder, backend=backend, rescore=True)
    with pytest.raises(sentemb.ConfigError, match="one-label"):
        sentemb.load_reranker(str(models["nli"]), backend=backend, precision="int8", rescore=True)


def test_the_rescored_band_is_the_top_k_and_whatever_lies_within_the_margin_of_the_kth():
    from sentemb.rerank import Rescorer

    band = Rescorer(exact=None, margin=0.1, calibration_pairs=0).band  # type: ignore[arg-type]
    logits = np.array([0.5, 3.0, 2.95, 2.0, 2.86, 2.84, -1.0], dtype=np.float32)
    assert band(logits, 1).tolist() == [1, 2]  # the best, and 2.95 within 0.1 of it
    assert band(logits, 2).tolist() == [1, 2, 4]  # the 2nd best is 2.95: 2.86 could overtake it
    assert band(logits, 3).tolist() == [1, 2, 4, 5]
    assert band(logits, 7).tolist() == band(logits, None).tolist() == list(range(7))


def test_the_plan_and_facts_say_what_runs(onnx_cache, models):
    reranker = sentemb.load_reranker(str(models["bert"]), backend="onnx", device="cpu")
    facts = reranker.describe()
    assert facts["kind"] == "rerank" == reranker.plan.kind and facts["labels"] == 1
    assert facts["plan"]["backend"] == "onnx" and facts["plan"]["graph"].endswith("model.onnx")
    assert set(facts["sha256"]) == {"model.safetensors"}


DOCS = ["Paris is the capital of France.", "Berlin is the capital of Germany.", "Cats sleep a lot.",
        "The Eiffel Tower is in Paris.", "Bread needs flour, water and yeast."]  # fmt: skip


@pytest.mark.parametrize("int8", [(), ("--backend", "onnx", "--precision", "int8", "--rescore")])
def test_the_rerank_command_prints_the_libraries_ranking(onnx_cache, models, tmp_path, int8):
    from cli_helpers import invoke

    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(DOCS) + "\n")
    out = invoke("rerank", "capital of France", "--docs", str(docs), "-m", str(models["ms-marco"]), "-k", "3",
                 "--device", "cpu", "--format", "jsonl", *int8).stdout  # fmt: skip
    rows = [json.loads(line) for line in out.splitlines()]
    hits = sentemb.load_reranker(str(models["ms-marco"]), device="cpu").rank("capital of France", DOCS, top_k=3)
    assert [row["id"] for row in rows] == [hit.corpus_id for hit in hits]
    np.testing.assert_allclose([row["score"] for row in rows], [hit.score for hit in hits], atol=1e-6)
    assert [row["text"] for row in rows] == [DOCS[hit.corpus_id] for hit in hits] and rows[0]["rank"] == 1


def test_search_then_rerank_prints_both_scores(models, tmp_path):
    from cli_helpers import invoke

    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(DOCS) + "\n")
    out = invoke("search", "capital of France", "--corpus", str(docs), "-k", "2", "--rerank", str(models["ms-marco"]),
                 "--rerank-candidates", "4", "--device", "cpu", "--format", "jsonl").stdout  # fmt: skip
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2 and {"score", "retrieval_score", "text"} <= set(rows[0])
    candidates = sentemb.semantic_search(sentemb.load(device="cpu").encode("capital of France"),
                                         sentemb.load(device="cpu").encode(DOCS), top_k=4)[0]  # fmt: skip
    texts = [DOCS[hit.corpus_id] for hit in candidates]
    best = sentemb.load_reranker(str(models["ms-marco"]), device="cpu").rank("capital of France", texts, top_k=2)
    assert [row["text"] for row in rows] == [texts[hit.corpus_id] for hit in best]
    by_text = {DOCS[hit.corpus_id]: hit.score for hit in candidates}
    np.testing.assert_allclose([row["retrieval_score"] for row in rows], [by_text[row["text"]] for row in rows],
                               atol=1e-5)  # fmt: skip


def test_rerank_command_errors_are_one_line(models, tiny_dirs, tmp_path):
    from cli_helpers import invoke

    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(DOCS) + "\n")
    assert "-m/--model" in invoke("rerank", "q", "--docs", str(docs), code=2).stderr
    assert "load()" in invoke("rerank", "q", "--docs", str(docs), "-m", str(tiny_dirs["bert"]), code=3).stderr
    without_corpus = invoke("search", "q", "--embeddings", str(docs), "--rerank", str(models["bert"]), code=2)
    assert "--corpus" in without_corpus.stderr
    assert "no such" in invoke("rerank", "q", "--docs", str(tmp_path / "missing.txt"), "-m", str(models["bert"]),
                               code=1).stderr.lower()  # fmt: skip


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_an_exported_reranker_loads_on_its_own(onnx_cache, models, tmp_path, runtime):
    from cli_helpers import invoke

    if runtime == "openvino":
        pytest.importorskip("openvino")
    out = tmp_path / "exported"
    printed = invoke("export", str(models["ms-marco"]), str(out), "--runtime", runtime).stdout
    assert f"sentemb rerank QUERY --docs FILE -m {out}" in printed
    assert not list(out.glob("*.safetensors"))
    for backend in (runtime, "torch"):  # the default (torch) runs the graph on a runtime that can
        exported = sentemb.load_reranker(str(out), device="cpu", backend=backend)
        assert exported.backend in ("onnx", "openvino") and exported.activation == "identity"
        np.testing.assert_allclose(exported.predict(PAIRS), st_scores(models["ms-marco"]), atol=1e-5)
