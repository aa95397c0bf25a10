#!/usr/bin/env bash
# The recipe study's levers against recipe=cpu (DDPM, eps, cosine, res_tiny, AdamW 1e-3, EMA
# 0.999), on the same three training seeds, each setting for the formulations protocol's 2000
# steps (steps, not minutes: a busy machine cannot change a result), FID of 2000 samples at 50
# calls of the default sampler measured by each run at its end.
#   1. the baseline;
#   2. the learning rate warmed up over 100 steps and decayed linearly to 0 at the last step,
#      with EDM2's post-hoc EMA profiles stored (sigma_rel 0.05 and 0.10, every 100 steps);
#   3. the same runs' post-hoc EMA: its length chosen on seed 0 (1000 samples, x_T seed 1,
#      apart from the measurement's), then FID of 2000 samples for every seed at that length.
# levers_report.py then tests each setting against the baseline, paired by seed, and writes
# levers.md. Re-running continues: finished jobs are skipped, evaluations redone.
#   bash experiments/cpu_recipe/levers.sh          (about 10 min a run on a quiet 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-outputs/cpu_recipe/levers}
RUNS=(+experiment=formulations +formulation=ddpm_eps "trainer.seed=0,1,2" trainer.eval_every=2000
      trainer.eval_samples=2000 logger=none hydra.sweep.dir="$OUT")
LEVER=(trainer.lr_schedule=linear trainer.lr_warmup_steps=100 "trainer.posthoc_ema_stds=[0.05,0.1]"
       trainer.posthoc_ema_every=100)
python -m ddpm.run "${RUNS[@]}"
python -m ddpm.run "${RUNS[@]}" "${LEVER[@]}"
lever_run() { ls -d "$OUT"/*trainer.lr_schedule=linear*trainer.seed="$1"; }
python -m ddpm.evaluate -m run_dir="$(lever_run 0)" num_samples=1000 seed=1 wandb=false \
  posthoc_ema=0.03,0.05,0.08,0.12
BEST=$(python experiments/cpu_recipe/levers_report.py "$OUT" --best-length)
for seed in 0 1 2; do
  python -m ddpm.evaluate run_dir="$(lever_run $seed)" num_samples=2000 wandb=false \
    posthoc_ema="$BEST"
done
python experiments/cpu_recipe/levers_report.py "$OUT" > experiments/cpu_recipe/levers.md

# A screen on one seed (FLOW_SEEDS=0; a win needs 3): flow matching (recipe=flow) with its
# noise paired to the images by mini-batch optimal transport, against plain recipe=flow.
FLOW=(+experiment=formulations +formulation=flow_logit_normal "trainer.seed=${FLOW_SEEDS:-0}"
      trainer.eval_every=2000 trainer.eval_samples=2000 logger=none hydra.sweep.dir="$OUT/flow")
python -m ddpm.run "${FLOW[@]}"
python -m ddpm.run "${FLOW[@]}" process.pairing=ot
