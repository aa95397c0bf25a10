#!/usr/bin/env bash
# Distilled students against their teacher (python -m ddpm.distill): trains a student from the
# run $TEACHER (or reuses $OUT/student), then FID of $N samples at 1, 2 and 4 calls for the
# student and, undistilled, for the teacher on the same trailing DDIM plans, the teacher's pair
# solver (ode10) and the teacher's 1000-step ancestral baseline ($N_BASE samples). Every setting
# starts from the same x_T, seeded apart from the training pairs' noise (--seed 100000); the
# ratios to 1000 steps compare the first $N_BASE images of each setting with the baseline's.
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
measure() {  # measure CHECKPOINT NAME COUNT "EXTRA ARGS" SETTING...
  local ckpt=$1 name=$2 count=$3 extra=$4; shift 4
  # shellcheck disable=SC2086  # EXTRA is a list of arguments
  PYTHONPATH=. python experiments/sampler_quality/measure.py --checkpoint "$ckpt" \
    --count "$count" --batch 100 --seed 100000 --store "$OUT/images_$name" \
    --out "$OUT/results_$name.jsonl" --data-root "${DDPM_DATA_ROOT:-../shared/data}" \
    $extra --settings "$@"
}
CALLS=("distilled:steps=1" "distilled:steps=2" "distilled:steps=4")
STUDENT=$OUT/student/checkpoints/last.pt TEACHER_CKPT=$TEACHER/checkpoints/last.pt
measure "$STUDENT" student "$N" "" "${CALLS[@]}"
measure "$TEACHER_CKPT" teacher "$N" "" "${CALLS[@]}" "ode10"
[[ ${SKIP_BASE:-0} == 1 ]] && exit 0
measure "$TEACHER_CKPT" teacher "$N_BASE" "" "ddpm:steps=None"
# the same settings scored on their first $N_BASE images (the baseline's x_T) for the ratios
measure "$STUDENT" student "$N_BASE" "--subset-of $N" "${CALLS[@]}"
measure "$TEACHER_CKPT" teacher "$N_BASE" "--subset-of $N" "${CALLS[@]}" "ode10"
