#!/usr/bin/env bash
# Fresh machine: set everything up, then run the demo on the embedded tiny checkpoint.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
bash "$ROOT/scripts/demo.sh"
