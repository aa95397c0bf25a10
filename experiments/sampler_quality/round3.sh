#!/bin/sh
# After the 1000-step baseline (500 images): its first 200 images scored alone (same seeds as
# the 200-image rounds), the front-runners at 500 images, Heun again (after its sigma_max fix),
# and the ranking check on the raw (non-EMA) weights at 200 images.
set -e
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 PYTHONPATH=. DDPM_DATA_ROOT=/work/shared/data
P=/work/main/.venv/bin/python
M="$P experiments/sampler_quality/measure.py --batch 100"
$M --count 200 --subset-of 500 --settings "ddpm:steps=None"
$M --count 500 --settings \
  "dpm_solver_pp_sde:steps=10,spacing=leading" "dpm_solver_pp_sde:steps=10,spacing=linspace" \
  "dpm_solver_pp_sde:steps=20,spacing=linspace" "dpm_solver_pp_sde:steps=20,spacing=leading" \
  "ddpm:steps=20,spacing=linspace" "dpm_solver_pp_sde:steps=50,spacing=logsnr" \
  "ddpm:steps=50,spacing=linspace" "dpm_solver_pp_sde:steps=50,spacing=karras"
$M --count 200 --settings \
  "heun:steps=6,spacing=karras" "heun:steps=11,spacing=karras" "heun:steps=26,spacing=karras" \
  "heun:steps=6,spacing=karras,churn=2" "heun:steps=11,spacing=karras,churn=2" \
  "heun:steps=11,spacing=linspace,churn=2"
$M --count 200 --weights model --settings \
  "dpm_solver_pp_sde:steps=10,spacing=leading" "dpm_solver_pp_sde:steps=10,spacing=linspace" \
  "dpm_solver_pp_sde:steps=20,spacing=linspace" "ddpm:steps=20,spacing=linspace" \
  "dpm_solver_pp:steps=20,spacing=logsnr" "dpm_solver_pp:steps=20,spacing=linspace" \
  "dpm_solver_pp_3m:steps=20,spacing=logsnr" "ddim:steps=50,spacing=linspace" \
  "dpm_solver_pp_sde:steps=50,spacing=logsnr" "ddpm:steps=50,spacing=linspace" \
  "heun:steps=11,spacing=karras,churn=2"
$M --count 200 --weights model --settings "ddpm:steps=None"
