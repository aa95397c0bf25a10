#!/usr/bin/env bash
# The protocol on a GPU: 2000 samples per setting (x_T and noise from seed + batch),
# every solver at 5-100 network calls on its plans, against 1000-step ancestral sampling, on
# the shared checkpoint (EMA weights) and on a second, longer-trained model trained here
# first (`recipe=fast`, 45 epochs, EMA: about twice the shared checkpoint's 22).
#   DDPM_DATA_ROOT=<mnist> bash experiments/sampler_quality/gpu.sh CHECKPOINT EVALUATOR_DIR OUT
# Scores use the project evaluator on the CPU; rows go to OUT/results_gpu.jsonl.
# SMOKE=1: 20 samples, two settings, a 2-step second model (try it on a CPU first).
set -euo pipefail
CKPT=$1; EVAL=$2; OUT=$3
mkdir -p "$OUT"
DEV=${DEVICE:-cuda}
COUNT=2000; BATCH=1000; EPOCHS=45
settings=("ddpm:steps=None")
for n in 5 10 20 50 100; do
  for sp in linspace leading trailing quadratic logsnr karras; do
    settings+=("dpm_solver_pp_sde:steps=$n,spacing=$sp")
  done
  for sp in linspace leading trailing logsnr; do settings+=("ddpm:steps=$n,spacing=$sp"); done
  for sp in linspace trailing logsnr; do
    settings+=("ddim:steps=$n,spacing=$sp" "dpm_solver_pp:steps=$n,spacing=$sp")
  done
  settings+=("dpm_solver_pp_3m:steps=$n,spacing=logsnr" "heun:steps=$(((n + 2) / 2)),spacing=karras")
done
if [[ ${SMOKE:-0} == 1 ]]; then
  COUNT=20; BATCH=20; settings=("ddpm:steps=5" "dpm_solver_pp_sde:steps=5,spacing=logsnr")
fi
# measure.py reuses stored images by setting, so each model gets its own --store.
M="python experiments/sampler_quality/measure.py --device $DEV --count $COUNT --batch $BATCH
   --evaluator-dir $EVAL --data-root $DDPM_DATA_ROOT"
$M --checkpoint "$CKPT" --store "$OUT/images_shared" --out "$OUT/results_gpu.jsonl" \
  --settings "${settings[@]}"
# The second model: recipe=ddpm (the default when this was measured), trained longer than the
# shared checkpoint.
if [[ ${SMOKE:-0} == 1 ]]; then LONG="trainer.max_steps=2"; else LONG="trainer.epochs=$EPOCHS"; fi
python -m ddpm.run recipe=ddpm $LONG trainer.max_minutes=null trainer.sample_every=0 \
  trainer.checkpoint_every=0 device=$DEV logger=none hydra.run.dir="$OUT/long" > "$OUT/long.log" 2>&1
$M --checkpoint "$OUT/long/checkpoints/last.pt" --store "$OUT/images_long" \
  --out "$OUT/results_gpu_long.jsonl" \
  --settings "${settings[@]}"
