"""What every command shares: the encoder options, building the encoder, and turning errors into exit codes.

Exit codes (documented in ``sentemb --help``)::

    0    success
    1    bad input: missing file, column or field, invalid UTF-8, empty input, a non-text value
    2    bad command line or option value (click's usage errors, sentemb.ConfigError)
    3    model problem: unknown model, unsafe weights, damaged files, backend failure
    4    output problem: the output exists (use --force), or cannot be written
    130  interrupted (Ctrl-C); no partial output is left behind

Commands raise :class:`InputError` or :class:`OutputError` for problems they find themselves;
:func:`translate_errors` turns library errors and ``OSError`` into the same one-line messages.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sentemb.config import BACKENDS, DEFAULT_MODEL, EncoderConfig, LongText, Pooling, Precision
from sentemb.errors import ConfigError, SentembError

if TYPE_CHECKING:
    from sentemb.encoder import Encoder

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INPUT = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_OUTPUT = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 success, 1 bad input (file, column, encoding, empty or non-text value), "
    "2 bad option, 3 model problem, 4 output problem (exists without --force, or unwritable), "
    "130 interrupted."
)


class CliError(click.ClickException):
    """A one-line message on stderr and an exit code; never a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class; ours varies


class InputError(CliError):
    """The input cannot be read as asked (exit code 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_INPUT)


class UsageError(CliError):
    """Options that do not fit together (exit code 2), said in one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class OutputError(CliError):
    """The output cannot be written (exit code 4)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_OUTPUT)


def _os_message(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn library errors, OSError and Ctrl-C into :class:`CliError` with the documented exit codes."""
    try:
        yield
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except KeyboardInterrupt:
        raise CliError("interrupted", EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        # `sentemb ... | head`: the reader left; stop quietly like other Unix tools.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        raise click.exceptions.Exit(141) from None
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    except SentembError as exc:
        # InvalidInputError and TextTooLongError are about the input; everything else about the model.
        from sentemb.errors import InvalidInputError, TextTooLongError

        code = EXIT_INPUT if isinstance(exc, (InvalidInputError, TextTooLongError)) else EXIT_MODEL
        raise CliError(str(exc), code) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"input is not valid UTF-8 ({exc.reason}); use --errors replace or --errors skip") from None
    except OSError as exc:
        raise CliError(_os_message(exc), EXIT_INPUT) from None


def handle_errors(func: F) -> F:
    """Decorator form of :func:`translate_errors` for a command callback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with translate_errors():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _choices(kind: type[Pooling] | type[LongText] | type[Precision]) -> click.Choice:
    return click.Choice([member.value for member in kind], case_sensitive=False)


_DEFAULTS = EncoderConfig()  # the library's defaults are the CLI's defaults

_ENCODER_OPTIONS = [
    click.option(
        "--model", "-m", default=None, metavar="NAME|PATH",
        help=f"Model folder or hub id [default: {DEFAULT_MODEL}, bundled, offline].",
    ),
    click.option("--revision", default=None, help="Hub revision (commit, tag or branch) to pin."),
    click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto."),
    click.option(
        "--backend", type=click.Choice(BACKENDS), default="torch", show_default=True,
        help="Inference backend (auto: the fastest that meets the precision's fidelity here).",
    ),
    click.option(
        "--precision", type=_choices(Precision), default="fp32", show_default=True,
        help="Numeric precision of the forward pass (vectors are always float32).",
    ),
    click.option("--pooling", type=_choices(Pooling), default=None, help="Pooling [default: the model's]."),
    click.option(
        "--normalize/--no-normalize", default=None, help="Unit-length vectors [default: the model's].",
    ),
    click.option(
        "--max-length", type=click.IntRange(min=4), default=None, help="Tokens per text [default: the model's].",
    ),
    click.option(
        "--long-text", type=_choices(LongText), default="truncate", show_default=True,
        help="Texts over --max-length: cut, fail, or embed in overlapping chunks.",
    ),
    click.option(
        "--chunk-overlap", type=click.IntRange(min=0), default=_DEFAULTS.chunk_overlap, show_default=True,
        help="Tokens shared by neighbouring chunks (--long-text chunk).",
    ),
    click.option(
        "--batch-size", type=click.IntRange(min=1), default=None,
        help="Texts per batch [default: 64 on the CPU, 1024 on a GPU].",
    ),
    click.option(
        "--token-budget", type=click.IntRange(min=1), default=_DEFAULTS.token_budget, show_default=True,
        help="Most padded tokens per batch.",
    ),
    click.option("--allow-pickle", is_flag=True, help="Allow pickle (.bin) weights: only for models you trust."),
    click.option(
        "--trust-remote-code", is_flag=True, help="Run the model repository's own code: only if you trust it."
    ),
]

# The parameter names encoder_options adds, in the order load_encoder takes them.
ENCODER_PARAMS = (
    "model", "revision", "device", "backend", "precision", "pooling", "normalize", "max_length",
    "long_text", "chunk_overlap", "batch_size", "token_budget", "allow_pickle", "trust_remote_code",
)


def encoder_options(func: F | None = None, *, positional_model: bool = False) -> Any:
    """Add the shared encoder options to a command.

    The callback receives them as the keyword arguments named in :data:`ENCODER_PARAMS`; pass them
    on with ``load_encoder(**params)``. With ``positional_model=True`` the command also takes an
    optional ``[MODEL]`` argument (callback parameter ``model_arg``), used when ``--model`` is absent.
    """

    def decorate(f: F) -> F:
        for option in reversed(_ENCODER_OPTIONS):
            f = option(f)
        if positional_model:
            f = click.argument("model_arg", metavar="[MODEL]", required=False)(f)
        return f

    return decorate(func) if func is not None else decorate


def split_encoder_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(encoder options, the rest) from a callback's keyword arguments."""
    names = {*ENCODER_PARAMS, "model_arg"}
    return {k: v for k, v in params.items() if k in names}, {k: v for k, v in params.items() if k not in names}


def config_from_options(
    *,
    model: str | None = None,
    revision: str | None = None,
    device: str = "auto",
    backend: str = "torch",
    precision: str = "fp32",
    pooling: str | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
    long_text: str = "truncate",
    chunk_overlap: int = _DEFAULTS.chunk_overlap,
    batch_size: int | None = None,
    token_budget: int = _DEFAULTS.token_budget,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    model_arg: str | None = None,
) -> EncoderConfig:
    """The :class:`EncoderConfig` the shared options describe (raises ConfigError on a bad value)."""
    if model and model_arg and model != model_arg:
        raise ConfigError(f"two models given: MODEL={model_arg!r} and --model={model!r}; give one")
    return EncoderConfig(
        model=model or model_arg or DEFAULT_MODEL,
        revision=revision,
        device=device,
        backend=backend,
        precision=precision,  # type: ignore[arg-type]  # validated into the enum by EncoderConfig
        pooling=pooling,  # type: ignore[arg-type]
        normalize=normalize,
        max_length=max_length,
        long_text=long_text,  # type: ignore[arg-type]
        chunk_overlap=chunk_overlap,
        batch_size=batch_size,
        token_budget=token_budget,
        show_progress=False,  # the CLI draws its own progress
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )


def load_encoder(**params: Any) -> Encoder:
    """Build the encoder from the shared options (keyword arguments of :func:`config_from_options`)."""
    import sentemb

    config = config_from_options(**params)
    with _quiet_warnings():
        return sentemb.load(config.model, config=config)


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    """Print library warnings (e.g. a CUDA fallback) as one line on stderr, never as a traceback."""
    import warnings

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        click.echo(f"warning: {message}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield
