#!/usr/bin/env bash
# The default's question on 3 training seeds: recipe=cpu then (DDPM, eps, cosine) against flow
# (rectified flow, logit-normal times), each on res_tiny for the formulations protocol's 2000
# steps (the 30 minutes of the 2-core CPU that ran experiments/formulations), FID of 2000
# samples at 50 calls of the default sampler measured by each run at its end. Then ddpm.compare
# groups the seeds, gives each FID its mean, std and 95% interval, and tests the difference
# paired by seed; its table is this folder's comparison.md.
#   bash experiments/cpu_recipe/seeds.sh          (about 11 min a run on the 2026-12-07 CPU)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-outputs/cpu_recipe/seeds}
python -m ddpm.run +experiment=formulations "+formulation=ddpm_eps,flow_logit_normal" \
  "trainer.seed=0,1,2" trainer.eval_every=2000 trainer.eval_samples=2000 logger=none \
  hydra.sweep.dir="$OUT"
python -m ddpm.compare sweep_dir="$OUT" out_dir=experiments/cpu_recipe
