#!/usr/bin/env bash
# Issue 22: persd_onpolicy against the base and PERsD-combined on pair 2's fixed path.
# Same tasks, attempts and teacher replies as experiments/pair2_fixed.sh; equal student
# optimizer steps (14, results/pair2-fixed/onpolicy.yaml); the teacher's top-20 scores of
# every row are read from the committed cache, so no teacher model runs here.
# Resumable: a finished training (final/ exists) or evaluation (report.json) is skipped.
#   R=runs/pair2; mkdir -p runs && cp -r results/pair2-fixed/run $R
#   bash experiments/pair2_onpolicy.sh $R
# Then MBPP test (a seeded 100-task sample, the same for every row): the base, and each
# variant's seed-42 model (PERsD-combined is retrained: weights are never committed).
set -euo pipefail
R=${1:-runs/pair2}
M=qwen2.5-coder-0.5b-instruct
CFG=results/pair2-fixed/onpolicy.yaml
MBPP=(-b mbpp-test --limit 100 --seed 0)

train() {  # variant seed models_dir config [flags...]
  local v=$1 seed=$2 model=$3/$1 cfg=$4; shift 4
  [ -d "$model/final" ] && return 0
  persd train -c "$cfg" --seed "$seed" -m $M -o "$model" "$@" "$R/data/$v.jsonl"
}
ONPOLICY=(--teacher qwen2.5-coder-1.5b-instruct --teacher-cache "$R/teacher_scores.jsonl")
evaluate() {  # out adapter-or-empty benchmark-args...
  local out=$1 adapter=$2; shift 2
  [ -f "$out/report.json" ] && return 0
  persd eval -m $M --backend llama_cpp ${adapter:+--adapter "$adapter"} "$@" --out "$out"
}

for seed in 42 43; do
  row=persd_onpolicy; models=$R/models
  if [ "$seed" != 42 ]; then row=persd_onpolicy-s$seed; models=$R/models-seed$seed; fi
  train persd_onpolicy "$seed" "$models" "$CFG" "${ONPOLICY[@]}"
  evaluate "$R/eval/$row/humaneval" "$models/persd_onpolicy/final" -b humaneval
done

evaluate "$R/eval/base/mbpp-test" "" "${MBPP[@]}"
evaluate "$R/eval/persd_onpolicy/mbpp-test" "$R/models/persd_onpolicy/final" "${MBPP[@]}"
# PERsD-combined as experiments/pair2_fixed.sh trained it (its recipe, its config).
train persd_combined 42 "$R/models-mbpp" results/pair2-fixed/config.yaml
evaluate "$R/eval/persd_combined/mbpp-test" "$R/models-mbpp/persd_combined/final" "${MBPP[@]}"
