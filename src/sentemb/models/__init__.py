"""Find a model (local folder, bundled default, Hugging Face hub), read and write its folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sentemb.errors import ConfigError
from sentemb.models.folder import (
    ModelSpec,
    SavePlan,
    StConfig,
    read_model_folder,
    write_st_folder,
    write_static_model,
)
from sentemb.models.resolve import Resolved, resolve_model

if TYPE_CHECKING:
    from sentemb.config import EncoderConfig


def open_model(config: EncoderConfig) -> tuple[Resolved, ModelSpec]:
    """Resolve ``config.model`` and read its folder with the config's safety opt-ins; refuse a
    ``max_length`` the model cannot take. Loads no backend."""
    resolved = resolve_model(config.model, config.revision, config.cache_dir, graphs=wanted_graphs(config))
    spec = read_model_folder(
        resolved.path, allow_pickle=config.allow_pickle, trust_remote_code=config.trust_remote_code
    )
    if config.max_length is not None and config.max_length > spec.limit:
        raise ConfigError(
            f"max_length={config.max_length} is more than this model takes ({spec.limit} tokens); "
            "use long_text='chunk' to embed longer texts"
        )
    return resolved, spec


def wanted_graphs(config: EncoderConfig) -> tuple[tuple[str, ...], ...]:
    """The hub graph files (:func:`~sentemb.models.prebuilt.hub_graphs`) the backend ``config`` resolves to
    would run: for ONNX / OpenVINO (asked for, or the base install's runtime) or a ``file_name``; else none."""
    from sentemb.config import Precision
    from sentemb.errors import openvino_runs, torch_installed
    from sentemb.models.prebuilt import hub_graphs

    backend = str(config.backend.value)
    if backend in ("torch", "auto") and not torch_installed():  # the base install runs a runtime, as auto_choice
        backend = "openvino" if openvino_runs(config.precision is Precision.INT8) else "onnx"
    if backend in ("onnx", "openvino"):
        return hub_graphs(backend, config.file_name)
    return hub_graphs("onnx", config.file_name) if config.file_name else ()


__all__ = [
    "ModelSpec", "SavePlan", "StConfig", "open_model", "read_model_folder", "resolve_model", "wanted_graphs",
    "write_st_folder", "write_static_model",
]  # fmt: skip
