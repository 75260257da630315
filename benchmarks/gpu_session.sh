#!/usr/bin/env bash
# Every GPU benchmark the issues ask for, in one call of a short device lease (one H100/H200).
#
#   bash benchmarks/gpu_session.sh [SECONDS]          # GPU; default budget 540 s; results in benchmarks/results
#   bash benchmarks/gpu_session.sh --smoke [SECONDS]  # the same steps in their CPU smoke modes (results in /tmp)
#
# Steps run in priority order, each under its own time limit and never past the overall budget; a
# step that fails or runs out of time is logged and the next one starts. After every step the
# results so far are packed into $OUT/gpu_results.tgz (OUT is set on the device machine; else
# /tmp/gpu_session_out), so a call cut short still returns what finished. Python packages the
# machine lacks (monai, ignite, captum, pydicom, highdicom, DICOM codecs) are installed from the
# wheels in .whl/ when present (benchmarks/README.md says how to fetch them). DICOM inputs:
# $DICOM_DIR, else ../shared/data/dicom, else .devdata/dicom. PYTHON overrides the interpreter,
# GPU_SESSION_WORK the scratch folder (/tmp/cxrdoll_gpu_session).
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=""
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
BUDGET="${1:-540}"
START=$SECONDS
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-/tmp/gpu_session_out}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_session.log"
export PYTHONUNBUFFERED=1 PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ -d .whl ] && ! "$PY" -c "import monai, ignite, captum, pydicom, highdicom" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed" | tee -a "$LOG"; exit 1; }
fi
DICOM_DIR="${DICOM_DIR:-}"
for d in ../shared/data/dicom .devdata/dicom; do [ -z "$DICOM_DIR" ] && [ -d "$d" ] && DICOM_DIR="$d"; done
WORK="${GPU_SESSION_WORK:-/tmp/cxrdoll_gpu_session}"  # phantoms and training runs
if [ -n "$SMOKE" ]; then
  WORK="$WORK/smoke"  # a smoke call's small phantoms never meet the GPU call's on a warm machine
  RESULTS="$WORK/results"
  # IG on the tiny network, as the other smoke steps: ig_throughput's own --smoke keeps DenseNet121, whose
  # captum reference took 32 s of the step's 150 s on an idle 2-core CPU and ran out of it on a busy one.
  TRAIN=(--smoke) SEG=(--smoke) IG=(--smoke --network densenet_tiny) IG_TRAINED=(--smoke --network densenet_tiny --size 64)
  DICOM=(--smoke) QUALITY=(--arch densenet_tiny --image-size 64 --n 80 --schedule epochs --epochs 2 --val-interval 2)
else
  RESULTS=benchmarks/results
  TRAIN=(--num-workers 12) SEG=(--num-workers 12)
  IG=(--sweep --sweep-images 4 8 --sweep-precision fp32 tf32 bf16)
  IG_TRAINED=(--sweep --sweep-precision fp32 tf32 bf16)
  DICOM=(--device cuda)
  QUALITY=(--image-size 320 --schedule epochs --epochs 6 --val-interval 6 --batch-size 32 --num-workers 12 --synth-workers 14 --amp)
fi
mkdir -p "$RESULTS"

pack() {  # the results written so far in one file that comes back from the machine (the log is beside it)
  tar czf "$OUT_DIR/gpu_results.tgz" -C "$RESULTS" . 2>/dev/null
}

step() {  # step NAME LIMIT_S COMMAND...: run under min(LIMIT_S, what is left of the budget)
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - (SECONDS - START))) need=30
  # A script writes its results at its end: a step that needs its whole limit (WHOLE=1) is not started short.
  [ "${WHOLE:-}" = 1 ] && need=$limit
  if [ "$left" -lt "$need" ]; then echo "== $name: skipped, ${left}s of the budget left" | tee -a "$LOG"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s, at $((SECONDS - START))s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  echo "== $name: exit $? after $((SECONDS - t0))s" | tee -a "$LOG"
  pack
}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1;
  "$PY" -c "import torch, monai, captum; print('torch', torch.__version__, 'monai', monai.__version__, 'captum', captum.__version__, 'cuda', torch.cuda.is_available())"; } >>"$LOG" 2>&1

# Issue 3 first (the one GPU target still open that code can move): the pipeline against the bare step,
# both again with cuDNN autotuning (--cudnn_benchmark true; the bundles default to deterministic kernels),
# then where the pipeline's remaining time goes: the behaviour of the 0.744 run (MONAI's GradScaler kept for bf16,
# every handler reading the loss back each iteration, blocking host-to-device copies, gradients zeroed instead of
# released; the classifier's first handler is the one that drops the scaler), no
# pin-memory thread, and (after IG, segmentation and DICOM, if 200 s remain) torch.compile. Each also profiles a
# few iterations (device busy fraction); the first writes their Chrome traces beside the log
# (train_throughput_{bare,pipeline}.json.gz).
step train_throughput 150 "$PY" benchmarks/train_throughput.py "${TRAIN[@]}" --out "$RESULTS/train_throughput" \
  --trace "$OUT_DIR"
step train_throughput_autotune 100 "$PY" benchmarks/train_throughput.py "${TRAIN[@]}" --override cudnn_benchmark=true \
  --out "$RESULTS/train_throughput_autotune"
step train_throughput_before 100 "$PY" benchmarks/train_throughput.py "${TRAIN[@]}" --override log_every=1 \
  --override train#trainer#non_blocking=false --override train#trainer#optim_set_to_none=false \
  --override 'train#trainer#train_handlers=$@train#handlers[2:]' \
  --out "$RESULTS/train_throughput_before"
step train_throughput_nopin 100 "$PY" benchmarks/train_throughput.py "${TRAIN[@]}" \
  --override train#dataloader#pin_memory=false --out "$RESULTS/train_throughput_nopin"
step ig_throughput 150 "$PY" benchmarks/ig_throughput.py "${IG[@]}" --out "$RESULTS/ig_throughput.json"
step seg_throughput 150 "$PY" benchmarks/seg_throughput.py "${SEG[@]}" --out "$RESULTS/seg_throughput"
if [ -n "$DICOM_DIR" ]; then
  step dicom_latency 120 "$PY" benchmarks/dicom_latency.py "${DICOM[@]}" --in "$DICOM_DIR" --out "$RESULTS/dicom_latency_gpu"
else
  echo "== dicom_latency: skipped, no DICOM folder" | tee -a "$LOG"
fi
# torch.compile last of the training variants, and only with room for its compilation (about 200 s).
[ -z "$SMOKE" ] && WHOLE=1 step train_throughput_compile 200 "$PY" benchmarks/train_throughput.py "${TRAIN[@]}" \
  --compile --out "$RESULTS/train_throughput_compile"
# IG fidelity where it matters: a DenseNet121 trained on phantoms, explaining its own validation images.
step classifier_quality 150 "$PY" benchmarks/classifier_quality.py "${QUALITY[@]}" --synth-dir "$WORK/synth" \
  --budget-s 0 --out "$RESULTS/classifier_quality_gpu"
CKPT=$(ls "$WORK"/run_*/model.pt 2>/dev/null | head -1)
if [ -n "$CKPT" ]; then
  step ig_throughput_trained 200 "$PY" benchmarks/ig_throughput.py "${IG_TRAINED[@]}" --checkpoint "$CKPT" \
    --datalist "$WORK/synth/datalists/chexpert.json" --out "$RESULTS/ig_throughput_trained.json"
fi
echo "== done at $((SECONDS - START))s" | tee -a "$LOG"
pack
