"""No process-wide side effects: loading and exporting leave logging, warnings, the environment and
progress bars as they found them; the scoped helpers quiet only their own thread; the digest memo
follows SENTEMB_CACHE and is safe from several threads."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import threading
import warnings

import pytest
from transformers.utils import logging as hf_logging

import sentemb
from sentemb import scoped
from sentemb.config import Precision
from sentemb.export import ensure_export
from sentemb.models import read_model_folder
from sentemb.models import resolve as resolve_module

hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")  # the module; the package exports a class by its name


def _process_state() -> dict[str, object]:
    """What a library call must leave as it found it."""
    from rich import get_console

    loggers = ("nncf", "torch.onnx", "onnxruntime", "transformers", "sentemb")
    return {
        "environ": dict(os.environ),
        "logging.disable": logging.root.manager.disable,
        "root": (logging.root.level, list(logging.root.filters), [list(h.filters) for h in logging.root.handlers]),
        "lastResort": list(logging.lastResort.filters) if logging.lastResort else None,
        "loggers": {name: (logging.getLogger(name).level, list(logging.getLogger(name).filters)) for name in loggers},
        "warnings": list(warnings.filters),
        "transformers bars": (hf_logging.is_progress_bar_enabled(), hf_logging._tqdm_hook),
        "hub bars": (hub_tqdm.are_progress_bars_disabled(), dict(hub_tqdm.progress_bar_states)),
        "rich console quiet": get_console().quiet,
    }


@pytest.fixture
def hub_bars_off():
    """A user who turned huggingface_hub's bars off (only those): a load must not turn them back on."""
    saved = dict(hub_tqdm.progress_bar_states)
    hub_tqdm.disable_progress_bars()
    yield
    hub_tqdm.progress_bar_states.clear()
    hub_tqdm.progress_bar_states.update(saved)


def test_torch_load_leaves_the_process_as_it_was(tiny_dirs, hub_bars_off):
    before = _process_state()
    sentemb.load(tiny_dirs["bert"], backend="torch", device="cpu")
    assert _process_state() == before
    assert hub_tqdm.are_progress_bars_disabled()


@pytest.mark.parametrize(("runtime", "precision"), [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "int8")])
def test_an_export_leaves_the_process_as_it_was(tiny_dirs, tmp_path, monkeypatch, capfd, runtime, precision):
    for module in ("openvino", "nncf") if runtime == "openvino" else ("onnxruntime",):
        pytest.importorskip(module)  # imported first: nncf configures its own logger when imported
    monkeypatch.delenv("NNCF_CI", raising=False)
    monkeypatch.setenv("SENTEMB_CACHE", str(tmp_path))
    spec = read_model_folder(tiny_dirs["roberta"])
    before = _process_state()
    capfd.readouterr()
    ensure_export(spec, Precision(precision), runtime=runtime)
    assert _process_state() == before
    assert capfd.readouterr().out == ""  # stdout may carry vectors (`sentemb encode -o -`): no bars, no logs
    assert "NNCF_CI" not in os.environ


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_quiet_hides_only_its_own_threads_records():
    records = _Records()  # where an application's logging configuration sends records
    logging.root.addHandler(records)
    noisy = logging.getLogger("sentemb-test-noisy")  # a library's logger
    try:
        with scoped.quiet():
            noisy.warning("mine, hidden")
            logging.getLogger().warning("mine via the root logger, hidden")
            noisy.error("mine, an error: shown")
            other = threading.Thread(target=noisy.warning, args=("another thread's: shown",))
            other.start()
            other.join()
            warnings.warn("hidden", UserWarning, stacklevel=1)
        noisy.warning("after the block: shown")
    finally:
        logging.root.removeHandler(records)
    assert records.messages == ["mine, an error: shown", "another thread's: shown", "after the block: shown"]


def test_scopes_that_overlap_restore_the_state_once_the_last_leaves():
    assert "SENTEMB_TEST_VAR" not in os.environ
    first, second = scoped.env_var("SENTEMB_TEST_VAR", "1"), scoped.env_var("SENTEMB_TEST_VAR", "1")
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # not in LIFO order, as two threads may leave
    assert os.environ["SENTEMB_TEST_VAR"] == "1"
    second.__exit__(None, None, None)
    assert "SENTEMB_TEST_VAR" not in os.environ

    filters, nncf_filters = list(warnings.filters), list(logging.getLogger("nncf").filters)
    first, second = scoped.quiet(), scoped.quiet("nncf")
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert warnings.filters[0][0] == "ignore"
    second.__exit__(None, None, None)
    assert list(warnings.filters) == filters
    assert logging.getLogger("nncf").filters == nncf_filters
    assert not any(isinstance(f, logging.Filter) and f.name == "sentemb-quiet" for f in logging.root.filters)


def test_no_progress_bars_is_for_this_thread_only():
    if not hf_logging.is_progress_bar_enabled():
        pytest.skip("transformers' progress bars are switched off in this environment")
    seen = {}

    def bar(name):
        seen[name] = type(hf_logging.tqdm(range(1), disable=True)).__name__ == "EmptyTqdm"

    with scoped.no_progress_bars():
        bar("inside")
        other = threading.Thread(target=bar, args=("other thread",))
        other.start()
        other.join()
    bar("after")
    assert seen == {"inside": True, "other thread": False, "after": False}
    assert hf_logging._tqdm_hook is None


def test_the_digest_memo_follows_sentemb_cache(tmp_path, monkeypatch):
    big = tmp_path / "weights.bin"
    big.write_bytes(os.urandom(resolve_module.MEMO_MIN_BYTES))
    first, second = tmp_path / "first", tmp_path / "second"
    monkeypatch.setenv("SENTEMB_CACHE", str(first))
    digest = resolve_module.sha256_file(big)
    assert digest == hashlib.sha256(big.read_bytes()).hexdigest()
    assert digest in json.loads((first / "sha256-memo.json").read_text()).values()

    monkeypatch.setenv("SENTEMB_CACHE", str(second))
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(resolve_module.MEMO_MIN_BYTES))
    resolve_module.sha256_file(other)  # remembered in the new cache, not the one read first
    assert list(json.loads((second / "sha256-memo.json").read_text()).values()) == [
        hashlib.sha256(other.read_bytes()).hexdigest()
    ]
    assert len(json.loads((first / "sha256-memo.json").read_text())) == 1


def test_the_digest_memo_is_safe_from_several_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTEMB_CACHE", str(tmp_path / "cache"))
    files = []
    for index in range(8):
        path = tmp_path / f"w{index}.bin"
        path.write_bytes(os.urandom(resolve_module.MEMO_MIN_BYTES) + bytes([index]))
        files.append(path)
    start = threading.Barrier(len(files))
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def hash_one(path):
        start.wait()
        try:
            results[path.name] = resolve_module.sha256_file(path)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=hash_one, args=(path,)) for path in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    memo = json.loads((tmp_path / "cache" / "sha256-memo.json").read_text())
    assert sorted(memo.values()) == sorted(results.values())
