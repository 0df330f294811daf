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
import re
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sentemb.cli.flags import add_flags, build, params_of
from sentemb.config import EncoderConfig
from sentemb.errors import ConfigError, SentembError

if TYPE_CHECKING:
    from sentemb.encoder import Encoder
    from sentemb.rerank import Reranker

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


# A leading "Error" of a library's own message (transformers: "Error no file named ..."): click already
# prints "Error: " before every message, so it would read "Error: Error ...".
_LEADING_ERROR = re.compile(r"^\s*error\b[\s:.-]*", re.IGNORECASE)


class CliError(click.ClickException):
    """A one-line message on stderr and an exit code; never a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_INPUT) -> None:
        super().__init__(_LEADING_ERROR.sub("", message, count=1) or message)
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


# The extra that installs each optional dependency (pyproject.toml's optional-dependencies).
EXTRAS = {
    "fastapi": "server", "uvicorn": "server", "httptools": "server", "uvloop": "server",
    "prometheus_client": "server", "ray": "batch", "onnxruntime": "onnx", "onnx": "onnx", "onnxscript": "onnx",
    "openvino": "openvino", "nncf": "openvino", "rich": "cli", "pyarrow": "cli", "matplotlib": "cli",
    "usearch": "index", "sklearn": "cluster",
}  # fmt: skip


def missing_dependency(exc: ImportError) -> str:
    """One line naming what is missing and the extra that installs it."""
    message = str(exc).splitlines()[0] if str(exc) else "a dependency is missing"
    if "pip install" in message:  # the library already said which extra (sentemb.extras.require)
        return message
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top, "all")
    return f"{top or 'a dependency'} is not installed ({message}): pip install 'sentemb[{extra}]'"


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
    except ImportError as exc:  # an optional dependency of this command is not installed
        raise CliError(missing_dependency(exc), EXIT_USAGE) from None
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


# The callback keywords that encoder_options adds: one per EncoderConfig field with a help text.
ENCODER_PARAMS = params_of(EncoderConfig)


def encoder_options(func: F | None = None, *, positional_model: bool = False) -> Any:
    """Add a flag for each :class:`EncoderConfig` field to a command (generated: :mod:`sentemb.cli.flags`).

    The callback receives them as the keyword arguments named in :data:`ENCODER_PARAMS`; pass them
    on with ``load_encoder(**params)``. With ``positional_model=True`` the command also takes an
    optional ``[MODEL]`` argument (callback parameter ``model_arg``), used when ``--model`` is absent.
    """

    def decorate(f: F) -> F:
        f = add_flags(EncoderConfig)(f)
        if positional_model:
            f = click.argument("model_arg", metavar="[MODEL]", required=False)(f)
        return f

    return decorate(func) if func is not None else decorate


def reranker_options(func: F) -> F:
    """The flags of :class:`EncoderConfig` that a cross-encoder takes (not the embedding-only ones)."""
    from sentemb.rerank import EMBEDDING_OPTIONS

    return add_flags(EncoderConfig, skip=EMBEDDING_OPTIONS)(func)


def load_reranker(activation: str | None = None, rescore: bool = False, **params: Any) -> Reranker:
    """Build a reranker from :func:`reranker_options`' keywords (the model is required)."""
    import sentemb

    config = config_from_options(**params)
    with _quiet_warnings():
        return sentemb.load_reranker(config.model, config=config, activation=activation, rescore=rescore)


def split_encoder_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(encoder options, the rest) from a callback's keyword arguments."""
    names = {*ENCODER_PARAMS, "model_arg"}
    return {k: v for k, v in params.items() if k in names}, {k: v for k, v in params.items() if k not in names}


def config_from_options(*, model_arg: str | None = None, **params: Any) -> EncoderConfig:
    """The :class:`EncoderConfig` the encoder flags describe (raises ConfigError on a bad value);
    flags not given keep EncoderConfig's defaults."""
    model = params.get("model")
    if model and model_arg and model != model_arg:
        raise ConfigError(f"two models given: MODEL={model_arg!r} and --model={model!r}; give one")
    params["model"] = model or model_arg
    return build(EncoderConfig, params, show_progress=False)  # the CLI draws its own progress


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
