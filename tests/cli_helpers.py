"""Helpers for the CLI tests: run a command in-process and check it ended as expected, without a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import sentemb
from sentemb.cli import main

# Vectors from the CLI are encoded in chunks, so padding differs from one library call: tiny float noise.
ATOL = 2e-5


def invoke(*args: str, input: str | bytes | None = None, code: int = 0) -> Result:
    result = CliRunner().invoke(main, list(args), input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, f"exit {result.exit_code}, expected {code}:\n{result.output}"
    if code:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        if code == 2:  # click's usage errors add the usage line and a hint, as every click tool does
            lines = [line for line in lines if line.startswith("Error:")]
        assert len(lines) == 1, f"expected one error line on stderr, got: {result.stderr!r}"
        assert "Traceback" not in result.output
    return result


def read_jsonl_vectors(path: Path) -> tuple[list, np.ndarray]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r["id"] for r in records], np.array([r["embedding"] for r in records], dtype=np.float32)


def read_parquet_vectors(path: Path) -> tuple[list, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return table.column("id").to_pylist(), np.array(table.column("embedding").to_pylist(), dtype=np.float32)


_loaded: dict = {}


@pytest.fixture
def cached_loads(monkeypatch):
    """Each CLI run loads its encoder through sentemb.load as usual; equal configs reuse one encoder
    (a real process loads once; the tests run dozens of commands in one process)."""
    from sentemb.encoder import load

    def cached(model="sentence-transformers/all-MiniLM-L6-v2", *, config=None, **options):
        key = (str(model), config, tuple(sorted(options.items())))
        if key not in _loaded:
            _loaded[key] = load(model, config=config, **options)
        return _loaded[key]

    monkeypatch.setattr(sentemb, "load", cached)
