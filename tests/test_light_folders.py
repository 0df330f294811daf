"""Folders that ship their graph load without torch or weights: the hub layout sentence-transformers'
ONNX / OpenVINO backends save (``onnx/model.onnx`` and variants, ``openvino/openvino_model.xml``) and
folders ``sentemb export`` writes (graph, tokenizer, manifest, pooling, Dense, normalise, prompts).

optimum (which sentence-transformers' ``backend="onnx"`` needs) would downgrade transformers in the
test venv, so the hub layout is written here the way it names things: torch.onnx's padded graph with
inputs input_ids / attention_mask / token_type_ids and output last_hidden_state."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import sentemb
from sentemb.config import Precision
from sentemb.errors import ModelNotFoundError
from st_shapes import SHAPES, build_st_folder
from test_light_install import run_base
from tiny_models import PARITY_TEXTS

VARIANT = "model_qint8_avx512_vnni.onnx"


@pytest.fixture(scope="module")
def st_folder(tiny_dirs, tmp_path_factory):
    """A sentence-transformers folder with a Dense head, normalisation and prompts."""
    return build_st_folder(tiny_dirs["bert"], SHAPES["dense+normalize"], tmp_path_factory.mktemp("st") / "model")


@pytest.fixture(scope="module")
def hub_folder(st_folder, tmp_path_factory):
    """``st_folder`` as a hub repository with ONNX and OpenVINO files and no model.safetensors."""
    import openvino as ov

    from sentemb.export.onnx_graph import quantize_dynamic
    from sentemb.export.recipe import recipe_for
    from sentemb.export.torch_onnx import export_torch
    from sentemb.models import read_model_folder

    folder = tmp_path_factory.mktemp("hub") / "repo"
    shutil.copytree(st_folder, folder)
    spec = read_model_folder(folder)
    (folder / "onnx").mkdir()
    export_torch(spec, recipe_for(spec, Precision.FP32), folder / "onnx" / "model.onnx", True, False)
    quantize_dynamic(folder / "onnx" / "model.onnx", folder / "onnx" / VARIANT)
    (folder / "openvino").mkdir()
    ir = ov.convert_model(folder / "onnx" / "model.onnx")
    ov.save_model(ir, folder / "openvino" / "openvino_model.xml", compress_to_fp16=False)  # fp32, as optimum saves
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    return folder


@pytest.fixture(scope="module")
def reference(st_folder):
    return sentemb.load(str(st_folder), backend="torch", device="cpu")


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_hub_graphs_load_with_the_folders_pooling_dense_and_normalise(backend, hub_folder, reference):
    encoder = sentemb.load(str(hub_folder), backend=backend)
    got = encoder.encode(PARITY_TEXTS)
    assert got.shape == (len(PARITY_TEXTS), 16)  # the Dense head's width
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.abs(got - reference.encode(PARITY_TEXTS)).max() <= 1e-5


def test_file_name_picks_a_variant(hub_folder, reference):
    exact = sentemb.load(str(hub_folder), backend="onnx").encode(PARITY_TEXTS)
    int8 = sentemb.load(str(hub_folder), backend="onnx", file_name=VARIANT).encode(PARITY_TEXTS)
    assert np.abs(int8 - exact).max() > 1e-6  # the quantised graph ran, not model.onnx
    assert float(np.mean(np.sum(int8 * exact, axis=1))) > 0.9


def test_a_missing_file_name_lists_what_the_folder_ships(hub_folder):
    with pytest.raises(ModelNotFoundError, match=r"onnx/model\.onnx.*openvino/openvino_model\.xml"):
        sentemb.load(str(hub_folder), backend="onnx", file_name="model_O4.onnx")


def test_an_export_loads_on_the_base_install_without_the_source_model(st_folder, tmp_path, reference):
    source = tmp_path / "source"
    shutil.copytree(st_folder, source)
    done = run_base("export", str(source), str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    shutil.rmtree(source)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["recipe"]["builder"] == "onnx.helper"
    assert "model.safetensors" in manifest["recipe"]["files"]  # the source model's sha256
    args = [a for text in PARITY_TEXTS for a in ("--text", text)]
    done = run_base("encode", "-m", str(tmp_path / "out"), "--prompt-name", "query", *args, "-o", "-")
    assert done.returncode == 0, done.stderr
    got = np.array([json.loads(line)["embedding"] for line in done.stdout.splitlines()], dtype=np.float32)
    want = reference.encode(PARITY_TEXTS, prompt_name="query")
    assert np.abs(got - want).max() <= 1e-5


def test_a_damaged_export_is_refused(st_folder, tmp_path):
    from sentemb.export import export_to
    from sentemb.models import read_model_folder

    export_to(read_model_folder(st_folder), Precision.FP32, tmp_path / "out")
    with (tmp_path / "out" / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelNotFoundError, match="do not match its manifest"):
        sentemb.load(str(tmp_path / "out"), backend="onnx")


# --- hub repositories: sentemb.load("org/name", backend="onnx" | "openvino") fetches the graph it runs ---

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_repo(hub_folder, st_folder, tmp_path_factory):
    """What the hub holds for such a repository: the weights and the onnx/ and openvino/ graphs."""
    repo = tmp_path_factory.mktemp("hub-repo") / "repo"
    shutil.copytree(hub_folder, repo)
    for weights in st_folder.glob("*.safetensors"):
        shutil.copyfile(weights, repo / weights.name)
    return repo


class FakeHub:
    """``huggingface_hub.snapshot_download`` over a local folder: it copies the files ``allow_patterns``
    select into a hub cache laid out as the hub's (snapshots/<commit>), and records each call."""

    def __init__(self, repo: Path) -> None:
        self.repo, self.calls = repo, []

    def __call__(self, repo_id, *, revision=None, cache_dir=None, allow_patterns=None, local_files_only=False):
        from huggingface_hub.errors import LocalEntryNotFoundError
        from huggingface_hub.utils import filter_repo_objects

        self.calls.append((local_files_only, list(allow_patterns)))
        snapshot = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / COMMIT
        if local_files_only:
            if not snapshot.is_dir():
                raise LocalEntryNotFoundError(f"{repo_id} is not in the cache")
            return str(snapshot)
        files = [str(p.relative_to(self.repo)) for p in self.repo.rglob("*") if p.is_file()]
        for name in filter_repo_objects(files, allow_patterns=allow_patterns):
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.repo / name, snapshot / name)
        snapshot.mkdir(parents=True, exist_ok=True)
        refs = snapshot.parents[1] / "refs"
        refs.mkdir(exist_ok=True)
        (refs / "main").write_text(COMMIT)
        return str(snapshot)

    def fetched(self, cache: Path) -> set[str]:
        (snapshot,) = cache.glob("models--*/snapshots/*")
        return {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()}


