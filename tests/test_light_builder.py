"""The torch-free ONNX builder (onnx.helper from safetensors + config.json): the same vectors as torch
for every family it covers, and a one-line refusal naming ``sentemb[torch]`` for the others."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import sentemb
from sentemb.errors import ConfigError
from tiny_models import PARITY_TEXTS


def hide_torch(monkeypatch) -> None:
    """Choose what a base install would (torch is still importable here, but unused): the machine's facts
    and the export's builder both see no torch."""
    import sentemb.extras
    import sentemb.machine

    seen = sentemb.extras.installed
    monkeypatch.setattr(sentemb.machine, "installed", lambda name: name not in ("torch", "transformers") and seen(name))
    monkeypatch.setattr(sentemb.extras, "torch_installed", lambda: False)


@pytest.fixture
def without_torch(monkeypatch):
    """Recipes choose the builder a base install would (torch is still importable here, but unused)."""
    hide_torch(monkeypatch)


@pytest.fixture(scope="module")
def xlmr_dir(tiny_dirs, tmp_path_factory):
    """The tiny RoBERTa, declared as XLM-RoBERTa (the same layer stack under another model type)."""
    folder = tmp_path_factory.mktemp("xlmr") / "xlm-roberta"
    shutil.copytree(tiny_dirs["roberta"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "xlm-roberta"
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta"])
def test_builder_matches_torch_on_tiny_models(family, tiny_dirs, xlmr_dir, tmp_path, monkeypatch):
    folder = xlmr_dir if family == "xlm-roberta" else tiny_dirs[family]
    want = sentemb.load(str(folder), backend="torch", device="cpu").encode(PARITY_TEXTS)
    hide_torch(monkeypatch)
    got = sentemb.load(str(folder), backend="onnx", export_dir=str(tmp_path)).encode(PARITY_TEXTS)
    (manifest,) = tmp_path.glob("onnx/*/manifest.json")
    assert json.loads(manifest.read_text())["recipe"]["builder"] == "onnx.helper"
    assert np.abs(got - want).max() <= 1e-5


@pytest.mark.parametrize("family", ["distilbert", "mpnet", "albert", "bart"])
@pytest.mark.usefixtures("without_torch")
def test_uncovered_family_names_the_torch_extra(family, tiny_dirs, tmp_path):
    with pytest.raises(ConfigError) as caught:
        sentemb.load(str(tiny_dirs[family]), backend="onnx", export_dir=str(tmp_path))
    message = str(caught.value)
    assert "pip install 'sentemb[torch]'" in message
    assert family in message
    assert "\n" not in message


@pytest.mark.usefixtures("without_torch")
def test_default_backend_without_torch_runs_the_installed_runtime(tiny_dirs, tmp_path):
    encoder = sentemb.load(str(tiny_dirs["bert"]), export_dir=str(tmp_path))  # backend: the default (torch)
    assert encoder.backend in ("onnx", "openvino")
    assert encoder.encode(["hello"]).shape == (1, encoder.dim)


@pytest.mark.usefixtures("without_torch")
def test_default_backend_without_torch_refuses_an_uncovered_model_in_one_line(tiny_dirs, tmp_path):
    with pytest.raises(ConfigError, match=r"pip install 'sentemb\[torch\]'$"):
        sentemb.load(str(tiny_dirs["mpnet"]), export_dir=str(tmp_path))


@pytest.mark.slow
def test_builder_matches_torch_on_the_default_model_over_sts_dev(sts_reference, tmp_path, monkeypatch):
    hide_torch(monkeypatch)
    encoder = sentemb.load(backend="onnx", export_dir=str(tmp_path))
    (manifest,) = tmp_path.glob("onnx/*/manifest.json")
    assert json.loads(manifest.read_text())["recipe"]["builder"] == "onnx.helper"
    assert np.abs(encoder.encode(sts_reference.unique) - sts_reference.vectors).max() <= 1e-5
