"""sentemb.export.cache: built once, reused, damaged entries moved aside and rebuilt, safe across processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sentemb
from sentemb import export
from sentemb.config import Precision
from sentemb.export import build as export_build
from sentemb.export import cache as export_cache
from sentemb.models import read_model_folder
from tiny_models import PARITY_TEXTS as TEXTS

pytest.importorskip("onnxruntime")


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(export_cache.CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """Records every build (its recipe's runtime) and then builds for real."""
    calls: list[str] = []
    real = export_build.build_export

    def counted(spec, recipe, out, **options):
        calls.append(recipe.runtime)
        return real(spec, recipe, out, **options)

    monkeypatch.setattr(export_build, "build_export", counted)
    return calls


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith((".partial-", ".damaged-"))]


def test_export_is_cached_and_reused(private_cache, tiny_dirs, builds):
    folder = tiny_dirs["bert"]
    first = sentemb.load(folder, backend="onnx", device="cpu").encode(TEXTS)
    again = sentemb.load(folder, backend="onnx", device="cpu")
    assert builds == ["onnx"]
    assert again._backend.tokenizer is not None  # from the tokenizer.json cached beside the graph
    np.testing.assert_array_equal(again.encode(TEXTS), first)
    (entry,) = (p for p in (private_cache / "onnx").iterdir() if p.is_dir())
    manifest = json.loads((entry / export.MANIFEST_FILE).read_text())
    assert set(manifest["sha256"]) == {export.MODEL_FILES["onnx"][0], export.TOKENIZER_FILE}
    recipe = export.recipe_for(read_model_folder(folder), Precision.FP32)
    assert manifest["key"] == recipe.key and manifest["recipe"] == recipe.to_json()
    assert entry.name == recipe.folder_name
    assert _leftovers(private_cache / "onnx") == []


def test_damaged_export_is_moved_aside_and_rebuilt(private_cache, tiny_dirs, builds):
    folder = tiny_dirs["distilbert"]
    before = sentemb.load(folder, backend="onnx", device="cpu").encode(TEXTS)
    (entry,) = (p for p in (private_cache / "onnx").iterdir() if p.is_dir())
    model = entry / export.MODEL_FILES["onnx"][0]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte somewhere in the weights
    model.write_bytes(bytes(data))
    assert export.check_export(entry) is None
    # held open like a reader that opened the damaged folder: its inode cannot be reused for the new one
    damaged = os.open(entry, os.O_RDONLY)
    try:
        after = sentemb.load(folder, backend="onnx", device="cpu").encode(TEXTS)
        assert builds == ["onnx", "onnx"]
        assert export.check_export(entry) is not None
        # a new folder renamed into place, not files rewritten in the damaged one
        assert entry.stat().st_ino != os.fstat(damaged).st_ino
    finally:
        os.close(damaged)
    np.testing.assert_allclose(after, before, atol=1e-6)
    assert _leftovers(private_cache / "onnx") == []

    (entry / export.MANIFEST_FILE).write_text("{not json")  # a torn manifest counts as damaged too
    sentemb.load(folder, backend="onnx", device="cpu")
    assert builds == ["onnx"] * 3


def test_a_sound_export_is_never_touched(private_cache, tiny_dirs, builds):
    spec = read_model_folder(tiny_dirs["bert"])
    first = export.ensure_export(spec, Precision.FP32)
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first.folder.iterdir()}
    with first.model.open("rb") as reader:  # a reader holding the files meanwhile
        again = export.ensure_export(spec, Precision.FP32)
        assert reader.read() == again.model.read_bytes()
    assert again.folder == first.folder and builds == ["onnx"]
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in again.folder.iterdir()} == stamps


def test_a_sound_export_published_meanwhile_is_kept(private_cache, tiny_dirs, monkeypatch):
    """A builder that loses the rename to another process's sound export uses that one (no lock:
    e.g. a file system without flock)."""
    spec = read_model_folder(tiny_dirs["bert"])
    recipe = export.recipe_for(spec, Precision.FP32)
    real = export_build.build_export
    theirs = private_cache / "elsewhere"
    real(spec, recipe, theirs)  # the other process's finished export
    final = private_cache / "onnx" / recipe.folder_name

    def build_while_another_publishes(spec, recipe, out, **options):
        real(spec, recipe, out, **options)
        os.rename(theirs, final)  # the other process renames its folder into place first

    monkeypatch.setattr(export_build, "build_export", build_while_another_publishes)
    theirs_inode = theirs.stat().st_ino
    found = export.ensure_export(spec, Precision.FP32)
    assert found.folder == final and final.stat().st_ino == theirs_inode
    assert _leftovers(private_cache / "onnx") == []


