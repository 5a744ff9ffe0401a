#!/usr/bin/env bash
# Sets up a fresh machine for this repo: Node packages, the TypeScript build, and the Python
# environment (.venv with FiftyOne, a working mongod, and the test-only torch reference).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node.js >= 20 is required (found: $(node --version 2>/dev/null || echo none)). Install it, e.g. 'apt-get install nodejs' or from nodejs.org." >&2
  exit 1
fi

# onnxruntime-node's install script downloads CUDA provider binaries (GPU hosts only); without
# a GPU, or offline, skip it: the CPU provider ships inside the npm package.
if [ -z "${ONNXRUNTIME_NODE_INSTALL:-}" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
  export ONNXRUNTIME_NODE_INSTALL=skip
fi
echo "[setup] npm ci (ONNXRUNTIME_NODE_INSTALL=${ONNXRUNTIME_NODE_INSTALL:-default})"
npm ci --no-audit --no-fund
echo "[setup] npm run build"
npm run build
bash .ci/setup-python.sh
echo "[setup] done"
