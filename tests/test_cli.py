"""The `sentemb` group: fast lazy help, examples and exit codes in every --help, missing commands, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import invoke
from sentemb import cli

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


def start_encode_reading_stdin(target: Path) -> subprocess.Popen:
    """A real `sentemb encode - -o target` that has loaded its model, created its temporary output and is
    reading stdin when this returns: 200 KB of lines are written into a 64 KB pipe, so the write only
    completes once the process has read most of them (2,000 lines: less than one chunk, so it keeps
    waiting for more input instead of encoding). Ctrl-C is armed in the child as in a terminal: a parent
    started in the background by a non-interactive shell (`make test &`) ignores SIGINT, and an ignored
    signal stays ignored across exec."""
    start = ("import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
             "from sentemb.cli import main; main()")
    process = subprocess.Popen(
        [sys.executable, "-c", start, "encode", "-", "-o", str(target)],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert process.stdin is not None
    process.stdin.write("".join(f"line {i:05d} " + "x" * 88 + "\n" for i in range(2000)))
    process.stdin.flush()
    return process


@pytest.mark.parametrize(
    ("signum", "code", "message"),
    [(signal.SIGINT, 130, "Error: interrupted"), (signal.SIGTERM, 143, "Error: terminated"), (signal.SIGKILL, -9, "")],
    ids=["SIGINT", "SIGTERM", "SIGKILL"],
)
def test_a_signal_during_encode_leaves_no_partial_output(tmp_path, signum, code, message):
    target = tmp_path / "out.parquet"
    process = start_encode_reading_stdin(target)
    assert [p.name for p in tmp_path.glob(".out.parquet.*.part")]  # the run is under way
    process.send_signal(signum)
    _, stderr = process.communicate()
    assert process.returncode == code, stderr
    assert stderr.strip() == message
    if signum == signal.SIGKILL:  # no chance to clean up: the next run for the same output does it
        assert len(list(tmp_path.glob(".out.parquet.*.part"))) == 1
        result = invoke("encode", "-t", "x", "-o", str(target))
        assert "removed 1 unfinished temporary file" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if signum != signal.SIGKILL else ["out.parquet"])


def test_a_part_file_another_run_is_writing_is_kept(tmp_path):
    import fcntl

    busy = tmp_path / ".out.npy.abcd1234.part"
    with busy.open("wb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # as a running `sentemb encode` holds it
        result = invoke("encode", "-t", "x", "-o", str(tmp_path / "out.npy"))
        assert busy.exists()
        assert "removed" not in result.stderr
