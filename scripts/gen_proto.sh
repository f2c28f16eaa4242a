#!/usr/bin/env bash
# Generates engine/proto/engine_pb2.py, engine_pb2_grpc.py and engine_pb2.pyi from engine.proto.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m grpc_tools.protoc -I engine/proto \
  --python_out=engine/proto --pyi_out=engine/proto --grpc_python_out=engine/proto \
  engine/proto/engine.proto
# protoc writes a top-level import; the bindings live in the scaleserve.engine.proto package.
sed -i 's/^import engine_pb2 as engine__pb2$/from scaleserve.engine.proto import engine_pb2 as engine__pb2/' \
  engine/proto/engine_pb2_grpc.py
echo "generated engine/proto/engine_pb2*.py"
