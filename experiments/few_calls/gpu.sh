#!/usr/bin/env bash
# The 2000-sample version of this experiment on a GPU: fit plans with `python -m ddpm.plan`
# (ipndm, unipc, dpm_solver_pp_3m at 2, 4, 5, 10 calls), then FID of 2000 samples for every
# solver on its fixed and fitted plans at 1-50 calls, the SDE on the fitted plans, and the
# 1000-step ancestral baseline, on the shared checkpoint (EMA weights).
#   DDPM_DATA_ROOT=<mnist> bash experiments/few_calls/gpu.sh CHECKPOINT EVALUATOR_DIR OUT
# SMOKE=1: 20 samples, one fit, two settings (try it on a CPU first with DEVICE=cpu).
set -euo pipefail
cd "$(dirname "$0")/../.."
CKPT=$1; EVAL=$2; OUT=$3
mkdir -p "$OUT/plans"
DEV=${DEVICE:-cuda}
COUNT=2000; BATCH=1000; SOLVERS="ipndm unipc dpm_solver_pp_3m"; NFES="2 4 5 10"
if [[ ${SMOKE:-0} == 1 ]]; then COUNT=20; BATCH=20; SOLVERS=ipndm; NFES=2; fi
FIT="num=512 num_check=256 refine=2"
if [[ ${SMOKE:-0} == 1 ]]; then FIT="num=8 num_check=4 refine=0 reference_steps=20"; fi
for s in $SOLVERS; do for n in $NFES; do
  python -m ddpm.plan checkpoint="$CKPT" sampler="$s" nfe="$n" device="$DEV" $FIT \
    out="$OUT/plans/${s}_nfe$n.json" > "$OUT/plan_${s}_$n.log" 2>&1
done; done
settings=("ddpm:steps=None")
for n in 1 2 4 5 10 20 50; do
  for s in ipndm unipc dpm_solver_pp dpm_solver_pp_3m; do
    settings+=("$s:steps=$n,spacing=logsnr" "$s:steps=$n,spacing=karras")
  done
  settings+=("dpm_solver_pp_sde:steps=$n,spacing=leading" "dpm_solver_pp_sde:steps=$n,spacing=logsnr")
done
for f in "$OUT"/plans/*.json; do
  s=$(basename "$f" .json); settings+=("${s%_nfe*}:plan=$f" "dpm_solver_pp_sde:plan=$f")
done
if [[ ${SMOKE:-0} == 1 ]]; then settings=("ipndm:steps=2" "ipndm:plan=$OUT/plans/ipndm_nfe2.json"); fi
python experiments/sampler_quality/measure.py --device "$DEV" --count $COUNT --batch $BATCH \
  --evaluator-dir "$EVAL" --data-root "$DDPM_DATA_ROOT" --checkpoint "$CKPT" \
  --store "$OUT/images" --out "$OUT/results_gpu.jsonl" --settings "${settings[@]}"
