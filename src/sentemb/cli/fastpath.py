"""The fastest cached path for commands a person waits on (``similarity``, ``search``).

Starting torch costs 5-8 s of a two-sentence ``sentemb similarity``; an ONNX Runtime session over a
cached export starts in well under a second. When the user did not choose ``--backend`` and asks
for fp32 on the CPU, and an exact fp32 export of the model is already cached (by ``sentemb export``
or an earlier ``--backend onnx|openvino`` run), the command runs on it: fp32 vectors of the three
backends agree within 2e-7 (all-MiniLM-L6-v2), so the answer is the same, only sooner. Nothing is
exported here: without a cached export the command runs on torch, as asked by default.
ONNX Runtime comes first: its session starts faster than OpenVINO's compile for a few texts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from sentemb.errors import SentembError

if TYPE_CHECKING:
    from sentemb.config import EncoderConfig
    from sentemb.machine import Machine

RUNTIMES = ("onnx", "openvino")
_MODULES = {"onnx": "onnxruntime", "openvino": "openvino"}


def fastest_cached(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with ``backend`` set to a runtime whose exact export is cached, when the user left it open."""
    context = click.get_current_context(silent=True)
    if context is None or context.get_parameter_source("backend") is not ParameterSource.DEFAULT:
        return params
    # a flag not given is None (the dataclass default applies: torch, fp32, auto)
    if params.get("backend") not in (None, "torch") or str(params.get("precision") or "fp32").lower() != "fp32":
        return params
    from sentemb.cli.common import config_from_options
    from sentemb.machine import Machine
    from sentemb.plan import on_gpu

    machine = Machine.here()
    try:
        config = config_from_options(**params)
    except SentembError:
        return params  # the normal path reports it
    if on_gpu(config, machine):
        return params  # torch on a GPU is the fast path there
    runtime = cached_runtime(config, machine)
    return params if runtime is None else {**params, "backend": runtime, "device": "cpu"}


def cached_runtime(config: EncoderConfig, machine: Machine) -> str | None:
    """The first runtime (onnx, then openvino) with an intact fp32 export of the model in the cache."""
    from sentemb.config import Precision
    from sentemb.export import find_export
    from sentemb.models import read_model_folder, resolve_model
    from sentemb.plan import wanted_graphs

    try:
        resolved = resolve_model(config.model, config.revision, config.cache_dir, graphs=wanted_graphs(config, machine))
        spec = read_model_folder(resolved.path, allow_pickle=config.allow_pickle,
                                 trust_remote_code=config.trust_remote_code)
    except SentembError:
        return None  # the normal path reports it
    for runtime in RUNTIMES:
        if not machine.has(_MODULES[runtime]):
            continue
        if find_export(spec, Precision.FP32, runtime=runtime, export_dir=config.export_dir) is not None:
            return runtime
    return None
