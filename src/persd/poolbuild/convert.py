"""Rows of instruction + signature + reference as tasks without tests.

Accepted fields, per row: ``prompt`` (a docstring and the function's signature, in either
order) and ``completion`` (the function's body), as the paper's released files have them
under ``finetuning_prompt`` / ``finetuning_completion`` / ``task_id``; or ``instruction``,
``entry_point`` and a whole ``reference``. Every task comes out in HumanEval's shape: the
signature, then the instruction as its docstring.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from persd.jsonl import json_objects
from persd.pysource import parse_module
from persd.records import Task

_ALIASES = {
    "id": ("id", "task_id"),
    "prompt": ("prompt", "finetuning_prompt"),
    "completion": ("completion", "finetuning_completion"),
}
_DEF = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(.*$", re.M)
_WORDS = re.compile(r"[a-z0-9]+")


@dataclass
class Converted:
    """The tasks of a file, and how many rows each rule left out (reason -> rows)."""

    tasks: list[Task]
    rows: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


def _get(row: dict, key: str) -> object:
    return next((row[k] for k in _ALIASES.get(key, (key,)) if k in row), None)


def _instruction(prompt: str, signature_at: int) -> str:
    """The docstring text around the signature: what is left without the signature."""
    text = prompt[:signature_at] + prompt[signature_at:].split("\n", 1)[-1]
    text = text.replace('"""', "").replace("'''", "")
    return " ".join(text.split())


def humaneval_prompt(signature: str, instruction: str) -> str:
    """``def f(x):`` and its instruction as an indented docstring, as HumanEval asks."""
    return f'{signature.rstrip()}\n    """{instruction}\n    """\n'


def with_examples(prompt: str, examples: Sequence[tuple[str, str]]) -> str:
    """The HumanEval-shaped prompt with ``>>> call`` / ``expected`` lines closing its
    docstring, as HumanEval's own prompts show examples. An instruction alone often leaves
    the answer's form open (a format string, a message for an empty list, a ``0b`` prefix:
    a third of a hand-checked sample of the paper's tasks); the seen tests shown here
    settle it, as MBPP's prompt shows its first test."""
    head, close = prompt.rsplit('    """\n', 1)
    lines = "".join(f"    >>> {call}\n    {expected}\n" for call, expected in examples)
    return f'{head}{lines}    """\n{close}'


def task_from_row(row: dict, *, source: str, line: int) -> Task | str:
    """The task of one row, or the reason it cannot be one."""
    prompt, completion = _get(row, "prompt"), _get(row, "completion")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        return "no prompt or completion (finetuning_prompt / finetuning_completion)"
    prompt, completion = prompt.replace("\r\n", "\n"), completion.replace("\r\n", "\n")
    found = list(_DEF.finditer(prompt))
    if not found:
        return "no function signature in the prompt"
    sig = found[-1]
    entry_point, instruction = sig.group(1), _instruction(prompt, sig.start())
    if not instruction:
        return "no instruction beside the signature"
    reference = sig.group(0).rstrip() + "\n" + completion.strip("\n") + "\n"
    try:
        module = parse_module(reference)
    except SyntaxError:
        return "the reference does not parse"
    if not any(isinstance(n, ast.FunctionDef) and n.name == entry_point for n in module.body):
        return "the reference does not define its entry point"
    task_id = _get(row, "id")
    return Task(
        id=f"{source}/{task_id if task_id is not None else line}",
        source=source,
        instruction=instruction,
        prompt=humaneval_prompt(sig.group(0), instruction),
        entry_point=entry_point,
        reference=reference,
        license="derived from the user's file",
    )


def _key(task: Task) -> str:
    """What makes two tasks the same task: their instruction's words and entry point."""
    return " ".join(_WORDS.findall(task.instruction.lower())) + "|" + task.entry_point


def convert(path: Path, *, source: str) -> Converted:
    """Every row of ``path`` as a task; near-duplicates (the same instruction, word for word
    ignoring case and punctuation, and the same entry point) merged into the first."""
    out = Converted(tasks=[])
    seen: dict[str, str] = {}
    for line, row in json_objects(path, "task rows"):
        out.rows += 1
        task = task_from_row(row, source=source, line=line)
        if isinstance(task, str):
            out.dropped[task] += 1
        elif (key := _key(task)) in seen:
            out.dropped["a near-duplicate of an earlier task (merged)"] += 1
        else:
            seen[key] = task.id
            out.tasks.append(task)
    return out
