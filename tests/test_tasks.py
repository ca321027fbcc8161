"""Shipped benchmarks and the reading of docstring examples and asserts."""

from __future__ import annotations

import ast
import json
from importlib import resources

import pytest

from persd.errors import PersdError
from persd.tasks import BENCHMARKS, load_benchmark, load_humaneval, load_mbpp
from persd.tasks.asserts import assert_to_test, calls_name
from persd.tasks.docstring import extract_examples, instruction_text
from persd.tasks.mbpp import entry_point_of, entry_signature, mbpp_signature_prompt, split_of


@pytest.fixture(scope="module")
def humaneval():
    return load_humaneval()


@pytest.fixture(scope="module")
def mbpp():
    return load_mbpp()


# --- HumanEval -----------------------------------------------------------------------------


def test_humaneval_has_164_tasks_in_order(humaneval):
    assert [t.id for t in humaneval] == [f"HumanEval/{i}" for i in range(164)]
    assert all(t.source == "humaneval" and "MIT" in t.license for t in humaneval)


def test_humaneval_hidden_test_is_the_official_check(humaneval):
    for task in humaneval:
        (hidden,) = task.tests_hidden
        assert hidden.kind == "check"
        assert "def check(candidate)" in hidden.source


def test_humaneval_check_helpers_are_in_the_test_context(humaneval):
    by_id = {t.id: t for t in humaneval}
    assert "def poly(" in by_id["HumanEval/32"].test_context
    assert "def encode_cyclic(" in by_id["HumanEval/38"].test_context


def test_humaneval_reference_is_prompt_plus_solution(humaneval):
    for task in humaneval:
        assert task.reference is not None and task.reference.startswith(task.prompt)
        ast.parse(task.reference)


def test_every_humaneval_seen_test_is_a_structured_call_of_the_entry_point(humaneval):
    for task in humaneval:
        for test in task.tests_seen:
            assert test.kind == "call" and test.call and test.expected, task.id
            assert calls_name(ast.parse(test.call, mode="eval"), task.entry_point), task.id
            ast.literal_eval(test.expected)
            ast.parse(test.source)


def test_most_humaneval_tasks_have_seen_tests(humaneval):
    without = {t.id for t in humaneval if not t.tests_seen}
    # No example in the docstring (38, 41, 50, 83), examples the canonical solution fails
    # (116), an example in prose only (160). Listed in docs/HUMANEVAL_SEEN_TESTS.md.
    assert without == {f"HumanEval/{i}" for i in (38, 41, 50, 83, 116, 160)}


def test_humaneval_float_examples_compare_approximately(humaneval):
    by_id = {t.id: t for t in humaneval}
    (truncate,) = by_id["HumanEval/2"].tests_seen
    assert truncate.comparison == "approx" and truncate.expected == "0.5"
    assert all(t.comparison == "eq" for t in by_id["HumanEval/0"].tests_seen)


def test_humaneval_instruction_is_the_docstring(humaneval):
    first = humaneval[0]
    assert first.instruction.startswith("Check if in given list of numbers")
    assert '"""' not in first.instruction


def test_data_file_keeps_the_original_fields():
    path = resources.files("persd") / "data" / "humaneval.jsonl"
    row = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert set(row) == {
        "task_id",
        "prompt",
        "canonical_solution",
        "test",
        "entry_point",
        "seen_tests",
    }


# --- MBPP ----------------------------------------------------------------------------------


def test_mbpp_has_974_tasks_split_by_task_id(mbpp):
    assert len(mbpp) == 974
    sizes = {s: len(load_mbpp(s)) for s in ("prompt", "test", "validation", "train")}
    assert sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
    assert {t.split for t in load_mbpp("validation")} == {"validation"}
    assert split_of(10) == "prompt" and split_of(11) == "test" and split_of(601) == "train"


def test_mbpp_seen_test_is_the_first_hidden_test(mbpp):
    for task in mbpp:
        assert len(task.tests_hidden) == 3, task.id
        assert task.tests_seen == task.tests_hidden[:1], task.id


def test_mbpp_prompt_shows_the_instruction_and_the_seen_test(mbpp):
    task = next(t for t in mbpp if t.id == "MBPP/601")
    assert task.instruction in task.prompt
    assert task.tests_seen[0].call in task.prompt
    assert "assert" not in task.prompt


def test_mbpp_code_has_unix_line_ends(mbpp):
    assert not any("\r" in (t.reference or "") + t.setup_code for t in mbpp)
    assert any("\t" in (t.reference or "") for t in mbpp)  # tabs are indentation: kept


def test_mbpp_setup_code_is_kept(mbpp):
    task = next(t for t in mbpp if t.id == "MBPP/927")
    assert task.setup_code.startswith("root = Node(1)")


