"""The ``sentemb`` command line: one small module per command, imported only when that command runs.

``sentemb --help`` imports neither torch nor transformers: commands are listed from the table below
and loaded on first use. A command whose module or optional extra is missing prints one line saying
what to install instead of breaking the others.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import click

from sentemb.cli.common import EXIT_CODES_HELP, EXIT_USAGE, CliError, translate_errors


class _Entry(NamedTuple):
    module: str
    attribute: str
    extra: str  # the pip extra that brings the command's dependencies
    summary: str


_COMMANDS: dict[str, _Entry] = {
    "encode": _Entry(
        "sentemb.cli.encode", "encode", "cli", "Embed texts (file, stdin or --text) into .npy, .jsonl or .parquet."
    ),
    "similarity": _Entry(
        "sentemb.cli.similarity", "similarity", "cli", "Cosine similarity of two texts or of every pair in a file."
    ),
    "search": _Entry(
        "sentemb.cli.search", "search", "cli", "Top-k semantic search of queries against a corpus or saved embeddings."
    ),
    "rerank": _Entry(
        "sentemb.cli.rerank", "rerank", "cli", "Score documents against queries with a cross-encoder, best first."
    ),
    "eval": _Entry(
        "sentemb.cli.evaluate", "eval_group", "cli", "Evaluate a model (sts: Spearman/Pearson on an STS file)."
    ),
    "info": _Entry(
        "sentemb.cli.info", "info", "cli", "What a model is: dimension, pooling, max length, files and sha256."
    ),
    "serve": _Entry("sentemb.cli.serve", "serve", "server", "Serve embeddings over HTTP."),
    "batch": _Entry("sentemb.cli.batch", "batch", "batch", "Embed a large corpus with Ray Data, resumable."),
    "export": _Entry("sentemb.cli.export", "export", "onnx", "Export a model to ONNX or OpenVINO."),
    "distill": _Entry(
        "sentemb.cli.distill", "distill", "cli", "Make a static embedding model (a vector per token) from a model."
    ),
    "index": _Entry(
        "sentemb.cli.index", "index_group", "index", "Build and search an ANN index (float32, int8, binary)."
    ),
    "dedup": _Entry("sentemb.cli.dedup", "dedup", "index", "Group near-duplicate texts; a representative per group."),
    "cluster": _Entry(
        "sentemb.cli.cluster", "cluster", "cluster", "Cluster texts: community detection, k-means, HDBSCAN."
    ),
}


def _unavailable(name: str, message: str) -> click.Command:
    """A stand-in command that says in one line why ``name`` cannot run here."""

    def callback(**_: Any) -> None:
        raise CliError(message, EXIT_USAGE)

    return click.Command(
        name,
        callback=callback,
        help=message,
        short_help=message,
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class LazyGroup(click.Group):
    """A group whose commands are imported on first use and whose errors become one-line messages."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*_COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = _COMMANDS.get(cmd_name)
        if entry is None:
            return None
        command = _import_command(cmd_name, entry)
        return command if isinstance(command, click.Command) else _unavailable(cmd_name, command)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """As click's, plus a suggestion for a mistyped command (`sentemb encod` -> did you mean 'encode')."""
        name = click.utils.make_str(args[0])
        if self.get_command(ctx, name) is None and not name.startswith("-"):
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.6)
            if close:
                hint = " or ".join(repr(match) for match in close)
                ctx.fail(f"No such command {name!r}. Did you mean {hint}? (sentemb --help lists them)")
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List commands from the table, without importing them (keeps ``--help`` fast)."""
        rows = [(name, _COMMANDS[name].summary) for name in sorted(_COMMANDS)]
        rows += [(name, cmd.get_short_help_str()) for name, cmd in sorted(self.commands.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        with translate_errors():
            return super().invoke(ctx)


def _import_command(name: str, entry: _Entry) -> click.Command | str:
    """The command object, or one line saying why it cannot be loaded here."""
    try:
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        if exc.name == entry.module:
            return f"`sentemb {name}` is not part of this installation of sentemb"
        return _install_hint(name, entry, exc)
    except ImportError as exc:
        return _install_hint(name, entry, exc)
    command = getattr(module, entry.attribute, None)
    if not isinstance(command, click.Command):
        return f"`sentemb {name}` is not available: {entry.module} has no command {entry.attribute!r}"
    return command


def _install_hint(name: str, entry: _Entry, exc: ImportError) -> str:
    missing = f" ({exc.name} is missing)" if exc.name else ""
    return f"`sentemb {name}` needs extra dependencies{missing}: pip install 'sentemb[{entry.extra}]'"


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog=(
        "\b\nExamples:\n"
        "  sentemb encode docs.jsonl --field text -o docs.parquet\n"
        "  sentemb similarity 'A cat sits.' 'A kitten is sitting.'\n"
        "  sentemb search 'how do I reset it?' --corpus faq.txt -k 5\n"
        "  sentemb eval sts sts-dev.csv\n"
        "  sentemb info\n\n" + EXIT_CODES_HELP
    ),
)
@click.version_option(package_name="sentemb", prog_name="sentemb")
def main() -> None:
    """Sentence embeddings from the shell: texts in, float32 vectors out."""
