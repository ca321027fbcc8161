"""From raw model output to a whole program the sandbox can run.

Two shapes of output. A *base completion* continues the prompt (HumanEval style): the program is
the prompt plus the output up to the first top-level stop sequence. A *chat* reply usually
rewrites the whole function inside a fenced block: the program is that block, with the prompt's
imports and helper functions put back when the code uses them but does not define them.

Both are then tidied: trailing prose that does not parse is cut, and top-level test code
(``if __name__ == "__main__":`` blocks, prints, asserts, loops, calls of the program's own
functions) is dropped, because it would run in the sandbox before the tests and could fail or
hang a correct solution. Extraction never raises: a program that does not compile is returned
as is, so the sandbox reports the syntax error (useful feedback for the teacher).
"""

from __future__ import annotations

import ast
import re
import textwrap

from persd.pysource import parse_module

# Where a base completion of a HumanEval-style prompt stops: the function body is over when
# something starts at column 0. Used as the backends' stop sequences and again here, because a
# backend may overshoot (a stop string can end inside a token).
BASE_STOP_SEQUENCES: tuple[str, ...] = (
    "\ndef ",  # a next function
    "\nclass ",
    "\nif __name__",  # a main block
    "\nprint(",  # test prints
    "\nassert ",  # test asserts
    "\n#",  # a top-level comment, usually "# Test" or "# Example usage"
    "\n```",  # an instruct model closing a markdown block
)
# A prompt that does not define the entry point (MBPP's docstring-only prompt) is continued by a
# whole function: a "def" at column 0 is the answer there, not the end of it.
_BODY_ONLY_STOPS = frozenset({"\ndef ", "\nclass "})

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[^\n]*$", re.MULTILINE)
_PYTHON_TAGS = frozenset({"", "python", "py", "python3"})
# Top-level lines that begin a reply's usage example (see ``answer_complete``).
_TEST_LINE = re.compile(
    r"^(?:print\(|assert\b|if __name__|#\s*(?:example|test|usage|check|sample|driver))",
    re.MULTILINE | re.IGNORECASE,
)
_CODE_START = re.compile(r"^(?:async\s+def |def |class |import |from \S+ import |@)", re.MULTILINE)


def defines(source: str, name: str) -> bool:
    """Whether ``source`` has a ``def name(`` (at any indentation)."""
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", source, re.M) is not None


def base_stop_sequences(prompt: str, entry_point: str) -> tuple[str, ...]:
    """Stop sequences for a base completion of ``prompt``."""
    if defines(prompt, entry_point):
        return BASE_STOP_SEQUENCES
    return tuple(s for s in BASE_STOP_SEQUENCES if s not in _BODY_ONLY_STOPS)


def cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """``text`` up to the earliest stop sequence."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of each markdown code block; an unterminated one runs to the end."""
    blocks: list[tuple[str, str]] = []
    fences = list(_FENCE.finditer(text))
    i = 0
    while i < len(fences):
        opening = fences[i]
        closing = fences[i + 1] if i + 1 < len(fences) else None
        end = closing.start() if closing else len(text)
        blocks.append((opening.group(1).lower(), text[opening.end() + 1 : end]))
        i += 2
    return blocks


def answer_complete(output: str, entry_point: str) -> bool:
    """Whether generation may stop: the program ``extract_program`` takes from a chat reply
    is final, or all that is left to come is test code that extraction drops.

    True once a CLOSED python (or untagged) block defines the entry point: ``_choose_block``
    takes the first such block whatever follows, and block boundaries never move as text is
    appended (fences pair up in order). The rest of a reply is usually prose or a usage
    example (38% of SmolLM2's characters on MBPP test).

    Also True once the first block, still open, defines the entry point and then starts a
    line of top-level test code (``print(``, ``assert``, ``if __name__``, a ``# Example`` /
    ``# Test`` comment): the usage example many replies put inside their code block, which
    tidying removes (12% of the untrained default student's MBPP-500 characters), with the
    example's data (``_example_data``). Only a function or import the model would write after
    its example could still change the program: in 4,547 of 26,669 stored chat replies that
    end earlier this way, none did (docs/STUDENT.md).
    """
    blocks = fenced_blocks(output)
    closed = len(_FENCE.findall(output)) // 2  # an odd last fence opens an unfinished block
    if any(lang in _PYTHON_TAGS and defines(code, entry_point) for lang, code in blocks[:closed]):
        return True
    if closed or not blocks or blocks[0][0] not in _PYTHON_TAGS:
        return False
    code = blocks[0][1]
    done = code[: code.rfind("\n") + 1]  # whole lines only: a test line is known when ended
    test = _TEST_LINE.search(done)
    return test is not None and defines(done[: test.start()], entry_point)


