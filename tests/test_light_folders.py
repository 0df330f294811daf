"""Folders that ship their graph load without torch or weights: the hub layout sentence-transformers'
ONNX / OpenVINO backends save (``onnx/model.onnx`` and variants, ``openvino/openvino_model.xml``) and
folders ``sentemb export`` writes (graph, tokenizer, manifest, pooling, Dense, normalise, prompts).

optimum (which sentence-transformers' ``backend="onnx"`` needs) would downgrade transformers in the
test venv, so the hub layout is written here the way it names things: torch.onnx's padded graph with
inputs input_ids / attention_mask / token_type_ids and output last_hidden_state."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

import sentemb
from sentemb.config import Precision
from sentemb.errors import ModelNotFoundError
from st_shapes import SHAPES, build_st_folder
from test_light_install import CLI, ROOT, base_env
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
    done = subprocess.run([*CLI, "export", str(source), str(tmp_path / "out")], env=base_env(), cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    shutil.rmtree(source)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["recipe"]["builder"] == "onnx.helper"
    assert "model.safetensors" in manifest["recipe"]["files"]  # the source model's sha256
    args = [a for text in PARITY_TEXTS for a in ("--text", text)]
    done = subprocess.run([*CLI, "encode", "-m", str(tmp_path / "out"), "--prompt-name", "query", *args, "-o", "-"],
                          env=base_env(), cwd=ROOT, capture_output=True, text=True, check=False)  # fmt: skip
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
