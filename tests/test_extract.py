"""Code extraction: the rules on small cases, then real raw outputs of real models.

``tests/data/model_outputs/`` holds greedy outputs of Qwen2.5-Coder-0.5B-Instruct and
SmolLM2-135M-Instruct (llama.cpp and transformers, chat and base prompts) on HumanEval and MBPP,
captured by ``benchmarks/capture_model_outputs.py``. ``index.json`` records the sandbox verdict
of each extracted program at capture time; every failure there was read by hand and is the
model's (wrong code), not extraction's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persd.llm.base import Message
from persd.llm.extract import (
    BASE_STOP_SEQUENCES,
    answer_complete,
    base_stop_sequences,
    drop_test_code,
    extract_program,
    fenced_blocks,
)
from persd.prompts import student_prompt
from persd.records import Task
from persd.sandbox import Job, Sandbox
from persd.tasks import load_humaneval, load_mbpp

DATA = Path(__file__).parent / "data" / "model_outputs"
INDEX: dict[str, dict] = json.loads((DATA / "index.json").read_text())

HE_PROMPT = (
    "from typing import List\n\n\n"
    "def below(xs: List[int], t: int) -> bool:\n"
    '    """True if every number in xs is below t."""\n'
)


def chat(output: str, prompt: str = HE_PROMPT, entry: str = "below") -> str:
    return extract_program(output, prompt=prompt, entry_point=entry, chat=True)


def base(output: str, prompt: str = HE_PROMPT, entry: str = "below") -> str:
    return extract_program(output, prompt=prompt, entry_point=entry, chat=False)


# ---------------------------------------------------------------- fences and block choice


def test_fences_tagged_bare_and_unterminated() -> None:
    text = "Sure:\n```python\na = 1\n```\nand\n```\nb = 2\n```\nthen\n```py\nc = 3\n"
    assert fenced_blocks(text) == [("python", "a = 1\n"), ("", "b = 2\n"), ("py", "c = 3\n")]


def test_the_block_defining_the_entry_point_wins_over_examples() -> None:
    output = (
        "Usage:\n```python\nprint(below([1], 2))\n```\nSolution:\n"
        "```python\ndef below(xs, t):\n    return all(x < t for x in xs)\n```\n"
    )
    program = chat(output)
    assert "return all(x < t for x in xs)" in program and "print(" not in program


def test_without_the_entry_point_the_longest_python_block_is_taken() -> None:
    output = "```bash\npip install nothing at all here\n```\n```python\nx = 1\n```\n"
    assert chat(output).endswith("x = 1\n")


# ---------------------------------------------------------------- base completions


def test_base_completion_continues_the_prompt_up_to_a_top_level_stop() -> None:
    output = "    return all(x < t for x in xs)\n\n\ndef test():\n    assert below([1], 2)\n"
    program = base(output)
    assert program == HE_PROMPT + "    return all(x < t for x in xs)\n"


def test_base_stop_sequences_keep_def_when_the_prompt_has_no_function() -> None:
    mbpp_like = '"""\nWrite a function to add.\n"""\n'
    assert base_stop_sequences(HE_PROMPT, "below") == BASE_STOP_SEQUENCES
    stops = base_stop_sequences(mbpp_like, "add")
    assert "\ndef " not in stops and "\nif __name__" in stops
    program = base("def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n", mbpp_like, "add")
    assert program == mbpp_like + "def add(a, b):\n    return a + b\n"


# ---------------------------------------------------------------- chat rewrites


def test_chat_rewrite_gets_the_prompts_imports_back() -> None:
    output = "```python\ndef below(xs: List[int], t: int) -> bool:\n    return max(xs) < t\n```"
    program = chat(output)
    assert program.startswith("from typing import List\n")
    compile(program, "<extracted>", "exec")


def test_chat_rewrite_gets_a_helper_from_the_prompt_and_the_helpers_import() -> None:
    task = load_humaneval()[32]  # find_zero uses poly(), which the prompt defines with math
    output = "```python\ndef find_zero(xs: list):\n    return poly(xs, 0.0)\n```"
    program = chat(output, task.prompt, task.entry_point)
    assert program.index("import math") < program.index("def poly(") < program.index("def find_")


def test_unused_prompt_context_is_not_attached() -> None:
    program = chat("```python\ndef below(xs, t):\n    return all(x < t for x in xs)\n```")
    assert "typing" not in program


def test_test_code_is_dropped_and_definitions_kept() -> None:
    output = (
        "```python\nimport re\n\nLIMIT = 10 ** 9\nPATTERN = re.compile('a')\n\n"
        "def below(xs, t):\n    return all(x < t for x in xs)\n\n"
        "# Example usage:\nresult = below([1, 2], 3)\nprint(result)\nassert below([], 0)\n"
        "for case in [[1]]:\n    below(case, 2)\n"
        "if __name__ == '__main__':\n    import doctest\n    doctest.testmod()\n```\n"
    )
    program = chat(output)
    assert "LIMIT = 10 ** 9" in program and "PATTERN = re.compile('a')" in program
    assert program.endswith("return all(x < t for x in xs)\n")
    for junk in ("result", "print", "assert", "for case", "__main__", "Example"):
        assert junk not in program, junk


def test_test_functions_the_reply_added_are_dropped_and_helpers_kept() -> None:
    """MBPP/753's teacher reply, in short: the row must teach the solution, not its check."""
    output = (
        "```python\ndef key(r):\n    return r[1]\n\n"
        "def below(xs, t):\n    return all(key((0, x)) < t for x in xs)\n\n"
        "# Test cases to verify the correctness of the function\n"
        "def check_below():\n    assert below([1, 2], 3)\n    assert not below([4], 3)\n\n"
        "def main():\n    print(below([1], 2))\n\ncheck_below()\nmain()\n```\n"
    )
    program = chat(output)
    assert "def key(r)" in program and program.endswith("for x in xs)\n")
    for junk in ("check_below", "main", "assert", "print", "Test cases"):
        assert junk not in program, junk
    # An entry point named like a test, and a helper it calls that calls it back, stay.
    recursive = (
        "```python\ndef check_even(n):\n    return n == 0 or check_odd(n - 1)\n\n"
        "def check_odd(n):\n    return n != 0 and check_even(n - 1)\n```"
    )
    program = extract_program(recursive, prompt="", entry_point="check_even", chat=True)
    assert "def check_odd" in program and "def check_even" in program


