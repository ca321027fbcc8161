#!/usr/bin/env bash
# Issue 35: LoRA dropout 0.05 against 0 on lever 4's PERsD-combined rows, both trained, gated
# and evaluated on this machine (configs/gain-persd-d05.yaml, configs/gain-persd-d0.yaml).
# The data stage (attempts, teacher calls, verification, training sets) is lever 4's, copied
# from results/gain-persd: the configs differ from it only in train:, which changes none of it.
# BASE_EVAL is an eval/ directory holding the untrained student's mbpp-test and humaneval
# evaluations made on THIS machine with the same prompt settings (e.g. runs/gain-alpaca/eval):
# greedy text depends on the CPU's kernels, so the base and the trained models must share one.
# The gate's base (100 MBPP validation tasks) is evaluated in the first run and reused by the
# second. Each run resumes from its directory if killed.
#   bash experiments/gain_dropout.sh BASE_EVAL [OUT_PREFIX]
set -euo pipefail
BASE_EVAL=${1:?usage: gain_dropout.sh BASE_EVAL [OUT_PREFIX]}
P=${2:-results/gain-persd}
S=results/gain-persd
for d in d05 d0; do
  R=$P-$d
  mkdir -p "$R/eval"
  for f in attempts executions solutions refinements verifications; do
    [ -e "$R/$f.jsonl" ] || cp "$S/$f.jsonl" "$R/"
  done
  [ -e "$R/data" ] || cp -r "$S/data" "$R/"
  [ -e "$R/eval/base" ] || cp -r "$BASE_EVAL/base" "$R/eval/"
  if [ "$d" = d0 ] && [ ! -e "$R/validation/base" ] && [ -e "$P-d05/validation/base" ]; then
    mkdir -p "$R/validation" && cp -r "$P-d05/validation/base" "$R/validation/"
  fi
  persd run "configs/gain-persd-$d.yaml" --run-dir "$R"
done
