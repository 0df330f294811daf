"""A folder that ships a graph and no weights (what `sentemb export` writes) runs on what it contains on
the full install too: the default backend (torch, which cannot run a graph) and ``auto`` resolve to a
runtime that can, and an explicit runtime that cannot is a ConfigError naming the one to pass."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import sentemb
from cli_helpers import invoke
from sentemb.backends import BACKEND_ENV
from sentemb.config import Precision
from sentemb.errors import ConfigError
from sentemb.extras import installed, torch_installed
from tiny_models import PARITY_TEXTS


@pytest.fixture(scope="module")
def reference(tiny_dirs):
    return sentemb.load(str(tiny_dirs["bert"]), backend="torch", device="cpu")


@pytest.fixture(scope="module")
def exports(tiny_dirs, tmp_path_factory):
    """The tiny BERT exported for each runtime into a folder of its own (graph, tokenizer, configs; no weights)."""
    from sentemb.export import export_to
    from sentemb.models import read_model_folder

    root = tmp_path_factory.mktemp("exports")
    spec = read_model_folder(tiny_dirs["bert"])
    folders = {"onnx": export_to(spec, Precision.FP32, root / "onnx").folder}
    if installed("openvino"):
        folders["openvino"] = export_to(spec, Precision.FP32, root / "openvino", runtime="openvino").folder
    for folder in folders.values():
        assert not list(folder.glob("*.safetensors"))
    return folders


def test_the_default_backend_runs_an_onnx_export_on_the_full_install(exports, reference):
    assert torch_installed()  # the install where torch is the default backend
    encoder = sentemb.load(str(exports["onnx"]))
    assert encoder.backend in ("onnx", "openvino")
    assert encoder.describe().backend == encoder.backend
    assert "ships a graph and no weights" in encoder.plan.why[0]
    assert np.abs(encoder.encode(PARITY_TEXTS) - reference.encode(PARITY_TEXTS)).max() <= 1e-5


def test_auto_measures_only_the_runtimes_that_run_the_graph(exports, reference, monkeypatch, tmp_path):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    encoder = sentemb.load(str(exports["onnx"]), backend="auto", device="cpu", export_dir=str(tmp_path))
    assert encoder.backend in ("onnx", "openvino")
    if encoder.choice is not None:
        assert "torch" not in encoder.choice.rates and "torch" not in encoder.choice.errors
    assert np.abs(encoder.encode(PARITY_TEXTS) - reference.encode(PARITY_TEXTS)).max() <= 1e-5


def test_an_openvino_export_runs_on_openvino_and_onnx_is_told_what_to_pass(exports, reference):
    if "openvino" not in exports:
        pytest.skip("OpenVINO is not installed")
    encoder = sentemb.load(str(exports["openvino"]))
    assert encoder.backend == "openvino"
    assert np.abs(encoder.encode(PARITY_TEXTS) - reference.encode(PARITY_TEXTS)).max() <= 1e-5
    with pytest.raises(ConfigError, match=r"OpenVINO graph and no weights.*pass backend='openvino'"):
        sentemb.load(str(exports["openvino"]), backend="onnx")


def test_the_command_export_prints_runs_as_printed(tiny_dirs, reference, tmp_path):
    out = tmp_path / "tiny-onnx"
    summary = invoke("export", str(tiny_dirs["bert"]), str(out)).output
    command = re.search(r"`sentemb (encode -m \S+)` runs it", summary)
    assert command is not None, summary
    args = [a for text in PARITY_TEXTS for a in ("--text", text)]
    done = invoke(*command.group(1).split(), *args, "-o", "-")
    got = np.array([json.loads(line)["embedding"] for line in done.stdout.splitlines()], dtype=np.float32)
    assert np.abs(got - reference.encode(PARITY_TEXTS)).max() <= 1e-5
    info = json.loads(invoke("info", "--json", "-m", str(out)).stdout)
    assert info["backend"] in ("onnx", "openvino")


def test_an_openvino_export_with_backend_onnx_is_one_usage_error_line(exports):
    if "openvino" not in exports:
        pytest.skip("OpenVINO is not installed")
    done = invoke("encode", "-m", str(exports["openvino"]), "--backend", "onnx", "--text", "hi", "-o", "-", code=2)
    assert "--backend openvino" in done.stderr


def test_a_library_message_that_starts_with_error_is_not_prefixed_twice(monkeypatch):
    def fail(**_: object) -> None:
        raise OSError("Error no file named model.safetensors found in directory x.")

    monkeypatch.setattr("sentemb.cli.encode.load_encoder", fail)
    done = invoke("encode", "--text", "hi", "-o", "-", code=1)
    assert done.stderr.strip() == "Error: no file named model.safetensors found in directory x."
