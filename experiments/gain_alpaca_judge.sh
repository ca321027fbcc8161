#!/usr/bin/env bash
# Plan row 7b: row 7 (experiments/gain_alpaca.sh) again with attempt.judge: all, on the machine
# that holds row 7's run directory and pool. Row 7's attempts, direct solutions, teacher cache,
# gate base and base evaluations are copied in, so only the newly failed attempts cost teacher
# calls. Like row 7, the run directory holds the pool's tasks and stays under runs/; what may
# be recorded is copied to OUT.
#   bash experiments/gain_alpaca_judge.sh [ROW7_RUN [RUN_DIR [OUT]]]
set -euo pipefail
S=${1:-runs/gain-alpaca}
R=${2:-runs/gain-alpaca-judge}
OUT=${3:-results/gain-alpaca-judge}
mkdir -p "$R/validation" "$R/eval"
[ -e "$R/attempts.jsonl" ] || cp "$S/attempts.jsonl" "$S/solutions.jsonl" "$R/"
[ -e "$R/teacher.sqlite" ] || python -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('PRAGMA wal_checkpoint(TRUNCATE)')" "$S/teacher.sqlite"
[ -e "$R/teacher.sqlite" ] || cp "$S/teacher.sqlite" "$R/"
[ -e "$R/validation/base" ] || cp -r "$S/validation/base" "$R/validation/"
[ -e "$R/eval/base" ] || cp -r "$S/eval/base" "$R/eval/"
persd run configs/gain-alpaca-judge.yaml --run-dir "$R"
bash experiments/record_run.sh "$R" "$OUT"
