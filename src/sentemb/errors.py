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
    ├── BackendError            (also RuntimeError) a backend or its optional dependency failed
    ├── VectorsError            (also ValueError)   vectors that cannot be used: empty, not 2-D, wrong size, NaN
    ├── IndexFileError          (also ValueError)   a saved index that is missing, damaged or from a newer sentemb
    └── ModelMismatchError      (also ValueError)   vectors from another model than an index's (or the encoder's)

Bad retrieval option values (k < 1, a threshold outside [-1, 1], an unknown output type) raise
:class:`ConfigError`.

Each message says what to do next.
"""

from __future__ import annotations


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


class VectorsError(SentembError, ValueError):
    """Vectors that cannot be used as given (empty, not 2-D, another dimension, not finite)."""


class IndexFileError(SentembError, ValueError):
    """A saved index that cannot be read: missing files, a changed checksum, an unknown format."""


class ModelMismatchError(SentembError, ValueError):
    """Vectors from another model (or other model options) than the ones the index was built with."""
