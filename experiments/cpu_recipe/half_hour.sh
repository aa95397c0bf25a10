#!/usr/bin/env bash
# The default's half hour (README sections 5 and 6).
#   5. recipe=cpu for the steps its 30 minutes made on a quiet CPU (6745: levers.sh's last run,
#      seed 0), on training seeds 1 and 2, measuring FID of 2000 samples every 1500 steps and
#      at the end; recipe=ddpm (the old default) for 3400 steps of 128, its 30 minutes on the
#      CPU of 2026-12-08 (2031 steps took 17.9 minutes there at 242 images/s, where
#      experiments/formulations' CPU made 2031 in 30), measuring every 500. Steps, not minutes, so a busy machine
#      changes the clock, not the result; ddpm.compare draws each run's FID against its
#      training minutes (comparison.png beside this script, half_hour/). The three 30-minute
#      runs of recipe=cpu and recipe=ddpm's are measured again on the second evaluator (the
#      same samples).
#   6. the declared spacing study: the default sampler (dpm_solver_pp_sde, 50 calls) on the
#      plans karras, linspace and quadratic against its own logsnr, each by ddpm.evaluate on
#      recipe=cpu's five runs of section 4 (seeds 0-4, 4000 steps), x_T seed = training seed
#      + 1; the winner, if any, again on the three 30-minute runs.
# half_hour_report.py writes half_hour.md. Finished runs are skipped (resume=auto).
#   bash experiments/cpu_recipe/half_hour.sh    (about 45 min a run with its evaluations)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-outputs/cpu_recipe/half_hour}
LEVERS=${LEVERS:-outputs/cpu_recipe/levers}
SECOND=${SECOND:-$HOME/.cache/ddpm/evaluator_second}
EVERY=(trainer.max_minutes=null trainer.eval_samples=2000 trainer.sample_every=0 logger=none)
for seed in 1 2; do
  python -m ddpm.run trainer.max_steps=6745 trainer.eval_every=1500 "${EVERY[@]}" \
    trainer.seed=$seed hydra.run.dir="$OUT/recipe_cpu_seed$seed"
done
python -m ddpm.run recipe=ddpm trainer.max_steps=3400 trainer.eval_every=500 "${EVERY[@]}" \
  trainer.seed=0 hydra.run.dir="$OUT/recipe_ddpm_seed0"
python -m ddpm.compare sweep_dir="$OUT" out_dir=experiments/cpu_recipe/half_hour
HALF=("$LEVERS/default_30min" "$OUT/recipe_cpu_seed1" "$OUT/recipe_cpu_seed2")
for seed in 0 1 2; do
  python -m ddpm.evaluate "run_dir='${HALF[$seed]}'" num_samples=2000 seed=$((seed + 1)) \
    wandb=false evaluator_dir="$SECOND" "out_dir='${HALF[$seed]}/eval_second'"
done
python -m ddpm.evaluate "run_dir='$OUT/recipe_ddpm_seed0'" num_samples=2000 seed=1 wandb=false \
  evaluator_dir="$SECOND" "out_dir='$OUT/recipe_ddpm_seed0/eval_second'"
for seed in 0 1 2 3 4; do
  run=$(ls -d "$LEVERS"/flow_batch/*trainer.seed=$seed)
  for spacing in logsnr karras linspace quadratic; do
    python -m ddpm.evaluate "run_dir='$run'" num_samples=2000 seed=$((seed + 1)) wandb=false \
      sampler.spacing=$spacing "out_dir='$run/eval_spacing_$spacing'"
  done
done
BEST=$(python experiments/cpu_recipe/half_hour_report.py "$OUT" "$LEVERS" --winner)
if [ -n "$BEST" ]; then
  for seed in 0 1 2; do
    python -m ddpm.evaluate "run_dir='${HALF[$seed]}'" num_samples=2000 seed=$((seed + 1)) \
      wandb=false sampler.spacing="$BEST" "out_dir='${HALF[$seed]}/eval_spacing_$BEST'"
  done
fi
python experiments/cpu_recipe/half_hour_report.py "$OUT" "$LEVERS" > experiments/cpu_recipe/half_hour.md
