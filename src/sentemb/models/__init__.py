"""Find a model (local folder, bundled default, Hugging Face hub), read and write its folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sentemb.errors import ConfigError
from sentemb.models.folder import ModelSpec, SavePlan, StConfig, read_model_folder, write_st_folder
from sentemb.models.resolve import Resolved, resolve_model

if TYPE_CHECKING:
    from sentemb.config import EncoderConfig


def open_model(config: EncoderConfig) -> tuple[Resolved, ModelSpec]:
    """Resolve ``config.model`` and read its folder with the config's safety opt-ins; refuse a
    ``max_length`` the model cannot take. Loads no backend."""
    resolved = resolve_model(config.model, config.revision, config.cache_dir)
    spec = read_model_folder(
        resolved.path, allow_pickle=config.allow_pickle, trust_remote_code=config.trust_remote_code
    )
    if config.max_length is not None and config.max_length > spec.limit:
        raise ConfigError(
            f"max_length={config.max_length} is more than this model takes ({spec.limit} tokens); "
            "use long_text='chunk' to embed longer texts"
        )
    return resolved, spec


__all__ = [
    "ModelSpec", "SavePlan", "StConfig", "open_model", "read_model_folder", "resolve_model", "write_st_folder",
]  # fmt: skip
