"""Every error sentemb raises on purpose derives from :class:`SentembError`.

    SentembError
    ├── ModelNotFoundError      (also LookupError)  name or path resolves to nothing usable
    │   └── UnsupportedModelError                   a module or setting sentemb does not implement
    ├── UnsafeModelError                            pickle weights or remote code without opt-in
    ├── IntegrityError                              a file's sha256 is not the one expected
    ├── ConfigError             (also ValueError)   an option value that cannot work
    ├── InvalidInputError       (also TypeError)    a text that is not a str
    ├── InvalidTextError        (also ValueError)   a str that is not valid Unicode (a lone surrogate)
    ├── TextTooLongError        (also ValueError)   long_text="error" and a text over max_length
    └── BackendError            (also RuntimeError) a backend or its optional dependency failed

Each message says what to do next.
"""

from __future__ import annotations

import importlib
from typing import Any


class SentembError(Exception):
    """Base class of sentemb's errors."""


class ModelNotFoundError(SentembError, LookupError):
    """The model name or path does not resolve to a usable model folder."""


class UnsupportedModelError(ModelNotFoundError):
    """The folder holds a module (or module setting) sentemb does not implement; it is refused, never dropped."""


class UnsafeModelError(SentembError):
    """The model needs pickle weights or remote code and the caller did not opt in."""


class IntegrityError(SentembError):
    """A model file's sha256 differs from the expected value."""


class ConfigError(SentembError, ValueError):
    """An option value that cannot work with this model or machine."""


class InvalidInputError(SentembError, TypeError):
    """An input that is not a text; ``index`` is the position of the first bad item."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class InvalidTextError(SentembError, ValueError):
    """A text that cannot be encoded as UTF-8 (a lone surrogate such as ``"\\ud800"``).

    ``index`` is the text's position in the input, ``position`` the offending character's.
    """

    def __init__(self, message: str, index: int, position: int) -> None:
        super().__init__(message)
        self.index = index
        self.position = position


class TextTooLongError(SentembError, ValueError):
    """A text is longer than ``max_length`` tokens while ``long_text="error"``."""

    def __init__(self, message: str, index: int, num_tokens: int) -> None:
        super().__init__(message)
        self.index = index
        self.num_tokens = num_tokens


class BackendError(SentembError, RuntimeError):
    """A backend could not be built or run."""


def require(module: str, extra: str, purpose: str) -> Any:
    """Import an optional dependency, or raise ImportError that names the extra installing it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{purpose} needs {module}: pip install 'sentemb[{extra}]'") from None
