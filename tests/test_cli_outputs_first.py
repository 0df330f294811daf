"""Every output of a command (the table, the plot, the heatmap) and the optional dependencies that write
them are checked before any work: a problem is one line and an exit code, with nothing written and
nothing computed, so the rerun does not trip over a half-done first run."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cli_helpers import invoke

RNG = np.random.default_rng(0)
VECTORS = RNG.standard_normal((40, 8)).astype(np.float32)


def _never_load(**_: object) -> None:
    raise AssertionError("the model was loaded before the outputs were checked")


@pytest.fixture
def vectors(tmp_path):
    np.save(tmp_path / "v.npy", VECTORS)
    return str(tmp_path / "v.npy")


@pytest.fixture
def no_work(monkeypatch):
    """The work of dedup and cluster fails the test if it starts."""
    import sentemb.retrieval.cluster as clustering
    import sentemb.retrieval.dedup as dedup

    def started(*_: object, **__: object) -> None:
        raise AssertionError("the work started before the outputs were checked")

    for module, name in ((clustering, "community_detection"), (clustering, "kmeans"), (dedup, "find_duplicates")):
        monkeypatch.setattr(module, name, started)


@pytest.mark.parametrize("command", ["dedup", "cluster"])
def test_an_existing_plot_stops_the_command_before_the_work_and_the_table(command, vectors, tmp_path, no_work):
    (tmp_path / "sizes.png").write_bytes(b"an earlier plot")
    table = tmp_path / "out.jsonl"
    done = invoke(command, vectors, "-o", str(table), "--plot", str(tmp_path / "sizes.png"), code=4)
    assert "sizes.png: already exists; use --force" in done.stderr
    assert not table.exists()
    assert (tmp_path / "sizes.png").read_bytes() == b"an earlier plot"


@pytest.mark.parametrize("command", ["dedup", "cluster"])
def test_the_rerun_after_a_refused_plot_writes_both(command, vectors, tmp_path):
    (tmp_path / "sizes.png").write_bytes(b"an earlier plot")
    table = tmp_path / "out.jsonl"
    invoke(command, vectors, "-o", str(table), "--plot", str(tmp_path / "sizes.png"), code=4)
    (tmp_path / "sizes.png").unlink()
    invoke(command, vectors, "-o", str(table), "--plot", str(tmp_path / "sizes.png"))
    assert table.stat().st_size > 0
    assert (tmp_path / "sizes.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("command", ["dedup", "cluster"])
def test_a_plot_format_matplotlib_cannot_write_is_refused_first(command, vectors, tmp_path, no_work):
    done = invoke(command, vectors, "-o", str(tmp_path / "o.jsonl"), "--plot", str(tmp_path / "s.docx"), code=4)
    assert "--plot cannot write .docx files" in done.stderr
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("command", ["dedup", "cluster"])
def test_a_plot_without_matplotlib_is_refused_first(command, vectors, tmp_path, no_work, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as on the light install
    done = invoke(command, vectors, "-o", str(tmp_path / "o.jsonl"), "--plot", str(tmp_path / "s.png"), code=2)
    assert "--plot needs matplotlib" in done.stderr and "pip install 'sentemb[cli]'" in done.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_a_parquet_table_without_pyarrow_is_refused_first(vectors, tmp_path, no_work, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    done = invoke("dedup", vectors, "-o", str(tmp_path / "o.parquet"), code=2)
    assert "needs pyarrow" in done.stderr and "pip install 'sentemb[cli]'" in done.stderr


@pytest.mark.parametrize("method", ["kmeans", "hdbscan"])
def test_scikit_learn_is_checked_before_the_texts_are_embedded(method, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setattr("sentemb.cli.corpus.load_encoder", _never_load)
    (tmp_path / "t.txt").write_text("a\nb\nc\n")
    done = invoke("cluster", str(tmp_path / "t.txt"), "-o", str(tmp_path / "c.jsonl"), "--method", method,
                  "--clusters", "2", code=2)  # fmt: skip
    assert f"--method {method} needs sklearn" in done.stderr and "pip install 'sentemb[cluster]'" in done.stderr


def test_similarity_heatmap_without_matplotlib_fails_before_printing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr("sentemb.cli.similarity.load_encoder", _never_load)
    done = invoke("similarity", "a", "b", "c", "--heatmap", str(tmp_path / "h.png"), code=2)
    assert done.stdout == ""  # no table printed before the failure
    assert "--heatmap needs matplotlib" in done.stderr and "pip install 'sentemb[cli]'" in done.stderr


def test_eval_plot_without_matplotlib_fails_before_encoding(sts_dev_path, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr("sentemb.cli.evaluate.load_encoder", _never_load)
    done = invoke("eval", "sts", str(sts_dev_path), "--plot", str(tmp_path / "p.png"), code=2)
    assert done.stdout == ""
    assert "--plot needs matplotlib" in done.stderr


def test_encode_to_parquet_without_pyarrow_fails_before_loading(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setattr("sentemb.cli.encode.load_encoder", _never_load)
    done = invoke("encode", "--text", "hello", "-o", str(tmp_path / "v.parquet"), code=2)
    assert "needs pyarrow" in done.stderr
    assert not list(tmp_path.iterdir())
