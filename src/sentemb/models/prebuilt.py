"""The graphs a model folder or hub repository ships (ONNX Runtime and OpenVINO run them instead of an
export, so neither torch nor the source weights are needed), by file name alone:

* a folder ``sentemb export`` wrote: ``manifest.json`` + ``model.onnx`` (or ``model.xml``/``model.bin``);
* the hub layout sentence-transformers' ``save_pretrained`` writes with its ONNX / OpenVINO backends:
  ``onnx/model.onnx`` (variants such as ``onnx/model_qint8_avx512_vnni.onnx``, picked with
  ``file_name``) and ``openvino/openvino_model.xml``.

Loading them is :mod:`sentemb.export.prebuilt`'s.
"""

from __future__ import annotations

from pathlib import Path

# Where each runtime looks, in order (OpenVINO also reads ONNX graphs).
HUB_FILES = {"onnx": ("onnx/model.onnx",), "openvino": ("openvino/openvino_model.xml", "onnx/model.onnx")}
GRAPH_SUFFIXES = (".onnx", ".xml")


def hub_graphs(runtime: str, file_name: str | None = None) -> tuple[tuple[str, ...], ...]:
    """The files to fetch from a hub repository so that ``runtime`` runs the graph it ships: one group per
    graph, best first, each the graph and its side files (ONNX external data, OpenVINO weights).
    ``file_name`` is looked for where :func:`sentemb.export.prebuilt.find_prebuilt` looks (top level,
    onnx/, openvino/)."""
    if file_name is not None:
        names = (file_name, f"onnx/{file_name}", f"openvino/{file_name}")
        return (tuple(path for name in names for path in _with_side_files(name)),)
    return tuple(_with_side_files(name) for name in HUB_FILES[runtime])


def _with_side_files(name: str) -> tuple[str, ...]:
    if name.endswith(".xml"):
        return (name, f"{name[: -len('.xml')]}.bin")
    return (name, f"{name}_data", f"{name}.data")  # optimum's and torch.onnx's external-data names


def ships(folder: Path, groups: tuple[tuple[str, ...], ...]) -> bool:
    """Whether ``folder`` holds the graph of one of :func:`hub_graphs`' groups."""
    return any((folder / name).is_file() for group in groups for name in group if name.endswith(GRAPH_SUFFIXES))


def graph_files(folder: Path) -> tuple[Path, ...]:
    """The graphs ``folder`` ships (an export's manifest, onnx/*.onnx, openvino/*.xml), sorted."""
    manifest = folder / "manifest.json"
    shipped = (*folder.glob("onnx/*.onnx"), *folder.glob("openvino/*.xml"))
    return tuple(sorted(shipped)) if not manifest.is_file() else (manifest, *sorted(shipped))


def graph_runtimes(folder: Path, file_name: str | None = None) -> tuple[str, ...]:
    """The runtimes that run a graph ``folder`` ships where :func:`sentemb.export.prebuilt.find_prebuilt`
    looks (``file_name``: that graph), by file name alone; OpenVINO also reads ONNX, ONNX Runtime no IR."""
    if file_name is not None:
        return ("onnx", "openvino") if file_name.endswith(".onnx") else ("openvino",)
    if (folder / "manifest.json").is_file():  # a `sentemb export` folder: model.onnx or OpenVINO's model.xml
        if (folder / "model.onnx").is_file():
            return ("onnx", "openvino")
        return ("openvino",) if (folder / "model.xml").is_file() else ()
    return tuple(runtime for runtime, names in HUB_FILES.items() if any((folder / n).is_file() for n in names))


def has_graph(folder: Path) -> bool:
    """Whether ``folder`` ships a graph (export manifest, onnx/*.onnx or openvino/*.xml)."""
    return bool(graph_files(folder))
