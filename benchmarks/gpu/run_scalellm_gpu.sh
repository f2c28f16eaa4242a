#!/usr/bin/env bash
# The ScaleLLM comparison on one NVIDIA GPU (written for one H100 80GB): the same driver as on
# the CPU (benchmarks/scalellm.py: vLLM's OpenAI server, vllm-router, sglang-router,
# scaleserve), with the official vLLM CUDA wheel and a random-weight model of Llama-3-8B's
# size (benchmarks/gpu/make_random_llama.py), bf16.
#
#   bash benchmarks/gpu/run_scalellm_gpu.sh                 # full run
#   QUICK=1 bash benchmarks/gpu/run_scalellm_gpu.sh         # smoke run
#
# Results: benchmarks/results/gpu/scalellm.{json,md}, scalellm_latency.png,
# scalellm_throughput.png, plus hardware.txt (nvidia-smi, CPU, date). Commit them with the
# date and GPU in the message.
#
# One GPU holds one vLLM server and one scaleserve engine at a time (each
# --gpu-memory-utilization 0.42: 16 GB of weights plus KV cache), so the GPU run is the
# one-replica phase; the two-replica phase needs two GPUs (REPLICAS=1,2 with
# CUDA_VISIBLE_DEVICES covering them is not wired here: engines would share GPU 0).
# Only one stack sends load at a time (the driver interleaves them), so the idle engine
# costs memory, not compute.
set -euo pipefail
cd "$(dirname "$0")/../.."

VLLM_VERSION=${VLLM_VERSION:-0.32.0}   # the GPU engine image's vLLM (images/engine.Dockerfile)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-$HOME/.cache/scaleserve/venv-gpu-vllm-$VLLM_VERSION}
MODEL_DIR=${MODEL_DIR:-$HOME/.cache/scaleserve/models/random-llama-3-8b}
OUT=${OUT:-benchmarks/results/gpu}
LEVELS=${LEVELS:-1,2,4,8,16,32,64,128}
MAX_TOKENS=${MAX_TOKENS:-256}
GPU_MEM=${GPU_MEM:-0.42}

command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: this script needs an NVIDIA GPU" >&2; exit 1; }
nvidia-smi -L

if [ ! -f "$VENV/.complete" ]; then
  echo "==> virtual environment $VENV: vllm==$VLLM_VERSION (CUDA wheel) and the project"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install "vllm==$VLLM_VERSION"
  # the engine's and gateway's needs beyond vLLM's set, as the GPU engine image installs them
  # (images/engine.Dockerfile), plus the driver's plotting
  "$VENV/bin/python" -m pip install -r images/requirements/engine.txt \
    -r images/requirements/gateway.txt matplotlib aiohttp
  "$VENV/bin/python" -m pip install --no-deps -r requirements/bench.txt
  touch "$VENV/.complete"
fi
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .

echo "==> random-weight Llama-3-8B-size model in $MODEL_DIR"
"$VENV/bin/python" benchmarks/gpu/make_random_llama.py "$MODEL_DIR" --config llama-3-8b

mkdir -p "$OUT"
{
  echo "date: $(date -Iseconds)"
  echo "host: $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
  echo "vllm: $("$VENV/bin/python" -c 'import vllm; print(vllm.__version__)')"
} | tee "$OUT/hardware.txt"

args=(--model "$MODEL_DIR" --dtype bfloat16 --max-model-len 4096 --max-num-seqs 256
      --gpu-memory-utilization "$GPU_MEM" --replicas 1 --out-dir "$OUT"
      --log-dir /tmp/scaleserve-scalellm-gpu-logs)
if [ -n "${QUICK:-}" ]; then
  args+=(--quick --max-tokens 64)
else
  args+=(--concurrency "$LEVELS" --max-tokens "$MAX_TOKENS" --rounds 2 --min-requests 32)
fi
# PATH: the routers' console scripts and the engines' interpreter come from this venv
PATH="$VENV/bin:$PATH" "$VENV/bin/python" benchmarks/scalellm.py "${args[@]}"
echo "==> results in $OUT (hardware and date in $OUT/hardware.txt)"
