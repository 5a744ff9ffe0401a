#!/usr/bin/env bash
# GPU benchmark for one lent H100 / H200 (≤ 8 minutes). Same cases as bench/run.py at 512², fp16/bf16:
#   H-shaped and SO400M-shaped random models, batch sizes 1, 4, 16;
#   reports images/s, p50/p95 latency, GPU utilisation (nvidia-smi, 100 ms samples) and model FLOP
#   utilisation (MFU) against the card's dense bf16/fp16 peak (--peak-tflops, default 989 for
#   H100/H200 SXM).
#
#   bash bench/gpu.sh            # writes $OUT/gpu-report.md (or bench/out/gpu/) and prints it
#
# Knobs (environment): PYTHON (python3), PEAK_TFLOPS (989), PRESETS ("h so400m"), IMAGES (64),
# DEVICE (cuda; "cpu" only to dry-run the script's logic on a machine without a GPU).
#
# What runs depends on what the machine has; the script checks and prints exactly what is missing:
#   - torch with CUDA (always expected): a.loop (reference-style, one image at a time, fp32 weights
#     + bf16 autocast), b (torch batched, reference ops, bf16 weights), b′ (batched, fused SDPA /
#     LayerNorm / GELU, bf16) on random weights made in GPU memory (no checkpoint file needed).
#   - Node >= 20, node_modules with onnxruntime-node's CUDA EP binaries, server/dist: c (bare ORT,
#     fp16 graph on the CUDA EP) and d (the sidecar over gRPC, --provider cuda).
#   - FiftyOne importable as well: a.emb and e (compute_embeddings / apply_model through the zoo model).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
DEST="${OUT:-$ROOT/bench/out/gpu}"
mkdir -p "$DEST"
LOG="$DEST/gpu-log.txt"
: > "$LOG"
say() { echo "$@" | tee -a "$LOG"; }
START=$(date +%s)

say "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>&1 | tee -a "$LOG"
say "cpu: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(free -g | awk '/Mem:/{print $2}') GiB RAM"

# ---- what is here ---------------------------------------------------------------------------
MISSING=()
$PY - <<'EOF' 2>&1 | tee -a "$LOG"
import importlib
for mod in ("torch", "numpy", "PIL", "onnxruntime", "fiftyone", "grpc", "matplotlib"):
    try:
        m = importlib.import_module(mod)
        extra = ""
        if mod == "torch":
            extra = f" cuda={m.version.cuda} available={m.cuda.is_available()} bf16={m.cuda.is_available() and m.cuda.is_bf16_supported()}"
        if mod == "onnxruntime":
            extra = f" providers={m.get_available_providers()}"
        print(f"python: {mod} {getattr(m, '__version__', '?')}{extra}")
    except Exception as e:
        print(f"python: {mod} MISSING ({type(e).__name__}: {e})")
EOF
DEVICE="${DEVICE:-cuda}"
PROVIDER=cuda; TAG=gpu
# A dry run on a CPU-only machine must not overwrite the GPU plot in docs/images.
[ "$DEVICE" = cpu ] && { PROVIDER=cpu; TAG=gpu-dryrun; }
if [ "$DEVICE" != cpu ]; then
  $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
    || { say "FATAL: torch with CUDA is not importable by $PY: nothing to run"; exit 1; }
fi
$PY -c "import PIL, numpy" 2>/dev/null || { say "FATAL: pillow / numpy missing for $PY"; exit 1; }

NODE_OK=1
if ! command -v node >/dev/null; then
  MISSING+=("node: Node.js >= 20 is not on PATH (the sidecar, the compiler and path c need it)"); NODE_OK=0
else
  say "node: $(node --version)"
  [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ] || { MISSING+=("node: $(node --version) is older than 20"); NODE_OK=0; }
fi
if [ ! -d node_modules/onnxruntime-node ]; then
  MISSING+=("node_modules/onnxruntime-node: not installed (npm ci; ~300 MB, more than the 64 MiB a device call carries, and no registry is reachable there)"); NODE_OK=0
else
  EP_DIR=$(ls -d node_modules/onnxruntime-node/bin/napi-v*/linux/x64 2>/dev/null | head -1)
  if [ "$PROVIDER" = cuda ] && ! ls "$EP_DIR"/libonnxruntime_providers_cuda.so >/dev/null 2>&1; then
    MISSING+=("onnxruntime-node CUDA EP: $EP_DIR/libonnxruntime_providers_cuda.so (+ libonnxruntime_providers_shared.so) absent; onnxruntime-node's install script downloads them from NuGet (ONNXRUNTIME_NODE_INSTALL=cuda12) and they need CUDA 12 + cuDNN 9 runtime libraries (libcublasLt.so.12, libcudnn.so.9)"); NODE_OK=0
  fi
