#!/usr/bin/env bash
# The model zoo's CPU figures, one job at a time on an otherwise idle machine (two jobs on
# two cores slow each other far more than 2x): the step's speed per network, then 30 minutes
# of training per network with recipe=fast's other settings (DDPM, as measured: the default
# recipe trains rectified flow since experiments/formulations), then FID of 2000 samples each.
#   DDPM_DATA_ROOT=../shared/data bash experiments/model_zoo/cpu.sh [outputs/model_zoo]
set -euo pipefail
OUT=${1:-outputs/model_zoo}
mkdir -p "$OUT"
for m in small res_tiny res_small base; do
  python -m ddpm.bench model=$m "bench.variants=[fp32,compiled]" logger=none \
    out_dir="$OUT/bench_$m" > "$OUT/bench_$m.log" 2>&1
done
B="recipe=ddpm trainer.max_minutes=30 trainer.sample_every=0 trainer.checkpoint_every=0 logger=none"
python -m ddpm.run $B hydra.run.dir="$OUT/small" > "$OUT/train_small.log" 2>&1
for m in res_tiny res_small; do
  python -m ddpm.run model=$m model.dropout=0 $B hydra.run.dir="$OUT/$m" > "$OUT/train_$m.log" 2>&1
done
for m in small res_tiny res_small; do
  python -m ddpm.evaluate run_dir="$OUT/$m" num_samples=2000 progress=false \
    > "$OUT/eval_$m.log" 2>&1
done
