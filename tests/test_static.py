"""Static embedding models: the same vectors as sentence-transformers' StaticEmbedding and model2vec's
StaticModel on small random models those libraries save in the test; bad folders; the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import sentemb
from cli_helpers import invoke
from tiny_models import PARITY_TEXTS

VOCAB_TEXTS = [
    *PARITY_TEXTS,
    "Ein Text mit 漢字 und ☃ darin",  # characters the BERT vocabulary lacks: [UNK]
    "Sixteen words of a sentence, repeated until the text is far longer than 512 tokens. " * 40,
    "[UNK] literally, and [MASK] too",
]
# Texts on which the two libraries agree on a model2vec folder (no unknown token, under 512 tokens).
COMMON_TEXTS = [text for text in PARITY_TEXTS if "🙂" not in text and "Ü" not in text]


def _tokenizer():
    from tokenizers import Tokenizer

    from sentemb.models.resolve import bundled_default

    return Tokenizer.from_file(str(bundled_default() / "tokenizer.json"))


@pytest.fixture(scope="module")
def st_static_dir(tmp_path_factory):
    """A random StaticEmbedding, then Dense and Normalize, saved by sentence-transformers."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, StaticEmbedding

    torch.manual_seed(0)
    static = StaticEmbedding(_tokenizer(), embedding_dim=24)
    model = SentenceTransformer(modules=[static, Dense(24, 16), Normalize()], device="cpu")
    folder = tmp_path_factory.mktemp("st-static")
    model.save(str(folder))
    return folder


def _m2v_model(quantised: bool, normalize: bool, seed: int = 0):
    from model2vec import StaticModel

    rng = np.random.default_rng(seed)
    tokenizer = _tokenizer()
    vocab = tokenizer.get_vocab_size()
    if not quantised:
        return StaticModel(rng.standard_normal((vocab, 12)).astype(np.float32), tokenizer, normalize=normalize)
    return StaticModel(
        rng.standard_normal((40, 12)).astype(np.float32),
        tokenizer,
        normalize=normalize,
        token_mapping=rng.integers(0, 40, vocab),
        weights=rng.random(vocab),
    )


@pytest.fixture(scope="module", params=["plain", "quantised"])
def m2v_dir(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"m2v-{request.param}")
    _m2v_model(request.param == "quantised", normalize=request.param == "plain").save_pretrained(folder)
    return folder


