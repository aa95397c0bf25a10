#!/usr/bin/env bash
# The few-calls grid on a run of the README's main recipe (recipe=cpu: rectified flow,
# logit-normal, res_tiny, 2000 steps: the flow_logit_normal run of experiments/formulations).
# The x_T are those of distill.sh (seed 100000, batches of 100), so every row is paired with
# its 1000-step ancestral baseline; STORE is distill.sh's teacher image folder, reused.
#   RUN=outputs/formulations/flow_logit_normal STORE=outputs/distill_flow/images_teacher \
#     bash experiments/few_calls/flow.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${RUN:?the run folder of the main recipe}
export CKPT=$RUN/checkpoints/last.pt PLANS=experiments/few_calls/plans/flow SEED=100000
export OUT=experiments/few_calls/results_flow.jsonl STORE=${STORE:?distill.sh teacher images}
STAGE=baseline bash experiments/few_calls/measure.sh
STAGE=fixed bash experiments/few_calls/measure.sh
SAMPLERS="ipndm unipc" NFES="5 10" bash experiments/few_calls/fit_plans.sh
STAGE=fitted bash experiments/few_calls/measure.sh
STAGE=curve bash experiments/few_calls/measure.sh
