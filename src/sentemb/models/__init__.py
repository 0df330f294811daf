"""Find a model (local folder, bundled default, Hugging Face hub), read and write its folder."""

from sentemb.models.folder import ModelSpec, SavePlan, StConfig, read_model_folder, write_st_folder
from sentemb.models.resolve import resolve_model

__all__ = ["ModelSpec", "SavePlan", "StConfig", "read_model_folder", "resolve_model", "write_st_folder"]
