"""Find a model (local folder, bundled default, Hugging Face hub), read and write its folder."""

from __future__ import annotations

from sentemb.models.folder import ModelSpec, SavePlan, StConfig, read_model_folder, write_st_folder, write_static_model
from sentemb.models.resolve import Resolved, resolve_model

__all__ = [
    "ModelSpec", "Resolved", "SavePlan", "StConfig", "read_model_folder", "resolve_model", "write_st_folder",
    "write_static_model",
]  # fmt: skip
