#!/usr/bin/env bash
# Demo on a tiny checkpoint the repo generates (random weights): compile it to ONNX and run it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${RADIO_DEMO_DIR:-$ROOT/out/demo}"
mkdir -p "$OUT"
node server/dist/cli.js make-checkpoint --preset tiny --out "$OUT/checkpoint"
node server/dist/cli.js compile --checkpoint "$OUT/checkpoint" --out "$OUT/graph" > /dev/null
.venv/bin/python -c "import numpy as np; np.save('$OUT/pixels.npy', np.random.default_rng(0).random((2, 3, 256, 384), dtype=np.float32))"
node server/dist/cli.js run --model-dir "$OUT/graph" --input "$OUT/pixels.npy" --out-dir "$OUT/run"
.venv/bin/python -c "import numpy as np; s=np.load('$OUT/run/summary.npy'); f=np.load('$OUT/run/features.npy'); print('summary', s.shape, 'features', f.shape)"
