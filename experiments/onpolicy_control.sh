#!/usr/bin/env bash
# Issue 22, the control that separates the teacher's privileged context from on-policy
# distillation itself: the same 95 rows, the same student samples, the same 1.5B teacher and
# recipe (results/pair2-fixed/onpolicy.yaml, 14 steps), but the teacher reads only the
# student's own prompt (no execution feedback, no verified program). Row name
# persd_onpolicy_open; its teacher scores are cached beside the privileged ones.
#   bash experiments/onpolicy_control.sh runs/pair2      # after experiments/pair2_onpolicy.sh
set -euo pipefail
R=${1:-runs/pair2}
M=qwen2.5-coder-0.5b-instruct
V=persd_onpolicy_open
python - "$R" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
src, dst = run / "data" / "persd_onpolicy.jsonl", run / "data" / "persd_onpolicy_open.jsonl"
with src.open() as f, dst.open("w") as out:
    for line in f:
        row = json.loads(line)
        row["teacher_prompt"] = row["prompt"]  # the teacher sees what the student sees
        out.write(json.dumps(row) + "\n")
PY
if [ ! -d "$R/models/$V/final" ]; then
  persd train -c results/pair2-fixed/onpolicy.yaml --seed 42 -m $M -o "$R/models/$V" \
      --teacher qwen2.5-coder-1.5b-instruct --teacher-cache "$R/teacher_scores_open.jsonl" \
      "$R/data/$V.jsonl"
fi
if [ ! -f "$R/eval/$V/humaneval/report.json" ]; then
  persd eval -m $M --backend llama_cpp -b humaneval --adapter "$R/models/$V/final" \
      --out "$R/eval/$V/humaneval"
fi