def test_mbpp_asserts_with_a_literal_value_are_structured(mbpp):
    kinds = [t.kind for task in mbpp for t in task.tests_hidden]
    assert kinds.count("call") > 2900
    # "assert f(x) == 1,2" compares with 1 and uses 2 as the message: kept as written.
    by_id = {t.id: t for t in mbpp}
    assert by_id["MBPP/313"].tests_hidden[0].kind == "assert"


def test_mbpp_entry_point_is_the_tested_function_not_a_helper():
    tests = ["assert int(lobb_num(5, 3)) == 35", "assert int(lobb_num(3, 2)) == 5"]
    assert entry_point_of(tests) == "lobb_num"
    pairs = ["assert max_chain_length([Pair(5, 24)], 1) == 1"]
    assert entry_point_of(pairs) == "max_chain_length"
    # MBPP/126 defines its own ``sum``.
    own_sum = ["assert sum(10,15) == 6", "assert sum(4,6) == 3"]
    assert entry_point_of(own_sum, "def sum(a,b):\n    return a\n") == "sum"


# --- load_benchmark ------------------------------------------------------------------------


def test_mbpp_prompt_in_humaneval_shape_is_the_gold_signature_and_a_docstring(mbpp):
    """Every MBPP task has its tested function's ``def`` in the gold code; the prompt built on
    it parses with a body appended, names the entry point, and shows no gold helper."""
    for task in mbpp:
        signature = entry_signature(task.reference, task.entry_point)
        assert signature is not None, task.id
        example = task.prompt.split(">>> Example: ", 1)[1].split("\n", 1)[0]
        prompt = mbpp_signature_prompt(task.instruction, example, signature)
        tree = ast.parse(prompt + "    pass\n")
        (fn,) = tree.body
        assert isinstance(fn, ast.FunctionDef) and fn.name == task.entry_point, task.id
        assert task.instruction.split()[0] in ast.get_docstring(fn), task.id
    # MBPP/601's gold code defines a whole class before the function; none of it is shown.
    (t601,) = [t for t in mbpp if t.id == "MBPP/601"]
    shown = mbpp_signature_prompt("x", "y", entry_signature(t601.reference, t601.entry_point))
    assert "class" not in shown and shown.startswith("def max_chain_length(")
    assert entry_signature("def f(x): return x", "f") is None  # no body line to cut at


def test_load_benchmark_by_name():
    assert len(load_benchmark("humaneval")) == 164
    assert len(load_benchmark("mbpp-test")) == 500
    assert "mbpp-train" in BENCHMARKS


def test_unknown_benchmark_suggests_the_closest_name():
    with pytest.raises(PersdError, match="did you mean 'humaneval'"):
        load_benchmark("humaneva")
    with pytest.raises(PersdError, match="unknown MBPP split"):
        load_mbpp("dev")


# --- docstring examples --------------------------------------------------------------------


def _examples(prompt: str, entry_point: str) -> list[tuple[str, object]]:
    return [(e.call, e.value) for e in extract_examples(prompt, entry_point).examples]


def test_doctest_examples():
    prompt = '''def add(a, b):
    """Add two numbers.
    >>> add(2, 3)
    5
    >>> add(0.5, 0.25)
    0.75
    >>> add(1, 1) == 2
    """
'''
    assert _examples(prompt, "add") == [
        ("add(2, 3)", 5),
        ("add(0.5, 0.25)", 0.75),
        ("add(1, 1)", 2),
    ]


def test_doctest_empty_output_means_none():
    prompt = '''def first(xs):
    """First item.
    >>> first([])
    >>> first([1])
    1
    """
'''
    assert _examples(prompt, "first") == [("first([])", None), ("first([1])", 1)]


def test_doctest_backslashes_stay_as_written():
    prompt = 'def rm(s):\n    """Drop vowels.\n    >>> rm("ab\\ncd")\n    \'b\\ncd\'\n    """\n'
    assert _examples(prompt, "rm") == [('rm("ab\\ncd")', "b\ncd")]


@pytest.mark.parametrize(
    "line",
    [
        "double(2) == 4",
        "double(2) ➞ 4",
        "double(2) => 4",
        "double(2) ==> 4",
        "double(2) -> 4",
        "double(2) = 4",
        "double(2) returns 4",
        "double(2) should return 4.",
        "double(2)   # returns 4",
        "* double(2) => 4 # two twos",
        "for double(2) == 4",
    ],
)
def test_inline_example_styles(line):
    prompt = f'def double(x):\n    """Double x.\n    Example:\n    {line}\n    """\n'
    assert _examples(prompt, "double") == [("double(2)", 4)]