def test_prose_after_unfenced_code_is_cut() -> None:
    output = (
        "def below(xs, t):\n    return all(x < t for x in xs)\n\n"
        "This function checks each number. It's O(n).\n"
    )
    assert chat(output) == "def below(xs, t):\n    return all(x < t for x in xs)\n"


def test_a_syntax_error_inside_the_function_reaches_the_sandbox() -> None:
    output = "```python\ndef below(xs, t):\n    return all(x < t for x in xs\n```"
    program = chat(output)
    assert "def below" in program
    with pytest.raises(SyntaxError):
        compile(program, "<extracted>", "exec")


def test_a_bare_body_in_a_chat_reply_goes_under_the_prompts_signature() -> None:
    program = chat("    return all(x < t for x in xs)\n\nThis uses all().")
    assert program == HE_PROMPT + "    return all(x < t for x in xs)\n"


# ---------------------------------------------------------------- prompts


def test_chat_prompt_does_not_repeat_a_docstring_instruction() -> None:
    he = load_humaneval()[0]
    [message] = student_prompt(he, chat=True)
    assert isinstance(message, Message) and message.role == "user"
    assert message.content.count("any two numbers closer") == 1
    assert he.prompt.rstrip() in message.content and "```python" in message.content
    assert student_prompt(he, chat=False) == he.prompt


# ---------------------------------------------------------------- real model outputs


@pytest.fixture(scope="module")
def tasks() -> dict[str, Task]:
    return {t.id: t for t in (*load_humaneval(), *load_mbpp())}


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox() as box:
        yield box


def test_real_outputs_cover_both_models_backends_and_prompt_kinds() -> None:
    kinds = {(e["model"].split("-")[0], e["backend"], e["chat"]) for e in INDEX.values()}
    assert {("qwen2.5", "llama_cpp", True), ("qwen2.5", "llama_cpp", False)} <= kinds
    assert {("smollm2", "llama_cpp", True), ("smollm2", "transformers", True)} <= kinds
    assert sum(e["status"] == "passed" for e in INDEX.values()) >= 8


@pytest.mark.parametrize("name", sorted(INDEX))
def test_real_output_extracts_to_the_recorded_verdict(
    name: str, tasks: dict[str, Task], sandbox: Sandbox
) -> None:
    entry = INDEX[name]
    task = tasks[entry["task"]]
    raw = (DATA / f"{name}.txt").read_text(encoding="utf-8")
    chat = entry["chat"]
    program = extract_program(raw, prompt=task.prompt, entry_point=task.entry_point, chat=chat)
    if entry["status"] != "syntax_error":
        compile(program, name, "exec")
    assert sandbox.run(Job.for_task(task, program)).status == entry["status"]


# ---- answer_complete: when generation may stop without changing the program ------------------

