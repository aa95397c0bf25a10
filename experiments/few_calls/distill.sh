#!/usr/bin/env bash
# Distilled students against their teacher (python -m ddpm.distill): trains a student from the
# run $TEACHER (or reuses $OUT/student), then FID of $N samples at 1, 2 and 4 calls for the
# student and, undistilled, for the teacher on the same trailing DDIM plans, the teacher's pair
# solver (ode10) and the teacher's 1000-step ancestral baseline ($N_BASE samples). Every setting
# starts from the same x_T, seeded apart from the training pairs' noise (--seed 100000).
#   TEACHER=outputs/formulations/flow_logit_normal bash experiments/few_calls/distill.sh [OUT]
# One thread unless OMP_NUM_THREADS says otherwise; images are kept under $OUT and reused.
set -euo pipefail
cd "$(dirname "$0")/../.."
TEACHER=${TEACHER:?the teacher: a training run folder}
OUT=${1:-outputs/distill}
N=${N:-2000}
N_BASE=${N_BASE:-500}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
if [[ ! -f "$OUT/student/summary.json" ]]; then
  python -m ddpm.distill run_dir="$TEACHER" pairs="${PAIRS:-4096}" \
    trainer.batch_size="${BATCH:-64}" trainer.max_steps="${STEPS:-1500}" logger=none \
    hydra.run.dir="$OUT/student" > "$OUT/distill.log" 2>&1
fi
measure() {  # measure CHECKPOINT NAME COUNT SETTING...
  local ckpt=$1 name=$2 count=$3; shift 3
  PYTHONPATH=. python experiments/sampler_quality/measure.py --checkpoint "$ckpt" \
    --count "$count" --batch 100 --seed 100000 --store "$OUT/images_$name" \
    --out "$OUT/results_$name.jsonl" --data-root "${DDPM_DATA_ROOT:-../shared/data}" \
    --settings "$@"
}
CALLS=("distilled:steps=1" "distilled:steps=2" "distilled:steps=4")
measure "$OUT/student/checkpoints/last.pt" student "$N" "${CALLS[@]}"
measure "$TEACHER/checkpoints/last.pt" teacher "$N" "${CALLS[@]}" "ode10"
[[ ${SKIP_BASE:-0} == 1 ]] || measure "$TEACHER/checkpoints/last.pt" teacher "$N_BASE" "ddpm:steps=None"
