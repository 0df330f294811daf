"""Every hint the CLI prints is true: help examples, suggestions, model-not-found, exports, -q, speed paths."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import click
import numpy as np
import pytest

import sentemb
from cli_helpers import cached_loads, invoke
from sentemb.cli import main

COMMANDS = [["encode"], ["similarity"], ["search"], ["eval", "sts"], ["info"], ["export"], ["serve"], ["batch"]]


def command(path: list[str]) -> click.Command:
    context = click.Context(main)
    found: click.Command | None = main
    for name in path:
        assert isinstance(found, click.Group)
        found = found.get_command(context, name)
    assert found is not None
    return found


@pytest.mark.parametrize("path", [["similarity"], ["search"]], ids=" ".join)
def test_format_values_in_help_examples_are_accepted(path):
    choices = next(p.type.choices for p in command(path).params if p.name == "fmt")
    shown = re.findall(r"--format (\w+)", invoke(*path, "--help").stdout)
    assert shown, "the examples show --format"
    assert set(shown) <= set(choices)


def test_q_means_quiet_wherever_it_exists():
    for path in COMMANDS:
        for param in command(path).params:
            if "-q" in getattr(param, "opts", []):
                assert param.name == "quiet", f"sentemb {' '.join(path)}: -q is --{param.name}"
    assert "No such option '-q'" in invoke("search", "x", "-q", "f.txt", "--corpus", "c.txt", code=2).stderr


def test_a_mistyped_command_gets_a_suggestion():
    assert "Did you mean 'encode'?" in invoke("encod", "x", code=2).stderr
    assert "Did you mean" not in invoke("zzzzzz", code=2).stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [(["similarity", "--file", "{docs}"], False), (["search", "q", "--corpus", "{docs}"], False),
     (["encode", "{docs}", "-o", "{tmp}/v.jsonl"], True)],
    ids=["similarity", "search", "encode"],
)
def test_unknown_input_extension_suggests_only_options_the_command_has(tmp_path, args, option):
    docs = tmp_path / "docs.json"
    docs.write_text('[{"text": "a"}]')
    result = invoke(*[a.format(tmp=tmp_path, docs=docs) for a in args], code=1)
    assert "docs.json" in result.stderr
    assert ".jsonl" in result.stderr
    assert ("--input-format" in result.stderr) is option


def test_model_not_found_suggests_the_owner_prefix_in_plain_words():
    message = invoke("info", "all-MiniLM-L12-v2", code=3).stderr
    assert "did you mean 'sentence-transformers/all-MiniLM-L12-v2'" in message
    assert "hf download sentence-transformers/all-MiniLM-L12-v2" in message
    assert "or or" not in message
    assert "Error" not in message.removeprefix("Error:")  # no exception class names (LocalEntryNotFoundError)
    owned = invoke("info", "someone/no-such-model", code=3).stderr
    assert "did you mean" not in owned
    assert "hf download someone/no-such-model" in owned


def test_an_exported_folder_as_model_says_how_to_use_it(tmp_path):
    folder = tmp_path / "minilm-onnx"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"graph")
    (folder / "tokenizer.json").write_text("{}")
    inputs = {"precision": "fp32", "model_type": "bert"}
    (folder / "manifest.json").write_text(json.dumps({"runtime": "onnx", "inputs": inputs, "sha256": {}}))
    message = invoke("info", str(folder), code=3).stderr
    assert "is a bare export" in message  # a graph without the model's configs
    assert "sentemb export MODEL OUT --force" in message
    assert "onnx fp32, a bert model" in message


def test_export_message_names_every_model_file_with_its_size(tmp_path):
    from sentemb.cli.export import export_summary

    (tmp_path / "model.xml").write_bytes(b"x" * 2**19)
    (tmp_path / "model.bin").write_bytes(b"x" * 3 * 2**20)
    line = export_summary(tmp_path, "openvino", "fp32")
    assert "model.xml (0.5 MB)" in line
    assert "model.bin (3.0 MB)" in line


@pytest.mark.usefixtures(cached_loads.__name__)
def test_heatmap_and_plot_say_where_they_went_with_titles(tmp_path, monkeypatch, sts_dev_path):
    from sentemb.cli import evaluate, similarity

    figures = []
    monkeypatch.setattr(similarity, "save_figure", lambda figure, path, force: figures.append(figure))
    monkeypatch.setattr(evaluate, "save_figure", lambda figure, path, force: figures.append(figure))
    texts = ["A cat sits.", "A kitten sits.", "Stocks fell."]
    result = invoke("similarity", *texts, "--heatmap", str(tmp_path / "h.png"))
    assert f"wrote the heatmap to {tmp_path / 'h.png'}" in result.stderr
    axes = figures[0].axes[0]
    assert "all-MiniLM-L6-v2" in axes.get_title()
    diagonal = [t for t in axes.texts if t.get_text() == "1.00"]
    assert len(diagonal) == 3
    assert all(t.get_color() == "black" for t in diagonal)  # dark text on viridis' light top
    small = tmp_path / "sts.csv"
    small.write_text("".join(sts_dev_path.read_text(encoding="utf-8").splitlines(keepends=True)[:20]))
    result = invoke("eval", "sts", str(small), "--plot", str(tmp_path / "p.png"))
    assert f"wrote the plot to {tmp_path / 'p.png'}" in result.stderr
    assert "sentence-transformers/all-MiniLM-L6-v2" in figures[1].axes[0].get_title()


def test_demo_table_aligns_negative_scores():
    from sentemb.demo import table

    lines = table(["first", "second one"], np.array([[1.0, -0.0123], [-0.0123, 1.0]])).splitlines()
    assert len({len(line) for line in lines[1:]}) == 1
    columns = [[m.end() for m in re.finditer(r"-?\d\.\d{4}", line)] for line in lines[1:]]
    assert columns[0] == columns[1]  # the numbers end at the same column on every row


def test_info_reads_the_folder_without_a_backend(monkeypatch, default_encoder):
    def no_backend(*args, **kwargs):
        raise AssertionError("info --json loaded a backend")

    monkeypatch.setattr(sentemb, "load", no_backend)
    facts = json.loads(invoke("info", "--json").stdout)
    described = default_encoder.describe().to_dict()
    assert facts["checked"] is False
    for key in ("dim", "pooling", "normalize", "max_length", "model_type", "sha256", "backend", "precision"):
        assert facts[key] == described[key], key


def test_info_in_a_fresh_process_imports_no_torch():
    code = ("import sys\nfrom sentemb.cli import main\ntry:\n    main(['info', '--json'])\nexcept SystemExit:\n"
            "    pass\nprint('TORCH', 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert '"dim": 384' in out
    assert "TORCH False" in out


def test_info_check_loads_the_backend(monkeypatch):
    seen = []
    real = sentemb.load

    def spy(*args, **kwargs):
        seen.append(kwargs["config"].backend)
        return real(*args, **kwargs)

    monkeypatch.setattr(sentemb, "load", spy)
    assert json.loads(invoke("info", "--json", "--check").stdout)["checked"] is True
    assert seen == ["torch"]


def test_similarity_starts_on_a_cached_exact_export_unless_a_backend_is_pinned(tiny_dirs, monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    from sentemb.models.resolve import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # its own cache: other tests export the same model
    folder = str(tiny_dirs["bert"])
    seen = []
    real = sentemb.load

    def spy(*args, **kwargs):
        seen.append(kwargs["config"].backend)
        return real(*args, **kwargs)

    monkeypatch.setattr(sentemb, "load", spy)
    pair = ["a small red car", "the stock market fell"]
    before = float(invoke("similarity", *pair, "-m", folder).stdout)  # no export cached yet: torch
    real(folder, backend="onnx", device="cpu")  # what `sentemb export` or a --backend onnx run leaves
    after = float(invoke("similarity", *pair, "-m", folder).stdout)
    pinned = float(invoke("similarity", *pair, "-m", folder, "--backend", "torch").stdout)
    assert seen == ["torch", "onnx", "torch"]
    assert after == pytest.approx(before, abs=1e-4) and pinned == before  # printed to 4 decimals
    torch_vectors = real(folder, backend="torch", device="cpu").encode(pair)
    onnx_vectors = real(folder, backend="onnx", device="cpu").encode(pair)
    assert np.abs(torch_vectors - onnx_vectors).max() <= 1e-6