fi
[ -f server/dist/cli.js ] || { MISSING+=("server/dist/cli.js: the sidecar is not built (npm run build)"); NODE_OK=0; }
FO_OK=1
$PY -c "import fiftyone" >/dev/null 2>&1 || { MISSING+=("python: fiftyone (paths a.emb / e through FiftyOne; pip install fiftyone, needs its bundled mongod)"); FO_OK=0; }
$PY -c "import grpc, google.protobuf" >/dev/null 2>&1 || { MISSING+=("python: grpcio / protobuf (the zoo client, paths d / e)"); FO_OK=0; }

if [ "$NODE_OK" = 1 ]; then
  # The EP library can be present and still fail to load (CUDA / cuDNN major versions): try it.
  say "== trying onnxruntime-node's $PROVIDER execution provider on a tiny fp16 graph"
  TMP=$(mktemp -d)
  if node server/dist/cli.js make-checkpoint --preset tiny --out "$TMP/ckpt" >>"$LOG" 2>&1 \
     && node server/dist/cli.js compile --checkpoint "$TMP/ckpt" --out "$TMP/g" --precision fp16 >>"$LOG" 2>&1 \
     && $PY -c "import numpy as np; np.save('$TMP/x.npy', np.random.rand(1,3,224,224).astype('float32'))" \
     && timeout 120 node server/dist/cli.js run --model-dir "$TMP/g" --input "$TMP/x.npy" --out-dir "$TMP/o" --provider "$PROVIDER" >>"$LOG" 2>&1; then
    say "onnxruntime-node $PROVIDER EP: works"
  else
    MISSING+=("onnxruntime-node CUDA EP: present but a session on it failed (see $LOG: usually CUDA 12 / cuDNN 9 libraries missing on a CUDA 13 image)"); NODE_OK=0
  fi
  rm -rf "$TMP"
fi

say "== missing (paths that cannot run here)"
if [ ${#MISSING[@]} -eq 0 ]; then say "  nothing"; else for m in "${MISSING[@]}"; do say "  - $m"; done; fi

# ---- the runs -------------------------------------------------------------------------------
# Sized for ≤ 8 min: 64 images per path per round, 2 rounds + 1 warm-up round; H and SO400M at 512².
PRESET_ARGS=(); for p in ${PRESETS:-h so400m}; do PRESET_ARGS+=(--preset "$p"); done
COMMON=(--res 512 --images "${IMAGES:-64}" --batches 1,4,16 --bf-batches 1,4,16 --rounds 2 --device "$DEVICE" --threads 0 --prep-threads 8
        --peak-tflops "${PEAK_TFLOPS:-989}" --no-workers-rss --no-doc --max-wait 5 --retries 0)
if [ "$NODE_OK" = 1 ] && [ "$FO_OK" = 1 ]; then
  PATHS="a.emb,b,bf,c,d,e.emb,e.heat"; EXTRA=(--provider "$PROVIDER" --precision fp16)
elif [ "$NODE_OK" = 1 ]; then
  PATHS="a.loop,b,bf,c,d"; EXTRA=(--provider "$PROVIDER" --precision fp16)
  say "running without FiftyOne: a.loop stands in for a, no e"
else
  PATHS="a.loop,b,bf"; EXTRA=(--synthetic)
  say "running the torch paths only (a.loop reference-style vs b / b′ torch batched, bf16), random weights made on the GPU"
fi
say "== bench/run.py ${PRESET_ARGS[*]} ${COMMON[*]} --paths $PATHS ${EXTRA[*]}"
RADIO_BENCH_CACHE="${RADIO_BENCH_CACHE:-/tmp/radio-bench}" timeout 420 "$PY" bench/run.py "${PRESET_ARGS[@]}" \
  "${COMMON[@]}" --paths "$PATHS" "${EXTRA[@]}" --warmup-rounds 1 --tag "$TAG" 2>&1 | tee -a "$LOG"
RC=${PIPESTATUS[0]}
cp "bench/out/$TAG/report.md" "$DEST/gpu-report.md" 2>/dev/null
cp "bench/out/$TAG/results.json" "$DEST/gpu-results.json" 2>/dev/null
if [ "$TAG" = gpu ]; then cp docs/images/bench-throughput-gpu.png "$DEST/" 2>/dev/null
else cp "bench/out/$TAG/bench-throughput.png" "$DEST/bench-throughput-gpu.png" 2>/dev/null; fi
say "== done in $(( $(date +%s) - START )) s (exit $RC); report: $DEST/gpu-report.md"
if [ ${#MISSING[@]} -gt 0 ]; then say "missing:"; for m in "${MISSING[@]}"; do say "  - $m"; done; fi
exit "$RC"
