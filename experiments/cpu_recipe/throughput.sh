#!/usr/bin/env bash
# The training step and sampling's network calls on this CPU, side by side in one process:
# ddpm.bench on recipe=cpu's res_tiny, three times, its tables into throughput.md. Run it on a
# quiet machine (nothing else running: two jobs on two cores disturb each other).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=experiments/cpu_recipe/throughput.md
{
  echo "# Throughput on $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(date -u +%F)"
  echo
  for round in 1 2 3; do
    echo "## Round $round"
    echo
    python -m ddpm.bench logger=none device=cpu "bench.variants=[fp32,channels_last,compiled]" \
      "bench.processes=[]" "bench.call_batches=[32,128,500]" 2>/dev/null | grep -E '^(\||train|sample)'
    echo
  done
} > "$OUT.part"
mv "$OUT.part" "$OUT"