_RACER = """
import contextlib, json, sys
from pathlib import Path
from sentemb.config import Precision
from sentemb.export import cache, ensure_export, export_to
from sentemb.export.build import build_export  # torch and transformers imported before the barrier
from sentemb.models import read_model_folder

if sys.argv[3] == "no-lock":  # as on a file system without flock: both build, the renames race
    cache._builder_lock = lambda path: contextlib.nullcontext()

spec = read_model_folder(Path(sys.argv[1]))
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"
found = ensure_export(spec, Precision.FP32)
copied = export_to(spec, Precision.FP32, Path(sys.argv[2]))
print(json.dumps({"folder": str(found.folder), "copied": str(copied.folder)}), flush=True)
"""


@pytest.mark.parametrize("lock", ["lock", "no-lock"])
def test_two_processes_export_the_same_model_at_once(private_cache, tiny_dirs, tmp_path, lock):
    env = {**os.environ, export_cache.CACHE_ENV: str(private_cache)}
    outs = [tmp_path / "out0", tmp_path / "out1"]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    command = [sys.executable, "-c", _RACER, str(tiny_dirs["roberta"])]
    racers = [subprocess.Popen([*command, str(out), lock], text=True, env=env, **pipes) for out in outs]
    for racer in racers:  # the barrier: both are ready before either starts exporting
        assert racer.stdout.readline().strip() == "ready", racer.stderr.read()
    for racer in racers:
        racer.stdin.write("go\n")
        racer.stdin.flush()
    results = []
    for racer in racers:
        stdout, stderr = racer.communicate()
        assert racer.returncode == 0, stderr
        results.append(json.loads(stdout))
    assert results[0]["folder"] == results[1]["folder"]
    for out in outs:
        assert export.check_export(out) is not None
        names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())  # with 1_Pooling/...
        assert names == sorted(str(p.relative_to(outs[0])) for p in outs[0].rglob("*") if p.is_file())
        assert all((out / name).read_bytes() == (outs[0] / name).read_bytes() for name in names)
    assert _leftovers(private_cache / "onnx") == []
    assert [p.name for p in (private_cache / "onnx").iterdir() if p.is_dir()] == [Path(results[0]["folder"]).name]


def test_export_dir_option_places_the_cache(private_cache, tiny_dirs, tmp_path):
    chosen = tmp_path / "exports"
    encoder = sentemb.load(tiny_dirs["bert"], backend="onnx", device="cpu", export_dir=str(chosen))
    assert encoder.config.export_dir == str(chosen)
    assert [p.name for p in (chosen / "onnx").iterdir() if p.is_dir()]
    assert not (private_cache / "onnx").exists()


def test_unwritable_cache_says_what_to_do(tiny_dirs, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(export_cache.CACHE_ENV, str(blocker))
    with pytest.raises(sentemb.BackendError, match=r"ONNX export cache.*SENTEMB_CACHE"):
        sentemb.load(tiny_dirs["bert"], backend="onnx", device="cpu")
    with pytest.raises(sentemb.BackendError, match="export_dir"):
        sentemb.load(tiny_dirs["bert"], backend="onnx", device="cpu", export_dir=str(blocker / "sub"))
    spec = read_model_folder(tiny_dirs["bert"])
    with pytest.raises(sentemb.BackendError, match="OpenVINO export cache") as caught:
        export.ensure_export(spec, Precision.FP32, runtime="openvino")
    assert "ONNX" not in str(caught.value)


def test_a_failed_openvino_build_says_openvino(private_cache, tiny_dirs, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(export_build, "build_export", broken)
    spec = read_model_folder(tiny_dirs["bert"])
    with pytest.raises(sentemb.BackendError, match=r"the OpenVINO export of .* failed: converter exploded"):
        export.ensure_export(spec, Precision.FP32, runtime="openvino")
    assert _leftovers(private_cache / "openvino") == []
    assert not [p for p in (private_cache / "openvino").iterdir() if p.is_dir()]


def test_openvino_export_is_cached_checked_and_rebuilt(private_cache, tiny_dirs, builds):
    ov = pytest.importorskip("openvino")
    folder = tiny_dirs["bert"]
    before = sentemb.load(folder, backend="openvino", device="cpu").encode(TEXTS)
    (entry,) = (p for p in (private_cache / "openvino").iterdir() if p.is_dir())
    manifest = json.loads((entry / export.MANIFEST_FILE).read_text())
    assert set(manifest["sha256"]) == {"model.xml", "model.bin", export.TOKENIZER_FILE}
    assert manifest["runtime"] == "openvino" and manifest["recipe"]["versions"]["openvino"] != "absent"
    native_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    sentemb.load(folder, backend="openvino", precision="bf16" if native_bf16 else "fp32", device="cpu")
    assert builds == ["openvino"]  # bf16 compiles the cached fp32 IR: no new export
    weights = entry / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    after = sentemb.load(folder, backend="openvino", device="cpu").encode(TEXTS)
    assert builds == ["openvino", "openvino"]
    np.testing.assert_allclose(after, before, atol=1e-6)
    shutil.rmtree(private_cache)
