#!/bin/sh
# Ranking round: 200 images per setting (same x_T), NFE ~10 and ~20, EMA weights.
set -e
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 PYTHONPATH=. DDPM_DATA_ROOT=/work/shared/data
M="/work/main/.venv/bin/python experiments/sampler_quality/measure.py --count 200 --batch 100"
for n in 10 20; do
  for sp in logsnr karras linspace quadratic trailing leading; do
    $M --settings "dpm_solver_pp:steps=$n,spacing=$sp" "dpm_solver_pp_sde:steps=$n,spacing=$sp" "ddpm:steps=$n,spacing=$sp"
  done
done
