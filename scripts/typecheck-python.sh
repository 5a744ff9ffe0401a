#!/usr/bin/env bash
# mypy over what users run: the zoo package FiftyOne imports (__init__.py, zoo.py, client/).
# FiftyOne imports the repository's folder as a package, and the folder's name need not be an
# identifier ("c-radio"), so mypy reads it through a link named radio_zoo. Libraries without type
# information (grpc, fiftyone) are taken as Any.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
ln -s "$ROOT" "$tmp/radio_zoo"
cd "$tmp"
"$ROOT/.venv/bin/mypy" --ignore-missing-imports --cache-dir "$ROOT/.cache/mypy" -m radio_zoo -m radio_zoo.zoo -p radio_zoo.client
