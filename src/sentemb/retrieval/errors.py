"""The errors of the retrieval tools (quantised vectors, the index, dedup, clustering).

    SentembError
    ├── VectorsError       (also ValueError)  vectors that cannot be used: empty, not 2-D, wrong size, NaN
    ├── IndexFileError     (also ValueError)  a saved index that is missing, damaged or from a newer sentemb
    └── ModelMismatchError (also ValueError)  query vectors or an add() from another model than the index's

Bad option values (k < 1, k larger than the corpus, a threshold outside [-1, 1], an unknown output
type) raise :class:`sentemb.ConfigError`. Each message says what to do next.
"""

from __future__ import annotations

from sentemb.errors import SentembError


class VectorsError(SentembError, ValueError):
    """Vectors that cannot be used as given (empty, not 2-D, another dimension, not finite)."""


class IndexFileError(SentembError, ValueError):
    """A saved index that cannot be read: missing files, a changed checksum, an unknown format."""


class ModelMismatchError(SentembError, ValueError):
    """Vectors from another model (or other model options) than the ones the index was built with."""
