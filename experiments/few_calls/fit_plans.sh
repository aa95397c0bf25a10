#!/usr/bin/env bash
# Fit a plan per solver x call count on one checkpoint with `python -m ddpm.plan`, one at a
# time, one thread: SAMPLERS="ipndm unipc" NFES="5 10" CKPT=<file> PLANS=<folder>.
set -euo pipefail
cd "$(dirname "$0")/../.."
CKPT=${CKPT:-../shared/checkpoints/small-cosine-ema-22ep.pt}
PLANS=${PLANS:-experiments/few_calls/plans/shared}
for s in ${SAMPLERS:-ipndm unipc dpm_solver_pp ddim}; do
  for n in ${NFES:-5 10}; do
    OMP_NUM_THREADS=1 python -m ddpm.plan checkpoint="$CKPT" sampler="$s" nfe="$n" \
      device=cpu out="$PLANS/${s}_nfe$n.json" ${EXTRA:-}
  done
done
