#!/usr/bin/env bash
# Regenerates proto/descriptors.binpb (a FileDescriptorSet) from the .proto files. The Python
# client builds its message classes from it at run time, which works with any protobuf 4.x–7.x
# runtime (generated _pb2 modules are tied to the protobuf version that generated them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"${PYTHON:-.venv/bin/python}" -m grpc_tools.protoc -Iproto --include_imports \
  --descriptor_set_out=proto/descriptors.binpb \
  proto/radio/v1/radio.proto proto/grpc/health/v1/health.proto
