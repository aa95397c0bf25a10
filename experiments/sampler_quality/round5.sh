#!/bin/sh
# The 1000-step baseline on the second set of x_T (seed 1000), 200 images, against the first 200
# of the default's seed-1000 run: a second paired comparison (FID at 500 samples moved by 19 FID
# between the two x_T sets for the same sampler).
set -e
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 PYTHONPATH=. DDPM_DATA_ROOT=/work/shared/data
M="/work/main/.venv/bin/python experiments/sampler_quality/measure.py --batch 100 --seed 1000"
$M --count 200 --subset-of 500 --settings "dpm_solver_pp_sde:steps=50,spacing=logsnr" \
  "ddpm:steps=50,spacing=linspace"
$M --count 200 --settings "ddpm:steps=None"
