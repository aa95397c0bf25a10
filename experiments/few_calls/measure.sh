#!/usr/bin/env bash
# FID of 500 samples (x_T seeds 0-4, batches of 100: the same x_T in every setting and as the
# 1000-step baseline in experiments/sampler_quality) for solver x plan at few calls, on the
# shared GPU-trained checkpoint. STAGE=fixed: fixed spacings at 5 and 10 calls; STAGE=curve:
# 1-50 calls; STAGE=fitted: plans from
# `python -m ddpm.plan` in $PLANS (default experiments/few_calls/plans/shared).
# One thread; images are kept under $STORE and reused. CKPT, OUT, STORE and SEED (the first
# batch's x_T seed) point it at another run, e.g. the README main recipe's run (flow.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
CKPT=${CKPT:-../shared/checkpoints/small-cosine-ema-22ep.pt}
PLANS=${PLANS:-experiments/few_calls/plans/shared}
OUT=${OUT:-experiments/few_calls/results.jsonl}
STORE=${STORE:-/tmp/few_calls}
N=${N:-500}
SEED=${SEED:-0}
run() {
  OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/sampler_quality/measure.py \
    --checkpoint "$CKPT" --count "$N" --batch 100 --seed "$SEED" --store "$STORE" --out "$OUT" \
    --data-root "${DDPM_DATA_ROOT:-../shared/data}" --settings "$@"
}
case ${STAGE:-fixed} in
baseline)  # 1000-step ancestral sampling: every ratio's denominator (500 x 1000 calls)
  run "ddpm:steps=None"
  ;;
fixed)
  run "dpm_solver_pp:steps=100,spacing=logsnr"    # the ODE itself: the floor of every ODE solver
  for n in 5 10; do
    for s in ipndm unipc dpm_solver_pp dpm_solver_pp_3m; do
      run "$s:steps=$n,spacing=logsnr" "$s:steps=$n,spacing=karras"
    done
    run "ddim:steps=$n,spacing=logsnr" "dpm_solver_pp_sde:steps=$n,spacing=leading" \
        "dpm_solver_pp_sde:steps=$n,spacing=trailing"
  done
  ;;
curve)   # the rest of the FID-vs-calls curve: 1, 2, 4, 20 and 50 calls
  for n in 1 2 4 20; do
    run "unipc:steps=$n,spacing=karras" "dpm_solver_pp_3m:steps=$n,spacing=karras" \
        "dpm_solver_pp_sde:steps=$n,spacing=leading"
  done
  for n in 1 2 4 20; do   # the presets' plans (ode10: 2M on Karras; nfe5/nfe10: SDE trailing)
    run "dpm_solver_pp:steps=$n,spacing=karras" "dpm_solver_pp_sde:steps=$n,spacing=trailing"
  done
  run "dpm_solver_pp_sde:steps=50,spacing=logsnr" "dpm_solver_pp_3m:steps=50,spacing=karras"
  ;;
fitted)
  for f in "$PLANS"/*.json; do
    s=$(basename "$f" .json); s=${s%_nfe*}
    run "$s:plan=$f" "dpm_solver_pp_sde:plan=$f"
  done
  ;;
esac