def test_sentence_transformers_static_embedding(st_static_dir):
    from sentence_transformers import SentenceTransformer

    want = SentenceTransformer(str(st_static_dir), device="cpu").encode(VOCAB_TEXTS, convert_to_numpy=True)
    encoder = sentemb.load(st_static_dir)
    got = encoder.encode(VOCAB_TEXTS)
    assert got.shape == (len(VOCAB_TEXTS), 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
    facts = encoder.describe()
    assert (facts.backend, facts.model_type, facts.dim, facts.normalize) == ("static", "static", 16, True)
    assert facts.dense == (16,) and facts.device == "cpu" and facts.precision == "fp32"
    assert encoder.plan.backend == "static" and "table lookup" in encoder.plan.why[0]


def test_model2vec_folders(m2v_dir):
    from model2vec import StaticModel

    want = StaticModel.from_pretrained(m2v_dir).encode(VOCAB_TEXTS)
    encoder = sentemb.load(m2v_dir)
    np.testing.assert_allclose(encoder.encode(VOCAB_TEXTS), want, atol=1e-6)
    assert encoder.describe().model_type == "model2vec" and encoder.max_length == 512
    info = encoder.encode_with_info(VOCAB_TEXTS).info
    assert info[len(PARITY_TEXTS) + 1].truncated and not info[0].truncated


def test_model2vec_folders_in_sentence_transformers(m2v_dir):
    """sentence-transformers reads model2vec's folders too (it keeps unknown tokens: compared without them)."""
    from sentence_transformers import SentenceTransformer

    want = SentenceTransformer(str(m2v_dir), device="cpu").encode(COMMON_TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(sentemb.load(m2v_dir).encode(COMMON_TEXTS), want, atol=1e-6)


def test_a_float16_model2vec_table(tmp_path):
    """model2vec averages a float16 table in float16 and returns float16 numbers; sentemb reads the table
    as float32 and averages in float32, so the two agree to float16's precision."""
    from model2vec import StaticModel

    model = _m2v_model(quantised=False, normalize=True, seed=2)
    model.embedding = model.embedding.astype(np.float16)
    model.save_pretrained(tmp_path)
    want = StaticModel.from_pretrained(tmp_path).encode(VOCAB_TEXTS).astype(np.float32)
    np.testing.assert_allclose(sentemb.load(tmp_path).encode(VOCAB_TEXTS), want, atol=2e-3)


def test_model2vec_without_modules_json_and_uncapped(tmp_path):
    from model2vec import StaticModel

    model = _m2v_model(quantised=False, normalize=False, seed=1)
    model.max_length = None
    model.save_pretrained(tmp_path)
    (tmp_path / "modules.json").unlink()
    want = StaticModel.from_pretrained(tmp_path).encode(VOCAB_TEXTS)
    encoder = sentemb.load(tmp_path)
    assert not encoder.normalizes
    # both sum the 800 float32 rows of the long text in float32, in another order: 1e-6 relative apart
    np.testing.assert_allclose(encoder.encode(VOCAB_TEXTS), want, atol=1e-6, rtol=1e-5)


def test_empty_texts_are_zero_and_the_encoder_surface_works(st_static_dir, m2v_dir, tmp_path):
    assert not sentemb.load(m2v_dir).encode(["", "☃"]).any()  # no tokens (or only unknown ones): zeros, not NaN
    encoder = sentemb.load(st_static_dir)
    assert encoder.encode([]).shape == (0, 16)
    queries = encoder.encode_query(["a query"])
    assert encoder.similarity(queries, encoder.encode_document(["a document"])).shape == (1, 1)
    small = sentemb.load(st_static_dir, truncate_dim=8)
    assert small.encode(["hi"]).shape == (1, 8)
    saved = small.save(tmp_path / "saved")
    again = sentemb.load(saved)
    np.testing.assert_allclose(again.encode(VOCAB_TEXTS), small.encode(VOCAB_TEXTS), atol=1e-6)
    from sentence_transformers import SentenceTransformer

    theirs = SentenceTransformer(str(saved), device="cpu").encode(VOCAB_TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(theirs, small.encode(VOCAB_TEXTS), atol=1e-6)


def test_a_saved_model2vec_model_keeps_its_rules(m2v_dir, tmp_path):
    from model2vec import StaticModel

    saved = sentemb.load(m2v_dir).save(tmp_path / "saved")
    want = StaticModel.from_pretrained(m2v_dir).encode(VOCAB_TEXTS)
    np.testing.assert_allclose(StaticModel.from_pretrained(saved).encode(VOCAB_TEXTS), want, atol=1e-6)
    np.testing.assert_allclose(sentemb.load(saved).encode(VOCAB_TEXTS), want, atol=1e-6)


def test_options_that_do_not_apply_are_refused(st_static_dir):
    for options in ({"backend": "onnx"}, {"precision": "int8"}, {"device": "cuda"}):
        with pytest.raises(sentemb.ConfigError, match="static embedding model"):
            sentemb.load(st_static_dir, **options)


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def test_a_missing_tokenizer_is_named(st_static_dir, tmp_path):
    folder = _copy(st_static_dir, tmp_path)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(sentemb.ModelNotFoundError, match=r"copy/tokenizer.json is missing"):
        sentemb.load(folder)


def test_a_tokenizer_that_truncates_from_the_left_is_refused(st_static_dir, tmp_path):
    from tokenizers import Tokenizer

    folder = _copy(st_static_dir, tmp_path)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(64, direction="left")
    tokenizer.save(str(folder / "tokenizer.json"))
    with pytest.raises(sentemb.UnsupportedModelError, match=r"tokenizer.json truncates from the left"):
        sentemb.load(folder)


def test_a_table_that_does_not_fit_the_tokenizer_is_named(m2v_dir, tmp_path):
    from safetensors.numpy import save_file

    folder = _copy(m2v_dir, tmp_path)
    save_file({"embeddings": np.zeros((10, 12), dtype=np.float32)}, str(folder / "model.safetensors"))
    with pytest.raises(sentemb.ModelNotFoundError, match=r"safetensors: 'embeddings' has 10 rows but .*tokenizer"):
        sentemb.load(folder)
    save_file({"other": np.zeros((10, 12), dtype=np.float32)}, str(folder / "model.safetensors"))
    with pytest.raises(sentemb.ModelNotFoundError, match=r"model.safetensors holds \['other'\], not a static table"):
        sentemb.load(folder)


def test_a_module_after_the_table_that_sentemb_does_not_run_is_refused(st_static_dir, tmp_path):
    folder = _copy(st_static_dir, tmp_path)
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(1, {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(sentemb.UnsupportedModelError, match="StaticEmbedding, Dense and Normalize"):
        sentemb.load(folder)


def test_cli_encode_takes_a_static_model(st_static_dir, tmp_path):
    out = tmp_path / "v.npy"
    invoke("encode", "--text", "A man is playing a guitar.", "--text", "", "-m", str(st_static_dir), "-o", str(out))
    np.testing.assert_allclose(np.load(out), sentemb.load(st_static_dir).encode(["A man is playing a guitar.", ""]),
                               atol=1e-6)  # fmt: skip
    refused = invoke("export", str(st_static_dir), str(tmp_path / "exported"), code=2)
    assert "static embedding model: a table lookup with no graph to export" in refused.stderr
    for check in (["--check"], []):
        facts = json.loads(invoke("info", "-m", str(st_static_dir), "--json", *check).output)
        assert (facts["backend"], facts["model_type"], facts["dim"]) == ("static", "static", 16)


def test_the_server_serves_a_static_model(st_static_dir):
    import httpx

    from sentemb.server import ServerSettings, serve_in_background

    encoder = sentemb.load(st_static_dir)
    settings = ServerSettings(port=0, api_key="k", max_inputs=16, queue_size=64, drain_seconds=0)
    with serve_in_background(encoder, settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        auth = {"Authorization": "Bearer k"}
        response = client.post("/v1/embeddings", json={"input": ["a guitar", "two"]}, headers=auth)
        assert response.status_code == 200, response.text
        got = np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, encoder.encode(["a guitar", "two"]), atol=1e-6)


def test_the_batch_job_header_names_what_a_static_model_runs(st_static_dir):
    from sentemb.batch.model import check_worker, describe_job_model
    from sentemb.config import EncoderConfig

    config = EncoderConfig(model=str(st_static_dir))
    header = describe_job_model(config, num_gpus=0)
    assert (header["backend"], header["dim"], header["precision"]) == ("static", 16, "fp32")
    check_worker(sentemb.load(st_static_dir), config, header, num_gpus=0)  # an actor's encoder agrees


def test_the_base_install_runs_a_static_model_without_torch(m2v_dir):
    from test_light_install import run_base

    done = run_base("encode", "-m", str(m2v_dir), "--text", "A man is playing a guitar.", "-o", "-")
    assert done.returncode == 0, done.stderr
    got = np.array([json.loads(line)["embedding"] for line in done.stdout.splitlines()], dtype=np.float32)
    np.testing.assert_allclose(got, sentemb.load(m2v_dir).encode(["A man is playing a guitar."]), atol=1e-6)


def test_a_damaged_table_is_named(m2v_dir, tmp_path):
    folder = _copy(m2v_dir, tmp_path)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(sentemb.ModelNotFoundError, match=r"cannot read .*model.safetensors"):
        sentemb.load(folder)