_REPLIES = [  # (reply, whether it ever becomes complete)
    # the usual shape: code, then prose
    ("```python\ndef add(a, b):\n    return a + b\n```\n\nThis function adds `a` and `b`.", True),
    # a usage block first (no def), then the answer, then an example block
    (
        "Use it like:\n```python\nadd(1, 2)\n```\nHere:\n```python\ndef add(a, b):\n"
        "    return a + b\n```\nExample:\n```python\nprint(add(1, 2))\n```\n",
        True,
    ),
    # an untagged block counts as python; a bash block with a def does not
    ("```bash\ndef add\n```\n```\ndef add(a, b):\n    return b + a\n```\ntrailing", True),
    # no closing fence: complete at the usage example's first line, which tidying drops
    ("```python\ndef add(a, b):\n    return a + b\n\nprint(add(1, 2))\nassert add(1, 1)\n", True),
    ("```python\ndef add(a, b):\n    return a + b\n\n# Example usage\nprint(add(1, 2))\n", True),
    # no closing fence and no test code: never complete, extraction runs to the end
    ("```python\ndef add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n", False),
    # test code before the entry point is defined does not count
    ("```python\nprint('hi')\ndef add(a, b):\n    return a + b\n", False),
    # no fences at all
    ("def add(a, b):\n    return a - b\n", False),
]


@pytest.mark.parametrize(("reply", "completes"), _REPLIES)
def test_once_answer_complete_holds_the_program_never_changes(reply: str, completes: bool):
    prompt = 'def add(a, b):\n    """Add."""\n'
    full = extract_program(reply, prompt=prompt, entry_point="add", chat=True)
    complete_at = None
    for end in range(len(reply) + 1):
        if answer_complete(reply[:end], "add"):
            complete_at = end if complete_at is None else complete_at
            # every longer prefix stays complete and extracts the same program as the whole
            assert extract_program(reply[:end], prompt=prompt, entry_point="add", chat=True) == full
        else:
            assert complete_at is None, "answer_complete went from True back to False"
    assert (complete_at is not None) == completes


def test_an_open_block_ends_at_top_level_test_code_only():
    start = "```python\ndef add(a, b):\n"
    assert not answer_complete(start + "    print(a)\n", "add")  # inside the function
    assert not answer_complete(start + "    return a + b\n\nprint(add(1, 2))", "add")  # unended
    assert answer_complete(start + "    return a + b\n\nprint(add(1, 2))\n", "add")
    assert answer_complete(start + "    return a + b\n# Test the function\n", "add")
    assert not answer_complete(start + "    return a + b\n# Helper\n", "add")
    assert not answer_complete("Plain text first\n" + start + "    pass\nprint(1)\n", "sub")


def test_a_usage_examples_data_is_dropped_so_the_cut_reply_extracts_the_same():
    prompt = 'def add(a, b):\n    """Add."""\n'
    reply = (
        "```python\nMOD = 7\nBASE = MOD * 2\n\ndef add(a, b):\n    return (a + b) % BASE\n\n"
        "# Example usage\nx = 4\ny: int = -1\nprint(add(x, y))\n```"
    )
    cut = reply[: reply.index("x = 4")]
    assert answer_complete(cut, "add")
    full = extract_program(reply, prompt=prompt, entry_point="add", chat=True)
    assert full == extract_program(cut, prompt=prompt, entry_point="add", chat=True)
    assert "x = 4" not in full and "y: int" not in full
    assert "MOD = 7" in full and "BASE = MOD * 2" in full  # read by the code: kept


def test_a_parameter_of_the_same_name_is_not_a_read_of_the_data():
    code = "def f(numbers):\n    return len(numbers)\n\nnumbers = [1, 2]\nprint(f(numbers))\n"
    assert "numbers = [1, 2]" not in drop_test_code(code, "f")
    code = "def f():\n    global numbers\n    return len(numbers)\n\nnumbers = [1, 2]\n"
    assert "numbers = [1, 2]" in drop_test_code(code, "f")


def test_assignments_the_code_reads_or_that_call_stay():
    code = "def f():\n    return LIMIT\n\nLIMIT = 3\ncache = dict()\nnames = [1]\nprint(f())\n"
    out = drop_test_code(code, "f")
    assert "LIMIT = 3" in out and "cache = dict()" in out and "names" not in out


def test_answer_complete_needs_the_entry_point_in_a_python_block():
    assert answer_complete("```python\ndef add(a, b):\n    pass\n```", "add")
    assert not answer_complete("```python\ndef sub(a, b):\n    pass\n```", "add")
    assert not answer_complete("```js\ndef add(a, b):\n    pass\n```", "add")
    assert not answer_complete("```python\ndef add(a, b):\n    pass\n", "add")


@pytest.mark.parametrize("name", sorted(n for n, e in INDEX.items() if e["chat"]))
def test_real_chat_output_cut_where_answer_complete_extracts_the_same(
    name: str, tasks: dict[str, Task]
) -> None:
    task = tasks[INDEX[name]["task"]]
    raw = (DATA / f"{name}.txt").read_text(encoding="utf-8")

    def program(text: str) -> str:
        return extract_program(text, prompt=task.prompt, entry_point=task.entry_point, chat=True)

    cut = next(
        (end for end in range(len(raw) + 1) if answer_complete(raw[:end], task.entry_point)), None
    )
    if cut is not None:
        assert program(raw[:cut]) == program(raw)
