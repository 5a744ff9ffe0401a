#!/usr/bin/env bash
# The whole test suite: TypeScript (node:test) then Python (pytest: parity with the torch reference,
# FiftyOne end to end). Builds first, since the Python tests drive the built CLI.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
npm run build || exit 1
# Types: tsc over the server, tests and benchmarks (tsx runs them unchecked), mypy over the zoo package.
npm run --silent typecheck || exit 1
# Lint and format first: Biome (TypeScript: lint + format check), Ruff (Python: lint).
npm run --silent lint || exit 1

node_log=$(mktemp)
npm run --silent test:node 2>&1 | tee "$node_log"
node_rc=${PIPESTATUS[0]}
node_pass=$(grep -E '^# pass ' "$node_log" | awk '{print $3}' | tail -1)
node_fail=$(grep -E '^# fail ' "$node_log" | awk '{print $3}' | tail -1)

py_log=$(mktemp)
# --rootdir test/python: the repo root holds the zoo's __init__.py, and from the root pytest would import
# it as a package named after the clone's folder (which fails for a folder like "c-radio", not an identifier).
.venv/bin/python -m pytest test/python --rootdir test/python -q -rs -p no:cacheprovider 2>&1 | tee "$py_log"
py_rc=${PIPESTATUS[0]}
py_pass=$(grep -oE '[0-9]+ passed' "$py_log" | tail -1 | awk '{print $1}')
py_fail=$(grep -oE '[0-9]+ failed' "$py_log" | tail -1 | awk '{print $1}')
py_skip=$(grep -oE '[0-9]+ skipped' "$py_log" | tail -1 | awk '{print $1}')
py_err=$(grep -oE '[0-9]+ errors?' "$py_log" | tail -1 | awk '{print $1}')

passed=$(( ${node_pass:-0} + ${py_pass:-0} ))
failed=$(( ${node_fail:-0} + ${py_fail:-0} + ${py_err:-0} ))
echo "node: ${node_pass:-0} passed, ${node_fail:-0} failed (rc $node_rc); python: ${py_pass:-0} passed, ${py_fail:-0} failed, ${py_skip:-0} skipped (rc $py_rc)"
echo "all: $passed passed, $failed failed, ${py_skip:-0} skipped"
if [ "$node_rc" -ne 0 ] || [ "$py_rc" -ne 0 ] || [ "$passed" -eq 0 ]; then exit 1; fi
