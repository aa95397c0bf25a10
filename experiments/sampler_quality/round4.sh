#!/bin/sh
# Seed noise: the default and ancestral-50 again at 500 samples on other x_T (seed 1000).
set -e
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 PYTHONPATH=. DDPM_DATA_ROOT=/work/shared/data
/work/main/.venv/bin/python experiments/sampler_quality/measure.py --count 500 --batch 100 \
  --seed 1000 --settings "dpm_solver_pp_sde:steps=50,spacing=logsnr" "ddpm:steps=50,spacing=linspace"
