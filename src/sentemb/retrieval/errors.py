"""The retrieval errors, kept importable from here; they live in :mod:`sentemb.errors` (the one tree)."""

from __future__ import annotations

from sentemb.errors import IndexFileError, ModelMismatchError, VectorsError

__all__ = ["IndexFileError", "ModelMismatchError", "VectorsError"]