def test_for_the_output_should_be_style_orders_arguments_by_the_signature():
    prompt = '''def f(s, c):
    """Example
    For c = "ae", s = "abcde", the result should be ('bcd', False)
    For s = "x", c = "y" the output should be ('x', True)
    """
'''
    assert _examples(prompt, "f") == [
        ("f('abcde', 'ae')", ("bcd", False)),
        ("f('x', 'y')", ("x", True)),
    ]


def test_input_output_blocks_over_several_lines():
    prompt = '''def fill(grid, capacity):
    """Example 1:
        Input:
            grid : [[0,1], [1,1]]
            bucket_capacity : 1
        Output: 3

    Example 2:
        Input: grid = [[1]], capacity = 2
        Output: 1 # one bucket
    """
'''
    assert _examples(prompt, "fill") == [("fill([[0, 1], [1, 1]], 1)", 3), ("fill([[1]], 2)", 1)]


def test_multiline_call_and_renamed_function():
    prompt = '''def grades(xs):
    """Examples:
    grades([
      1,
      2]) == ['A', 'B']
    grade_equation([3]) ==> ['C']
    """
'''
    assert _examples(prompt, "grades") == [("grades([ 1, 2])", ["A", "B"]), ("grades([3])", ["C"])]


def test_lowercase_booleans_and_unquoted_strings_are_read():
    prompt = '''def happy(s):
    """For example:
    happy(abc) => true
    happy(aa) => false
    """
'''
    assert _examples(prompt, "happy") == [("happy('abc')", True), ("happy('aa')", False)]


def test_unreadable_examples_are_reported_not_dropped():
    prompt = '''def f(x):
    """Examples:
    f([1, 2]) == ""x"
    f(y + 1) == 3
    f(2) == 4
    """
'''
    extraction = extract_examples(prompt, "f")
    assert [(e.call, e.value) for e in extraction.examples] == [("f(2)", 4)]
    reasons = [u.reason for u in extraction.unparsed]
    assert reasons == [
        "the expected value is not a Python literal",
        "the call uses the undefined name 'y'",
    ]


def test_prose_mentions_are_not_examples():
    prompt = '''"""Helper."""

def f(x):
    """Write f() that returns x.
    Call f(x) on it.
    """
'''
    extraction = extract_examples(prompt, "f")
    assert extraction.examples == () and extraction.unparsed == ()


def test_docstring_after_a_statement_is_found():
    prompt = 'def f(x):\n    import math\n    """Floor it.\n    f(2.5) == 2\n    """\n'
    assert _examples(prompt, "f") == [("f(2.5)", 2)]
    assert instruction_text(prompt, "f").startswith("Floor it.")


# --- asserts -------------------------------------------------------------------------------


def test_assert_with_literal_becomes_a_call_test():
    test = assert_to_test("assert (add(2, 3)) == 5", "add")
    assert (test.kind, test.call, test.expected, test.comparison) == (
        "call",
        "add(2, 3)",
        "5",
        "eq",
    )
    flipped = assert_to_test("assert [1] == listify(1)", "listify")
    assert (flipped.call, flipped.expected) == ("listify(1)", "[1]")


def test_mbpp_float_asserts_keep_exact_equality():
    assert assert_to_test("assert area(2) == 12.56", "area").comparison == "eq"


def test_other_asserts_stay_raw():
    for statement in (
        "assert math.isclose(area(2), 12.56, rel_tol=0.001)",
        "assert set(f(1)) == set((1, 2))",
        "assert f(1) == 1, 2",
        "assert f(1) == g(1)",
    ):
        test = assert_to_test(statement, "f" if "f(" in statement else "area")
        assert (test.kind, test.source) == ("assert", statement)


def test_prompt_mbpp_shape_reaches_the_pool_and_the_benchmark():
    """``prompt.mbpp_shape: signature`` gives the pool (so attempts, teacher requests and the
    gate's validation tasks) and the MBPP-test benchmark the same HumanEval-shaped prompts;
    the default keeps the docstring prompt every recorded run used."""
    from persd.pipeline.config import EvalStageConfig, PoolConfig
    from persd.pipeline.model_eval import benchmark_tasks
    from persd.pipeline.pool import load_pool
    from persd.prompts import PromptConfig

    pool = PoolConfig(source="mbpp-validation", limit=5, validation=0, decontaminate=False)
    signed = load_pool(pool, mbpp_shape="signature").tasks
    plain = load_pool(pool).tasks
    assert [t.id for t in signed] == [t.id for t in plain]
    assert all(t.prompt.startswith(f"def {t.entry_point}(") for t in signed)
    assert all(t.prompt.startswith('"""') for t in plain)
    bench = benchmark_tasks(
        "mbpp-test", EvalStageConfig(limit=3), PromptConfig(mbpp_shape="signature")
    )
    assert all(t.prompt.startswith(f"def {t.entry_point}(") for t in bench)
    assert PromptConfig().mbpp_shape == "docstring"
