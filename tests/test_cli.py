"""The `sentemb` group: fast lazy help, examples and exit codes in every --help, missing commands, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import invoke
from sentemb import cli

SENTEMB = Path(sys.executable).with_name("sentemb")
COMMANDS = [["encode"], ["similarity"], ["search"], ["eval", "sts"], ["info"]]


def test_help_is_light_and_lists_every_command():
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from sentemb.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted({'torch', 'transformers', 'tokenizers', 'pyarrow', 'matplotlib', 'rich'} & set(sys.modules))\n"
        "print('HEAVY', heavy, time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    for name in ("encode", "similarity", "search", "eval", "info", "serve", "batch", "export"):
        assert f"\n  {name} " in out
    assert "Exit codes" in out


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_help_shows_an_example_and_exit_codes(command):
    out = invoke(*command, "--help").stdout
    assert "Examples:" in out
    assert f"sentemb {' '.join(command)}" in out
    assert "Exit codes" in out


def test_a_missing_command_module_says_so_in_one_line(monkeypatch):
    monkeypatch.setitem(cli._COMMANDS, "ghost", cli._Entry("sentemb.cli.no_such_module", "ghost", "cli", "Ghost."))
    result = invoke("ghost", "--anything", code=2)
    assert "not part of this installation" in result.stderr


def test_a_missing_extra_names_the_install_command(monkeypatch, tmp_path):
    (tmp_path / "needs_extra_cmd.py").write_text("import no_such_dependency_xyz  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli._COMMANDS, "fancy", cli._Entry("needs_extra_cmd", "fancy", "server", "Fancy."))
    result = invoke("fancy", code=2)
    assert "pip install 'sentemb[server]'" in result.stderr
    assert "no_such_dependency_xyz" in result.stderr


def test_unknown_command_is_a_usage_error():
    result = invoke("no-such-command", code=2)
    assert "no-such-command" in result.stderr


@pytest.mark.skipif(not SENTEMB.exists(), reason="console script not installed in this environment")
def test_ctrl_c_in_a_real_process_leaves_no_output(tmp_path, sts_train_path):
    lines = [line.split("\t")[5] for line in sts_train_path.read_text(encoding="utf-8").splitlines()[:3000]]
    (tmp_path / "in.txt").write_text("\n".join(lines * 4), encoding="utf-8")
    target = tmp_path / "out.parquet"
    process = subprocess.Popen(
        [str(SENTEMB), "encode", str(tmp_path / "in.txt"), "-o", str(target), "--batch-size", "8"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.parquet.*.part")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # some chunks are written to the temporary file
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip() == "Error: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
