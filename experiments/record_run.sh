#!/usr/bin/env bash
# Copy what may be recorded of a run whose directory holds a pool's licensed tasks (and so
# stays under runs/): its benchmark evaluations, config, gate, summary, timings and each
# model's training summary (rows, steps, loss, tokens/s; no task text).
#   bash experiments/record_run.sh RUN_DIR OUT
set -euo pipefail
R=${1:?usage: record_run.sh RUN_DIR OUT}
OUT=${2:?usage: record_run.sh RUN_DIR OUT}
mkdir -p "$OUT"
cp -r "$R/eval" "$R/config.yaml" "$R/gate.json" "$R/summary.json" "$R/timings.jsonl" "$OUT/"
for m in "$R"/models/*/; do
  mkdir -p "$OUT/models/$(basename "$m")"
  cp "$m/train_summary.json" "$m/train_config.json" "$OUT/models/$(basename "$m")/"
done