@pytest.fixture
def fake_hub(hub_repo, monkeypatch):
    import huggingface_hub

    hub = FakeHub(hub_repo)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    monkeypatch.delenv("HF_HUB_OFFLINE")  # "online": the fake hub is the only one asked
    return hub


@pytest.mark.parametrize(
    ("backend", "file_name", "graph", "side"),
    [("onnx", None, "onnx/model.onnx", None),
     ("openvino", None, "openvino/openvino_model.xml", "openvino/openvino_model.bin"),
     ("onnx", VARIANT, f"onnx/{VARIANT}", None)],
)  # fmt: skip
def test_a_hub_repo_fetches_the_graph_it_runs_not_the_weights(backend, file_name, graph, side, fake_hub, tmp_path,
                                                               reference):  # fmt: skip
    encoder = sentemb.load("acme/tiny", backend=backend, file_name=file_name, cache_dir=str(tmp_path))
    fetched = fake_hub.fetched(tmp_path)
    assert {graph, side} - {None} <= fetched
    assert not {n for n in fetched if n.endswith((".onnx", ".xml"))} - {graph}  # only the graph it runs
    assert "model.safetensors" not in fetched
    assert {"tokenizer.json", "modules.json", "1_Pooling/config.json", "2_Dense/model.safetensors"} <= fetched
    got = encoder.encode(PARITY_TEXTS)
    if file_name is None:
        assert np.abs(got - reference.encode(PARITY_TEXTS)).max() <= 1e-5
    else:
        assert float(np.mean(np.sum(got * reference.encode(PARITY_TEXTS), axis=1))) > 0.9


def test_a_cached_snapshot_without_the_graph_fetches_it(fake_hub, tmp_path):
    sentemb.load("acme/tiny", backend="torch", cache_dir=str(tmp_path))  # the weights only, as before
    assert not {n for n in fake_hub.fetched(tmp_path) if n.startswith("onnx/")}
    sentemb.load("acme/tiny", backend="onnx", cache_dir=str(tmp_path))
    assert "onnx/model.onnx" in fake_hub.fetched(tmp_path)
    assert [local for local, _ in fake_hub.calls] == [True, False, True, False]


def test_a_hub_repo_without_graphs_falls_back_to_the_weights(fake_hub, tmp_path, st_folder, reference):
    fake_hub.repo = st_folder
    encoder = sentemb.load("acme/tiny", backend="onnx", cache_dir=str(tmp_path))
    assert "model.safetensors" in fake_hub.fetched(tmp_path)
    assert np.abs(encoder.encode(PARITY_TEXTS) - reference.encode(PARITY_TEXTS)).max() <= 1e-5


def test_the_base_install_runs_a_hub_repos_onnx_offline(hub_repo, tmp_path, reference):
    """A hub cache holding what the base install fetches (no model.safetensors), HF_HUB_OFFLINE=1, no torch."""
    from sentemb.models.prebuilt import hub_graphs
    from sentemb.models.resolve import GRAPH_PATTERNS

    hub = FakeHub(hub_repo)
    hub("acme/tiny", cache_dir=str(tmp_path), allow_patterns=[*GRAPH_PATTERNS, *hub_graphs("onnx")[0]])
    assert "model.safetensors" not in hub.fetched(tmp_path)
    args = [a for text in PARITY_TEXTS for a in ("--text", text)]
    done = run_base("encode", "-m", "acme/tiny", "--cache-dir", str(tmp_path), *args, "-o", "-")
    assert done.returncode == 0, done.stderr
    got = np.array([json.loads(line)["embedding"] for line in done.stdout.splitlines()], dtype=np.float32)
    assert np.abs(got - reference.encode(PARITY_TEXTS)).max() <= 1e-5
