"""Every flag comes from a dataclass field and every field has a flag (issue 11.1), and a missing
optional dependency is one line naming its extra (issue 11.6)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from sentemb.batch.spec import BatchJob
from sentemb.cli import main
from sentemb.cli.flags import add_flags, build, flags_of, params_of
from sentemb.config import EncoderConfig
from sentemb.server.settings import ServerSettings

# Fields that are deliberately not flags, each with the reason.
NOT_FLAGS = {
    (EncoderConfig, "show_progress"): "every command draws its own progress (or has --progress/--quiet)",
    (ServerSettings, "max_chars"): "serve's --max-chars is the encoder's; this is the cap when it sets none",
}
# Parameters of a command that are not dataclass fields, each with the reason.
COMMAND_ONLY = {
    "serve": {"model_arg": "MODEL may also be given as an argument", "log_level": "the process's logging"},
    "batch": {"quiet": "the summary line is the command's, not the job's"},
}
ENCODER_COMMANDS = [
    ("encode",), ("similarity",), ("search",), ("eval", "sts"), ("info",), ("serve",), ("batch",), ("distill",),
]  # fmt: skip


def _command(path: tuple[str, ...]) -> click.Command:
    ctx = click.Context(main)
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        found = command.get_command(ctx, name)
        assert found is not None, name
        command = found
    return command


def _params(path: tuple[str, ...]) -> set[str]:
    return {p.name for p in _command(path).params if p.name and p.name != "help"}


@pytest.mark.parametrize("cls", [EncoderConfig, ServerSettings, BatchJob])
def test_every_field_is_a_flag_unless_listed_with_a_reason(cls):
    fields = {f.name for f in dataclasses.fields(cls)}
    flagged = {flag.field for flag in flags_of(cls)}
    unlisted = fields - flagged - {name for kind, name in NOT_FLAGS if kind is cls}
    assert not unlisted, f"{cls.__name__} fields without a flag: give them metadata={{'help': ...}}: {unlisted}"
    assert not flagged & {name for kind, name in NOT_FLAGS if kind is cls}


@pytest.mark.parametrize("path", ENCODER_COMMANDS, ids=" ".join)
def test_every_command_that_builds_an_encoder_has_every_encoder_flag(path):
    params = _params(path)
    assert set(params_of(EncoderConfig)) <= params


@pytest.mark.parametrize(("name", "cls"), [("serve", ServerSettings), ("batch", BatchJob)])
def test_serve_and_batch_have_no_flag_without_a_field(name, cls):
    params = _params((name,))
    from_fields = {*params_of(EncoderConfig), *params_of(cls)}
    assert params - from_fields == set(COMMAND_ONLY[name])
    assert len(params_of(EncoderConfig)) + len(params_of(cls)) == len(from_fields), "two fields share a flag"


@pytest.mark.parametrize("cls", [EncoderConfig, ServerSettings, BatchJob])
def test_defaults_shown_in_help_are_the_dataclass_defaults(cls):
    helps = {opt.name: opt.help or "" for flag in flags_of(cls) for opt in _options(flag)}
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for flag in flags_of(cls):
        default = defaults[flag.field]
        if isinstance(default, (int, float, str)) and not isinstance(default, bool) and default != "":
            shown = getattr(default, "value", default)
            assert f"[default: {shown}]" in helps[flag.param], flag.param


def _options(flag):
    @flag.decorator
    def f(**_):
        pass

    return [p for p in f.__click_params__ if isinstance(p, click.Option)]


def test_a_new_field_with_help_becomes_a_flag_with_no_other_edit():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Settings:
        window: int = dataclasses.field(default=3, metadata={"help": "A new knob."})
        labels: tuple[str, ...] = dataclasses.field(default=(), metadata={"help": "Repeatable."})
        fast: bool | None = dataclasses.field(default=None, metadata={"help": "Tri-state."})
        internal: str = "not a flag"

    @click.command()
    @add_flags(Settings)
    def command(**params):
        click.echo(repr(build(Settings, params)))

    runner = CliRunner()
    assert runner.invoke(command, []).output.strip() == repr(Settings())
    given = runner.invoke(command, ["--window", "5", "--labels", "a", "--labels", "b", "--no-fast"])
    assert given.output.strip() == repr(Settings(window=5, labels=("a", "b"), fast=False))
    assert "[default: 3]" in runner.invoke(command, ["--help"]).output


def test_env_default_still_works_for_the_api_key(monkeypatch):
    monkeypatch.setenv("SENTEMB_API_KEY", "from-env")
    seen = {}

    @click.command()
    @add_flags(ServerSettings)
    def command(**params):
        seen["settings"] = build(ServerSettings, params)

    assert CliRunner().invoke(command, []).exit_code == 0
    assert seen["settings"].api_key == "from-env"


SHIM = """
import sys
for name in {hidden!r}:
    sys.modules[name] = None  # `import name` now raises ImportError, as if it were not installed
from sentemb.cli import main
main({args!r})
"""


@pytest.mark.parametrize(
    ("hidden", "args", "extra"),
    [
        (["openvino"], ["encode", "--text", "x", "-o", "{tmp}/x.npy", "--backend", "openvino"], "openvino"),
        (["fastapi"], ["serve", "--port", "0"], "server"),
        (["ray"], ["batch", "{tmp}/in.jsonl", "{tmp}/out"], "batch"),
    ],
    ids=["encode-openvino", "serve-fastapi", "batch-ray"],
)
def test_a_missing_optional_dependency_is_one_line_naming_the_extra(tmp_path, hidden, args, extra):
    (tmp_path / "in.jsonl").write_text('{"id": 1, "text": "a"}\n')
    args = [a.format(tmp=tmp_path) for a in args]
    code = SHIM.format(hidden=hidden, args=args)
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, lines
    assert f"pip install 'sentemb[{extra}]'" in lines[0]


def test_a_zero_queue_budget_is_refused_by_the_flag_before_anything_loads():
    from cli_helpers import invoke

    result = invoke("serve", "--max-queue-seconds", "0", code=2)
    assert "--max-queue-seconds" in result.stderr and "x>0" in result.stderr
