#!/usr/bin/env bash
# The demo on the embedded tiny checkpoint (random weights): FiftyOne embeddings, heatmaps,
# similarity and UMAP through the zoo source. Needs `bash scripts/setup.sh` first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
exec .venv/bin/python scripts/demo.py
