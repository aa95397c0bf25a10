#!/usr/bin/env bash
# The model zoo's GPU figures, in parts that each fit one short call on a lent GPU machine:
#   bash experiments/model_zoo/gpu.sh bench  OUT   # step variants, base at 128 and 512 (~7 min)
#   bash experiments/model_zoo/gpu.sh curve  OUT   # 2 epochs eager fp32 vs best variant (~2 min)
#   bash experiments/model_zoo/gpu.sh jobs   OUT   # total images/s of 1, 2 and 4 jobs (~3 min)
#   bash experiments/model_zoo/gpu.sh recipe OUT   # recipe=gpu, 10 min + FID of 2000 (~12 min)
# Needs DDPM_DATA_ROOT (MNIST) and the package importable; logs and JSON go to OUT.
# SMOKE=1 shrinks every part to seconds so it can be tried on a CPU first.
set -euo pipefail
PART=$1
OUT=${2:-outputs/model_zoo_gpu}
mkdir -p "$OUT"
DEV=${DEVICE:-cuda}
if [[ ${SMOKE:-0} == 1 ]]; then
  STEPS=3; EPOCH_STEPS=4; JOB_STEPS=4; MINUTES=0.05; SAMPLES=20
  RUNS="small:128:[fp32]"; RECIPE="trainer.compile=false trainer.precision=fp32"
  FAST="trainer.precision=bf16 trainer.compile=false"
else
  STEPS=100; EPOCH_STEPS=938; JOB_STEPS=3000; MINUTES=10; SAMPLES=2000
  ALL="[fp32,bf16,compiled,bf16_compiled,graphed]"
  RUNS="base:128:$ALL base:512:$ALL res_base:256:[fp32,bf16,graphed]"
  RECIPE=""; FAST="trainer.precision=bf16 trainer.compile=reduce-overhead"
fi
COMMON="device=$DEV logger=none"

case $PART in
bench)
  # model:batch:variants (every compiled variant pays its compile time, ~1 min each)
  for run in $RUNS; do
    IFS=: read -r m b v <<< "$run"
    python -m ddpm.bench model=$m trainer.batch_size=$b "bench.variants=$v" \
      bench.train_steps=$STEPS bench.warmup=3 $COMMON out_dir="$OUT/bench_${m}_b$b" \
      > "$OUT/bench_${m}_b$b.log" 2>&1
  done ;;
curve)
  # Same seed, same images: the seed's network in eager fp32 and in bf16 with CUDA graphs
  # (the end-of-run grid with the 50-call sampler, not the seed's 1000 steps).
  for v in "eager:trainer.precision=fp32 trainer.compile=false" \
           "graphed_bf16:$FAST"; do
    python -m ddpm.run recipe=seed sampler=dpm_solver_pp_sde ${v#*:} \
      trainer.max_steps=$EPOCH_STEPS trainer.log_every=10 \
      trainer.sample_every=0 trainer.checkpoint_every=0 $COMMON hydra.run.dir="$OUT/curve_${v%%:*}" \
      > "$OUT/curve_${v%%:*}.log" 2>&1
  done
  python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from ddpm.runs.tracking import read_metrics
out = Path(sys.argv[1])
rows = {v: read_metrics(out / f"curve_{v}") for v in ("eager", "graphed_bf16")}
a = [r["loss"] for r in rows["eager"] if "loss" in r]
b = [r["loss"] for r in rows["graphed_bf16"] if "loss" in r]
gap = max(abs(x - y) / x for x, y in zip(a, b))
s = {v: json.loads((out / f"curve_{v}" / "summary.json").read_text()) for v in rows}
json.dump({"max_relative_loss_gap": gap, "windows": len(a),
           "images_per_s": {v: s[v]["images_per_s"] for v in s}}, open(out / "curve.json", "w"))
PY
  ;;
jobs)
  # N jobs at once on one GPU (joblib launcher); total images/s = sum over the concurrent jobs.
  for n in 1 2 4; do
    seeds=$(seq -s, 0 $((n - 1)))
    python -m ddpm.run -m hydra/launcher=local_parallel hydra.launcher.n_jobs=$n recipe=seed \
      sampler=dpm_solver_pp_sde \
      trainer.seed=$seeds trainer.max_steps=$JOB_STEPS trainer.sample_every=0 \
      trainer.checkpoint_every=0 $COMMON hydra.sweep.dir="$OUT/jobs_$n" > "$OUT/jobs_$n.log" 2>&1
  done
  python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
total = {n: sum(json.loads(p.read_text())["images_per_s"]
                for p in (out / f"jobs_{n}").glob("*/summary.json")) for n in (1, 2, 4)}
json.dump({"total_images_per_s": total}, open(out / "jobs.json", "w"))
PY
  ;;
recipe)
  python -m ddpm.run recipe=gpu $RECIPE trainer.max_minutes=$MINUTES $COMMON \
    hydra.run.dir="$OUT/recipe_gpu" > "$OUT/recipe_gpu.log" 2>&1
  python -m ddpm.evaluate run_dir="$OUT/recipe_gpu" num_samples=$SAMPLES device=$DEV \
    progress=false > "$OUT/recipe_gpu_eval.log" 2>&1 ;;
*) echo "error: part must be bench, curve, jobs or recipe, not '$PART'" >&2; exit 1 ;;
esac
