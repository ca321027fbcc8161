"""MBPP (974 problems, Google Research, CC-BY-4.0) as tasks with seen and hidden tests.

Hidden tests are the three asserts of ``test_list``; the seen test is the first of them, the
one the paper's prompt shows as its example. ``challenge_test_list`` is not used: most tasks
have none, and the paper scores with ``test_list`` only.
"""

from __future__ import annotations

import ast
import builtins
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, Literal

from persd.errors import DataError, PersdError
from persd.prompts.files import fill, shipped_text
from persd.pysource import parse_module
from persd.records import Task
from persd.tasks.asserts import TestSyntaxError, assert_to_test

DATA_FILE = "mbpp.jsonl"
LICENSE = "MBPP (Austin et al., 2021), Google Research, CC-BY-4.0; tests split by persd"
SPLITS = ("prompt", "test", "validation", "train")
# "docstring": the instruction and example in a module docstring (the student writes the whole
# program); "signature": HumanEval's shape, the gold ``def`` line with them as its docstring.
MbppShape = Literal["docstring", "signature"]
_FIELDS = ("task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list")
_BUILTINS = frozenset(dir(builtins))


def split_of(task_id: int) -> str:
    """MBPP's own split by task id: 1-10 prompt, 11-510 test, 511-600 validation, rest train."""
    if task_id <= 10:
        return "prompt"
    if task_id <= 510:
        return "test"
    if task_id <= 600:
        return "validation"
    return "train"


def load_mbpp(split: str | None = None, *, shape: MbppShape = "docstring") -> tuple[Task, ...]:
    """MBPP tasks by task id, all of them or one split ("prompt", "test", "validation", "train"),
    with prompts of the given ``shape``."""
    if split is not None and split not in SPLITS:
        raise PersdError(f"unknown MBPP split '{split}'; expected one of {', '.join(SPLITS)}")
    data = resources.files("persd") / "data" / DATA_FILE
    tasks = []
    for number, line in enumerate(data.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if split is None or split_of(int(row["task_id"])) == split:
            tasks.append(task_from_row(row, path=DATA_FILE, line=number, shape=shape))
    return tuple(tasks)


def _lf(text: str) -> str:
    # MBPP's code and setup use CRLF line ends; tabs are indentation and stay.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def entry_point_of(test_list: Sequence[str], code: str = "") -> str | None:
    """The function the asserts test: the outermost call common to all of them.

    ``assert set(similar_elements(a, b)) == set(c)`` tests ``similar_elements``, not ``set``;
    in ``assert max_chain_length([Pair(5, 24)], 1) == 1`` the outermost call wins over ``Pair``.
    Builtins are skipped unless ``code`` defines one (MBPP/126 defines its own ``sum``).
    """
    per_test = [_called_names(t) for t in test_list]
    if not per_test:
        return None
    common = set(per_test[0]).intersection(*per_test[1:])
    candidates = [name for name in per_test[0] if name in common]
    own = next((name for name in candidates if name not in _BUILTINS), None)
    if own is not None or not code:
        return own
    defined = _defined_functions(code)
    return next((name for name in candidates if name in defined), None)


def _defined_functions(code: str) -> frozenset[str]:
    try:
        tree = parse_module(_lf(code))
    except SyntaxError:
        return frozenset()
    return frozenset(n.name for n in tree.body if isinstance(n, ast.FunctionDef))


def _called_names(statement: str) -> list[str]:
    """Names called in the statement, outermost first (breadth-first)."""
    try:
        tree = parse_module(_lf(statement).strip())
    except SyntaxError:
        return []
    names: list[str] = []
    for node in ast.walk(tree):  # breadth-first: outer calls before their arguments
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id not in names:
                names.append(node.func.id)
    return names


def mbpp_prompt(instruction: str, example: str) -> str:
    """The student's prompt: the instruction and one example, in a docstring."""
    values = {"instruction": instruction.strip(), "example": example}
    return fill(shipped_text("mbpp_prompt.txt"), values, where="mbpp_prompt.txt")


def entry_signature(code: str, entry_point: str) -> str | None:
    """The ``def`` line(s) of ``entry_point`` in the gold code, or None when there is none.

    Only the signature is taken: helpers and imports of the gold code stay out of the prompt,
    since they can hold part of the solution (the paper's prompt leaks MBPP/601's whole class).
    """
    try:
        tree = parse_module(_lf(code))
    except SyntaxError:
        return None
    lines = _lf(code).split("\n")
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            first, body = node.lineno - 1, node.body[0].lineno - 1
            if body <= first:  # ``def f(x): return x`` on one line
                return None
            return "\n".join(line.rstrip() for line in lines[first:body]).strip()
    return None


def mbpp_signature_prompt(instruction: str, example: str, signature: str) -> str:
    """The student's prompt in HumanEval's shape: the signature, then a docstring holding the
    instruction and one example, indented as the function's own."""
    text = "\n    ".join(line.strip() for line in instruction.strip().splitlines())
    values = {"signature": signature, "instruction": text, "example": example}
    return fill(
        shipped_text("mbpp_prompt_signature.txt"), values, where="mbpp_prompt_signature.txt"
    )


def task_from_row(
    row: Mapping[str, Any],
    *,
    path: str = DATA_FILE,
    line: int = 0,
    shape: MbppShape = "docstring",
) -> Task:
    """One MBPP row as a Task; raises DataError naming the field that does not fit."""
    for name in _FIELDS:
        if name not in row:
            raise DataError(path, line, name, "is missing")
    asserts = [_lf(t).strip() for t in row["test_list"]]
    entry_point = entry_point_of(asserts, row["code"])
    if entry_point is None:
        raise DataError(path, line, "test_list", "calls no common function (no entry point)")
    try:
        hidden = tuple(assert_to_test(t, entry_point) for t in asserts)
    except TestSyntaxError as e:
        raise DataError(path, line, "test_list", str(e)) from None
    example = asserts[0].removeprefix("assert").strip()
    prompt = mbpp_prompt(row["text"], example)
    if shape == "signature":
        signature = entry_signature(row["code"], entry_point)
        if signature is None:
            raise DataError(path, line, "code", f"has no `def {entry_point}` line to show")
        prompt = mbpp_signature_prompt(row["text"], example, signature)
    return Task(
        id=f"MBPP/{row['task_id']}",
        source="mbpp",
        instruction=row["text"].strip(),
        prompt=prompt,
        entry_point=entry_point,
        reference=_lf(row["code"]),
        # Seen = the first assert: the one the prompt shows, so feedback reveals nothing new.
        tests_seen=hidden[:1],
        tests_hidden=hidden,
        setup_code=_lf(row["test_setup_code"]),
        split=split_of(int(row["task_id"])),
        license=LICENSE,
    )