def _choose_block(blocks: list[tuple[str, str]], entry_point: str) -> str:
    python = [code for lang, code in blocks if lang in _PYTHON_TAGS] or [c for _, c in blocks]
    # Replies often add a usage-example block after the solution: the first block that defines
    # the entry point is the answer; without one, the longest block is the best guess.
    return next((c for c in python if defines(c, entry_point)), max(python, key=len))


def _unfenced_code(text: str) -> str:
    start = _CODE_START.search(text)
    return text[start.start() :] if start else text


def _parses(source: str) -> bool:
    try:
        parse_module(source)
    except (SyntaxError, ValueError):
        return False
    return True


def _parsable_prefix(source: str, entry_point: str) -> str:
    """Drop trailing lines (prose, a half-written line) until the code parses.

    Only when what is left still defines the entry point: a syntax error inside the function
    must reach the sandbox, not turn into a missing function.
    """
    if _parses(source):
        return source
    lines = source.splitlines(keepends=True)
    for end in range(len(lines) - 1, 0, -1):
        prefix = "".join(lines[:end])
        if _parses(prefix):
            return prefix if defines(prefix, entry_point) else source
    return source


def _calls_any(node: ast.AST, names: set[str]) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names
        for n in ast.walk(node)
    )


def _is_junk(node: ast.stmt, functions: set[str]) -> bool:
    """Top-level statements that test or demo the code rather than define it."""
    if isinstance(node, ast.If):
        return "__name__" in ast.unparse(node.test)
    if isinstance(node, ast.Expr):
        return not isinstance(node.value, ast.Constant)  # a call or expression; keep docstrings
    if isinstance(node, (ast.Assert, ast.For, ast.AsyncFor, ast.While)):
        return True
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        return _calls_any(node, functions)  # result = solution(3): a test, not a constant
    return False


