"""Re-render the text-to-code rows of a training file with MBPP prompts in HumanEval's shape.

Issue 18's diagnostic: every model trained on pair 2's rows writes empty HumanEval bodies
(``def add(x, y): \"\"\"doc\"\"\"`` and nothing else) on tasks the base solves. The rows' prompts
are a docstring alone; HumanEval's are a signature with its docstring. This rewrites each
text2code row's task prompt into the signature form (``load_mbpp(shape="signature")``)
and keeps every completion, so a model trained on the output differs from one trained on the
input only in the prompt's shape.

    python experiments/signature_rows.py IN.jsonl OUT.jsonl
"""

from __future__ import annotations

import json
import sys

from persd.tasks.mbpp import load_mbpp


def main(src: str, dst: str) -> None:
    tasks = {t.id: t for t in load_mbpp()}
    signed = {t.id: t.prompt for t in load_mbpp(shape="signature")}
    changed = 0
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        for line in f:
            row = json.loads(line)
            task = tasks.get(row["task_id"])
            if row["format"] == "text2code" and task is not None:
                assert task.prompt in row["prompt"], row["id"]
                row["prompt"] = row["prompt"].replace(task.prompt, signed[task.id])
                changed += 1
            out.write(json.dumps(row) + "\n")
    print(f"{dst}: {changed} text2code prompts rewritten")


if __name__ == "__main__":
    main(*sys.argv[1:3])
