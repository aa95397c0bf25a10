#!/usr/bin/env bash
# The recipe study's levers, one at a time and combined, against recipe=cpu (DDPM, eps, cosine,
# res_tiny, AdamW 1e-3, EMA 0.999): each setting trains the formulations protocol's 2000 steps
# (steps, not minutes: a busy machine cannot change a result) on the same training seeds, and
# each run measures FID of 2000 samples at 50 calls of the default sampler at its end. Then
# ddpm.compare tests every setting against the baseline, paired by seed; its table is
# levers.md in this folder.
#   SEEDS=0 bash experiments/cpu_recipe/levers.sh        (a screen: one seed per setting)
#   SEEDS=0,1,2 bash experiments/cpu_recipe/levers.sh    (the study: about 10 min a run)
# A setting is one line of LEVERS; re-running continues: finished jobs are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-outputs/cpu_recipe/levers}
SEEDS=${SEEDS:-0,1,2}
LEVERS=(
  ""                                                                   # the baseline
  "trainer.lr_schedule=linear trainer.lr_warmup_steps=100"             # decay to 0, warm-up
  "trainer.loss_weighting=soft_min_snr"                                # Crowson et al. 2024
  "optimizer.lr=2e-3 trainer.lr_schedule=linear trainer.lr_warmup_steps=100"
)
for lever in "${LEVERS[@]}"; do
  # shellcheck disable=SC2086  # a lever is several overrides
  python -m ddpm.run +experiment=formulations +formulation=ddpm_eps "trainer.seed=$SEEDS" \
    trainer.eval_every=2000 trainer.eval_samples=2000 logger=none hydra.sweep.dir="$OUT" $lever
done
python -m ddpm.compare sweep_dir="$OUT" out_dir=experiments/cpu_recipe/levers \
  baseline=base