def _example_data(kept: list[ast.stmt]) -> list[ast.stmt]:
    """Assignments after the first function that bind data only test code reads (the
    ``numbers = [1.0, 2.0]`` of a usage example): no call on the right, and no function,
    class or other assignment reads the names. They are dead for any test, and dropping them
    makes a reply cut at its usage example's first line (``answer_complete``) extract the
    same program as the whole reply. ``kept``: the module's statements that are not junk."""
    defs = [n for n in kept if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not defs:
        return []
    assigns = [
        n
        for n in kept
        if isinstance(n, (ast.Assign, ast.AnnAssign))
        and n.lineno > defs[0].lineno
        and n.value is not None
        and not any(isinstance(c, ast.Call) for c in ast.walk(n.value))
    ]
    reads = {id(n): _global_reads(n) for n in kept}  # each statement walked once
    out: list[ast.stmt] = []
    for node in assigns:
        others = [n for n in kept if n is not node and n not in out]
        if not _bound_names(node) & set().union(*(reads[id(n)] for n in others)):
            out.append(node)
    return out


def _global_reads(node: ast.stmt) -> set[str]:
    """Names a top-level statement may read from the module: in a function, those that are
    not its parameters or its own locals (``numbers`` in ``def f(numbers)`` is not the
    example's ``numbers = [...]``)."""
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return names
    local = {a.arg for a in ast.walk(node) if isinstance(a, ast.arg)}
    local |= {
        n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    globals_ = {
        g for n in ast.walk(node) if isinstance(n, (ast.Global, ast.Nonlocal)) for g in n.names
    }
    return names - (local - globals_)


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", None)
    return min([node.lineno, *(d.lineno for d in decorators or ())])


def _reachable(tree: ast.Module, entry_point: str) -> set[str]:
    """Top-level function names the entry point uses, directly or through other functions."""
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    seen: set[str] = set()
    todo = [entry_point]
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        todo += [n.id for n in ast.walk(defs[name]) if isinstance(n, ast.Name)]
    return seen


def _is_test_function(node: ast.stmt, entry_point: str, reachable: set[str]) -> bool:
    """A top-level function that calls the entry point and that the entry point never reaches:
    a ``check_solution()`` / ``test_x()`` / ``main()`` the reply added to try its answer. It is
    no part of the solution, and as a training target it teaches scaffolding the task did not
    ask for (MBPP/753's teacher row carried a ``check_min_k`` of three asserts)."""
    return (
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name not in reachable
        and _calls_any(node, {entry_point})
    )


def drop_test_code(source: str, entry_point: str | None = None) -> str:
    """``source`` without top-level test/demo statements (see ``_is_junk``) and, given the
    entry point, without test functions (``_is_test_function``); unparsable: as is."""
    try:
        tree = parse_module(source)
    except (SyntaxError, ValueError):
        return source
    functions = {
        n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    reachable = _reachable(tree, entry_point) if entry_point else set()
    junk_ids = {id(n) for n in tree.body if _is_junk(n, functions)}
    data = _example_data([n for n in tree.body if id(n) not in junk_ids])
    lines = source.splitlines(keepends=True)
    for node in reversed(tree.body):
        junk = (
            id(node) in junk_ids
            or node in data
            or (
                entry_point is not None
                and reachable  # the entry point is defined here: what it needs is known
                and _is_test_function(node, entry_point, reachable)
            )
        )
        if junk and node.end_lineno is not None:
            del lines[_first_line(node) - 1 : node.end_lineno]
    while lines and (not lines[-1].strip() or lines[-1].startswith("#")):
        lines.pop()  # "# Example usage:" left behind by the code it introduced
    return "".join(lines).rstrip() + "\n"


def _bound_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


def _used_names(nodes: list[ast.stmt]) -> set[str]:
    return {n.id for node in nodes for n in ast.walk(node) if isinstance(n, ast.Name)}


def attach_prompt_context(code: str, prompt: str, entry_point: str) -> str:
    """Prepend the prompt's imports, helpers and constants that ``code`` uses but lacks.

    Chat replies rewrite the entry point and forget ``from typing import List`` or a helper the
    prompt defined (HumanEval/32's ``poly``). Repeats until nothing more is needed, since a
    helper may need an import of its own.
    """
    try:
        code_tree, prompt_tree = parse_module(code), parse_module(prompt)
    except (SyntaxError, ValueError):
        return code
    defined = set().union(*(_bound_names(n) for n in code_tree.body))
    available = [n for n in prompt_tree.body if _bound_names(n) - {entry_point}]
    chosen: list[ast.stmt] = []
    while True:
        needed = _used_names([*code_tree.body, *chosen]) - defined
        new = [n for n in available if n not in chosen and _bound_names(n) & needed]
        if not new:
            break
        chosen.extend(new)
        defined |= set().union(*(_bound_names(n) for n in new))
    if not chosen:
        return code
    chosen.sort(key=_first_line)
    context = "\n".join(ast.get_source_segment(prompt, n) or ast.unparse(n) for n in chosen)
    return f"{context}\n\n\n{code}"


def _reindent_body(text: str) -> str:
    """A function body that came back alone, indented one level; prose after it dropped."""
    lines = text.strip("\n").splitlines()
    end = next((i for i, ln in enumerate(lines) if i and ln and not ln[0].isspace()), len(lines))
    return textwrap.indent(textwrap.dedent("\n".join(lines[:end])), "    ")


def extract_program(output: str, *, prompt: str, entry_point: str, chat: bool) -> str:
    """The whole program to run, from a model's raw ``output`` for ``prompt``."""
    if not chat:
        body = cut_at_stop(output, base_stop_sequences(prompt, entry_point))
        program = prompt + body
    else:
        blocks = fenced_blocks(output)
        program = _choose_block(blocks, entry_point) if blocks else _unfenced_code(output)
        if not defines(program, entry_point) and defines(prompt, entry_point):
            # Only the body came back (indented, or a bare ``return`` that cannot parse alone).
            if program.lstrip("\n")[:1].isspace() or not _parses(program):
                program = f"{prompt.rstrip()}\n{_reindent_body(program)}\n"
    program = drop_test_code(_parsable_prefix(program, entry_point), entry_point)
    if chat:
        program = attach_prompt_context(program, prompt, entry_point)
    return program


def test_code_removed(output: str, *, prompt: str, entry_point: str) -> bool:
    """Whether extraction dropped test or demo code (a ``check_x()`` function, prints, asserts,
    a main block) from a chat reply's program: what a training row no longer teaches."""
    blocks = fenced_blocks(output)
    program = _choose_block(blocks, entry_point) if blocks else _unfenced_code(output)
    program = _parsable_prefix(program, entry_point)
    return drop_test_code(program, entry_point).strip() != program.strip()
