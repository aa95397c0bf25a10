#!/bin/sh
# Ranking round 2: 200 images per setting (same x_T as round 1), EMA weights: 50 and 5 calls,
# 3M, Heun (+churn), DDIM, beta variance, x0 handling, 100 calls.
set -e
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 PYTHONPATH=. DDPM_DATA_ROOT=/work/shared/data
M="/work/main/.venv/bin/python experiments/sampler_quality/measure.py --count 200 --batch 100"
$M --settings \
  "dpm_solver_pp_sde:steps=5,spacing=linspace" "dpm_solver_pp_sde:steps=5,spacing=trailing" \
  "dpm_solver_pp_sde:steps=5,spacing=karras" "ddpm:steps=5,spacing=trailing" \
  "ddpm:steps=5,spacing=linspace" "dpm_solver_pp:steps=5,spacing=karras" \
  "dpm_solver_pp_3m:steps=10,spacing=karras" "dpm_solver_pp_3m:steps=20,spacing=karras" \
  "dpm_solver_pp_3m:steps=10,spacing=logsnr" "dpm_solver_pp_3m:steps=20,spacing=logsnr" \
  "heun:steps=5,spacing=karras" "heun:steps=10,spacing=karras" \
  "heun:steps=5,spacing=karras,churn=2" "heun:steps=10,spacing=karras,churn=2" \
  "ddpm:steps=10,spacing=trailing,variance=beta" "ddpm:steps=20,spacing=trailing,variance=beta" \
  "ddim:steps=20,spacing=logsnr,eta=0.5" "ddim:steps=20,spacing=trailing,eta=0.5" \
  "dpm_solver_pp_sde:steps=20,spacing=trailing,dynamic_threshold=0.995" \
  "dpm_solver_pp_sde:steps=20,spacing=trailing,clip_x0=False" \
  "dpm_solver_pp_sde:steps=20,spacing=trailing,final_step=full_order" \
  "dpm_solver_pp_sde:steps=50,spacing=trailing" "dpm_solver_pp_sde:steps=50,spacing=linspace" \
  "dpm_solver_pp_sde:steps=50,spacing=karras" "dpm_solver_pp_sde:steps=50,spacing=logsnr" \
  "ddpm:steps=50,spacing=linspace" "ddpm:steps=50,spacing=trailing" \
  "ddpm:steps=50,spacing=trailing,variance=beta" "dpm_solver_pp:steps=50,spacing=logsnr" \
  "ddim:steps=50,spacing=linspace" "dpm_solver_pp:steps=20,spacing=linspace,final_step=full_order" \
  "dpm_solver_pp_sde:steps=100,spacing=trailing" "ddpm:steps=100,spacing=linspace"
