#!/usr/bin/env bash
# Pair 2 on the fixed path (issue 18): PERsD-combined, then StanD-matched, seeds 42 and 43,
# each trained with today's defaults and scored greedily on all 164 HumanEval tasks.
# Resumable: a finished training (final/ exists) or evaluation (report.json) is skipped.
# Run the data stage first:
#   persd run results/pair2-fixed/config.yaml --run-dir runs/pair2 --no-train --no-evaluate
set -euo pipefail
R=${1:-runs/pair2}
M=qwen2.5-coder-0.5b-instruct
for v in persd_combined stand_matched; do
  for seed in 42 43; do
    # The layout experiments/results_table.py reads: seed 42 under models/, others beside it.
    row=$v; models=$R/models
    if [ "$seed" != 42 ]; then row=$v-s$seed; models=$R/models-seed$seed; fi
    model=$models/$v
    if [ ! -d "$model/final" ]; then
      persd train -c results/pair2-fixed/config.yaml --seed "$seed" -m $M -o "$model" \
          "$R/data/$v.jsonl"
    fi
    if [ ! -f "$R/eval/$row/humaneval/report.json" ]; then
      persd eval -m $M --backend llama_cpp -b humaneval --adapter "$model/final" \
          --out "$R/eval/$row/humaneval"
    fi
  done
done
