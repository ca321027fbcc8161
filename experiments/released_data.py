"""The paper's released CodeGen-6B training data as persd training rows, for the external
cross-check of docs/RESULTS.md: fine-tune our student on the authors' PERsD and InpD sets with
the same settings as our own variants.

The released rows are base-model rows (a docstring and a signature -> the function body), made
for CodeGen-mono-6B. For a chat student each row is rendered exactly the way persd's own
text-to-code rows are: the user turn is ``persd.prompts.student_prompt`` of the task, the
answer is the whole function in one fenced block. Both sets cover the same 3,248 failed tasks;
``--limit`` keeps the same seeded subset of tasks in both, so the two differ only in targets.

The data is Apache-2.0 (instructions from Code Alpaca, targets from ChatGPT) and stays out of the
package: this script reads it from ../shared/data and writes where you point it.

Usage: python experiments/released_data.py [--data ../shared/data] [--out OUT_DIR]
       [--limit N] [--seed 0] [--format chat|base]
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
from pathlib import Path

from persd.prompts import prompt_text, student_prompt
from persd.records import Example, Task

FILES = {
    "released_persd": "persd_codegen6b_persd.jsonl",
    "released_inpd": "persd_codegen6b_inpd.jsonl",
}
_DEF = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.M)


def _task(row: dict) -> Task:
    prompt = row["finetuning_prompt"]
    name = _DEF.findall(prompt)
    instruction = prompt.split('"""')[1].strip() if prompt.count('"""') >= 2 else ""
    return Task(
        id=f"released/{row['task_id']}",
        source="persd-codegen6b",
        instruction=instruction,
        prompt=prompt,
        entry_point=name[-1] if name else "solution",
    )


def to_example(row: dict, variant: str, *, chat: bool) -> tuple[Example, bool]:
    """(the row as an Example, whether its full program parses)."""
    task = _task(row)
    program = task.prompt + row["finetuning_completion"].replace("\r\n", "\n")
    try:
        ast.parse(program)
        parses = True
    except SyntaxError:
        parses = False
    if chat:
        prompt = prompt_text(student_prompt(task, chat=True))
        completion = f"```python\n{program.strip()}\n```"
    else:
        prompt, completion = task.prompt, row["finetuning_completion"]
    example = Example(
        id=f"{variant}:{task.id}",
        variant=variant,
        format="text2code",
        prompt=prompt,
        completion=completion,
        task_id=task.id,
        verified=False,  # no tests were released: nothing here was verified by persd
    )
    return example, parses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("runs/released"))
    ap.add_argument("--limit", type=int, default=None, help="same seeded task subset in both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", choices=("chat", "base"), default="chat")
    args = ap.parse_args()

    rows = {
        name: [json.loads(line) for line in (args.data / file).read_text().splitlines() if line]
        for name, file in FILES.items()
    }
    common = sorted(set.intersection(*({r["task_id"] for r in rs} for rs in rows.values())))
    keep = set(common)
    if args.limit is not None and args.limit < len(common):
        keep = set(random.Random(args.seed).sample(common, args.limit))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, items in rows.items():
        broken = 0
        path = args.out / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for row in items:
                if row["task_id"] not in keep:
                    continue
                example, parses = to_example(row, name, chat=args.format == "chat")
                broken += not parses
                f.write(example.model_dump_json() + "\n")
        print(f"{path}: {len(keep)} rows ({broken} whose program does not parse)")


if __name__ == "__main__":
    main()
