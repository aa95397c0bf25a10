#!/usr/bin/env bash
# Quality of each formulation's run (the sweep in conf/experiment/formulations.yaml), one job at
# a time: FID, KID, precision and recall of N samples on the project evaluator at 10, 20 and
# 50 network calls (SDE-DPM-Solver++(2M) on the log-SNR plan, every process alike), the adaptive
# dopri5 solver's FID and network calls on N_ADAPTIVE samples, then the table, plot and grids.
#   DDPM_DATA_ROOT=../shared/data bash experiments/formulations/measure.sh [outputs/formulations]
set -euo pipefail
SWEEP=${1:-outputs/formulations}
N=${N:-2000}
N_ADAPTIVE=${N_ADAPTIVE:-500}
CALLS=${CALLS:-"10 20 50"}
RUNS=${RUNS:-"ddpm_eps ddpm_v flow_uniform flow_logit_normal edm"}
EVAL="progress=false wandb=false"
for r in $RUNS; do
  for calls in $CALLS; do
    python -m ddpm.evaluate run_dir="$SWEEP/$r" sampler=dpm_solver_pp_sde sampler.steps="$calls" \
      num_samples="$N" $EVAL
  done
  python -m ddpm.evaluate run_dir="$SWEEP/$r" sampler=adaptive num_samples="$N_ADAPTIVE" $EVAL
done
python experiments/formulations/report.py "$SWEEP" --out experiments/formulations
