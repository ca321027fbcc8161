#!/usr/bin/env bash
# Plan row 7 (issues 33 and 36) in one session, since its pool is never committed: build the
# paper's task pool (300 rows -> 201 tasks, ~43 min alone on a 2-core machine), then run the
# loop on the pool with configs/gain-alpaca.yaml (attempt, teach, verify, train, gate on 50
# held-out pool tasks, MBPP-500 and HumanEval-164 for the base and the trained model; ~90 min).
# The base is evaluated again rather than copied from lever 4: another machine kind decodes
# near-ties differently (MBPP-500 34.8% here on an AMD Zen 5 against 34.6% on the Intel
# machine), and a comparison counts only on one machine. Every step resumes on the same
# machine: a rerun reuses the build's teacher calls and the run's stage records.
# The run directory (its stage records and validation samples hold the pool's Code Alpaca
# tasks) stays under runs/, which git ignores; what may be recorded is copied to OUT: the
# MBPP-500 and HumanEval-164 evaluations, the gate's counts, the summary and the timings.
#   bash experiments/gain_alpaca.sh [RUN_DIR [OUT]]
set -euo pipefail
R=${1:-runs/gain-alpaca}
OUT=${2:-results/gain-alpaca}
persd pool build ../shared/data/persd_codegen6b_inpd.jsonl --out pools/alpaca-s --limit 300
persd run configs/gain-alpaca.yaml --run-dir "$R"
bash experiments/record_run.sh "$R" "$OUT"
