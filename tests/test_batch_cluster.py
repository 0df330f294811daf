"""Where the batch job runs and what its driver does: a private local Ray beside a running one, quiet
output, and a model described without building an encoder (issue 11.5, issue 16)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from sentemb.batch.manifest import make_header
from sentemb.batch.model import check_worker, describe_job_model
from sentemb.config import EncoderConfig
from sentemb.errors import ConfigError, IntegrityError

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def other_ray():
    """A `ray start --head` in its own process group, found by Ray's autodetection through RAY_TMPDIR
    (as any `ray start` on the machine would be); killed, by that group, at the end."""
    pytest.importorskip("ray.data")
    ray_tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths live below it
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    ports = [f"--{name}={_free_port()}" for name in ("port", "dashboard-port", "dashboard-agent-listen-port")]
    start = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--num-cpus=1", "--include-dashboard=false",
         "--disable-usage-stats", *ports],
        env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output = start.communicate()[0].decode(errors="replace")  # returns once the head is up (its daemons stay)
    try:
        assert start.returncode == 0, output
        assert (Path(ray_tmp) / "ray" / "ray_current_cluster").is_file()
        yield env
    finally:
        os.killpg(start.pid, signal.SIGKILL)  # the daemons `ray start` left in its process group
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_batch_runs_its_own_ray_while_another_ray_is_up_and_keeps_ray_logs_out_of_the_terminal(
    other_ray, tmp_path, tiny_dirs
):
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i, "text": f"text {i}"}) + "\n" for i in range(3)))
    args = ["batch", str(tmp_path / "in.jsonl"), str(tmp_path / "out"), "--model", str(tiny_dirs["bert"]),
            "--num-actors", "1", "--no-progress"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", "from sentemb.cli import main; main()", *args],
        cwd=ROOT, env=other_ray, check=False, capture_output=True, text=True,
    )  # fmt: skip
    # Before: ValueError "When connecting to an existing cluster, num_cpus and num_gpus must not be provided".
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert json.loads(lines[-1])["rows_written"] == 3
    assert not [line for line in lines if "WARNING" in line or "core_worker" in line or "INFO" in line], lines
    assert len(list((tmp_path / "out").glob("part-*.parquet"))) == 1


def test_an_actor_error_is_one_line_and_names_the_log_that_holds_rays_messages(tmp_path, tiny_dirs):
    pytest.importorskip("ray.data")
    (tmp_path / "in.jsonl").write_text('{"id": 1, "text": "a"}\n')
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # the driver accepts it; the actor's backend refuses bf16 (actors check backend and precision)
    args = ["batch", str(tmp_path / "in.jsonl"), str(tmp_path / "out"), "--model", str(tiny_dirs["bert"]),
            "--backend", "onnx", "--precision", "bf16", "--no-progress", "--quiet"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", "from sentemb.cli import main; main()", *args],
                          cwd=ROOT, env=env, check=False, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert [line for line in lines if line.startswith("Error:")] == [
        "Error: the ONNX backend runs fp32 and int8, not bf16; use backend='torch' for bf16/fp16"
    ], lines
    hint = [line for line in lines if "Ray's messages are in" in line]
    assert len(hint) == 1 and len(lines) == 2, lines
    log = Path(hint[0].rsplit(" ", 1)[-1])
    assert "ConfigError" in log.read_text(errors="replace")
    log.unlink()


DRIVER = """
import sys
from sentemb.batch.model import describe_job_model
from sentemb.config import EncoderConfig
header = describe_job_model(EncoderConfig(model=sys.argv[1], precision="fp16", backend="auto"), num_gpus=1)
print(header["backend"], header["precision"], header["dim"], "torch" in sys.modules)
"""


def test_fp16_on_gpu_actors_is_described_on_a_cpu_driver_without_a_backend(tiny_dirs):
    done = subprocess.run([sys.executable, "-c", DRIVER, str(tiny_dirs["bert"])], check=True, capture_output=True,
                          text=True)  # fmt: skip
    backend, precision, dim, torch_loaded = done.stdout.split()
    assert (backend, precision) == ("torch", "fp16")  # 'auto' resolved for the actors' GPU, not this CPU
    config = json.loads((tiny_dirs["bert"] / "config.json").read_text())
    assert int(dim) == config["hidden_size"]
    assert torch_loaded == "False"  # no encoder, no backend: nothing imported torch


def test_fp16_without_a_gpu_per_actor_is_refused_on_the_driver(tiny_dirs):
    with pytest.raises(ConfigError, match="--num-gpus 1"):
        describe_job_model(EncoderConfig(model=str(tiny_dirs["bert"]), precision="fp16"), num_gpus=0)


def test_the_header_matches_what_an_encoder_describes(default_encoder):
    described = describe_job_model(EncoderConfig(device="cpu"), num_gpus=0)
    expected = default_encoder.describe().to_dict()
    for key in ("sha256", "dim", "pooling", "normalize", "max_length", "long_text", "backend", "precision"):
        assert described[key] == expected[key], key
    assert make_header(described, {}, 1, 1)["chunk_overlap"] is None


def test_an_actor_that_would_run_another_backend_refuses(default_encoder):
    config = EncoderConfig(device="cpu")
    header = describe_job_model(config, num_gpus=0)
    check_worker(default_encoder, config, header, num_gpus=0)  # the same: accepted
    other = SimpleNamespace(dim=default_encoder.dim, backend="onnx", config=default_encoder.config)
    with pytest.raises(IntegrityError, match=r"backend='onnx'.*--backend"):
        check_worker(other, config, header, num_gpus=0)
