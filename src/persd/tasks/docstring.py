"""Examples written in a prompt's docstring, read as (call, expected value) pairs.

HumanEval's docstrings show examples in many styles: doctests (``>>> f(x)`` then the value),
``f(x) == y``, ``f(x) ➞ y``, ``f(x) => y``, ``f(x) returns y``, ``For x = 1 the output should
be y``, ``Input: ... Output: ...`` blocks. These pure functions find them and keep only what
parses as a call of the entry point and a Python literal; everything that looked like an
example but did not parse is returned with a reason, so nothing is dropped silently. Whether
an example is *right* is a separate question, answered by running the reference solution
(``scripts/build_task_data.py``), never here.
"""

from __future__ import annotations

import ast
import doctest
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass

from persd.pysource import parse_expression, parse_module
from persd.tasks.asserts import calls_name, literal_value
from persd.tasks.examples import BUILTINS, Example, Found, Unparsed, make_example, read_literal

# What separates a call from its value on one line, longest first: "==>" before "==".
_SEPARATOR = re.compile(
    r"\s*(?:#\s*)?(?:==>|=>|==|->|➞|=(?!=)|should\s+return\b|returns?\b)\s*", re.IGNORECASE
)
_FOR_OUTPUT = re.compile(
    r"^\s*for\s+(?P<args>.+?)\s*,?\s+the\s+(?:output|result)\s+should\s+be\s+(?P<value>.+?)\s*$",
    re.IGNORECASE,
)
_INPUT = re.compile(r"^\s*Input\s*:\s*(?P<rest>.*)$")
_OUTPUT = re.compile(r"^\s*Output\s*:\s*(?P<rest>.*)$")
_BINDING = re.compile(r"^\s*(?P<name>[A-Za-z_]\w*)\s*[=:]\s*(?P<value>.+?)\s*$", re.DOTALL)
_ASSIGNED = re.compile(r"^\s*(?P<name>[A-Za-z_]\w*)\s*=\s*(?P<value>.+?)\s*$")
_RETURNED = re.compile(r"^\s*return\s*=?\s*(?P<value>.+?)\s*$")
# A line that starts like an example of another function: "assert list_sort([...]) => ...".
_LINE_CALL = re.compile(r"^\s*(?:[*-]\s*)?(?:assert\s+|for\s+)?(?P<name>[A-Za-z_]\w*)\s*\(")


@dataclass(frozen=True)
class Extraction:
    """What a docstring gave: examples in order (no duplicates) and text that did not parse."""

    examples: tuple[Example, ...] = ()
    unparsed: tuple[Unparsed, ...] = ()


def find_function(prompt: str, name: str) -> ast.FunctionDef | None:
    """The top-level ``def name`` in the prompt, or None when the prompt has none."""
    try:
        module = parse_module(prompt)
    except SyntaxError:
        return None
    return next((n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == name), None)


def _docstring_node(fn: ast.FunctionDef) -> ast.Constant | None:
    # Not only body[0]: HumanEval/115 has ``import math`` before its "docstring".
    for stmt in fn.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            if isinstance(stmt.value.value, str):
                return stmt.value
    return None


def docstring_source(prompt: str, entry_point: str) -> str:
    """The entry point's docstring as written (escapes not applied), or "" when there is none.

    Raw text, not the string's value: ``remove_vowels("abcdef\\nghijklm")`` in HumanEval/51 is an
    example only while its backslash is still a backslash.
    """
    fn = find_function(prompt, entry_point)
    node = _docstring_node(fn) if fn else None
    segment = ast.get_source_segment(prompt, node) if node else None
    if not segment:
        return ""
    body = segment.lstrip("rRuUbBfF")
    quote = body[:3] if body[:3] in ('"""', "'''") else body[:1]
    return body[len(quote) : len(body) - len(quote)]


def instruction_text(prompt: str, entry_point: str) -> str:
    """The entry point's docstring, cleaned of indentation: the task in natural language."""
    fn = find_function(prompt, entry_point)
    node = _docstring_node(fn) if fn else None
    return inspect.cleandoc(node.value).strip() if node else ""


def parameters(prompt: str, entry_point: str) -> tuple[str, ...]:
    """The entry point's positional parameter names, in order."""
    fn = find_function(prompt, entry_point)
    return tuple(a.arg for a in fn.args.args) if fn else ()


def extract_examples(prompt: str, entry_point: str) -> Extraction:
    """Every example in the entry point's docstring that reads as a call and a literal."""
    doc = docstring_source(prompt, entry_point)
    if not doc:
        return Extraction()
    if ">>>" in doc:
        found = _doctest_examples(doc, entry_point)
    else:
        params = parameters(prompt, entry_point)
        defined = _defined_names(prompt)
        found = (
            _inline_examples(doc, entry_point, defined)
            + _for_output_examples(doc, entry_point, params)
            + _input_output_examples(doc, entry_point, params)
            + _assign_return_examples(doc, entry_point, params)
        )
    examples: list[Example] = []
    unparsed: list[Unparsed] = []
    seen: set[tuple[str, str]] = set()
    for item in found:
        if isinstance(item, Unparsed):
            unparsed.append(item)
        elif (key := (item.call, repr(item.value))) not in seen:
            seen.add(key)
            examples.append(item)
    return Extraction(tuple(examples), tuple(unparsed))


def _defined_names(prompt: str) -> frozenset[str]:
    try:
        module = parse_module(prompt)
    except SyntaxError:
        return frozenset()
    return frozenset(n.name for n in ast.walk(module) if isinstance(n, ast.FunctionDef))


def _doctest_examples(doc: str, entry_point: str) -> list[Found]:
    found: list[Found] = []
    for ex in doctest.DocTestParser().get_examples(doc):
        source, want = ex.source.strip(), ex.want.strip()
        try:
            expr = parse_expression(source).body
        except SyntaxError:
            found.append(Unparsed(source, "not a Python expression"))
            continue
        if not want and isinstance(expr, ast.Compare):
            found.append(_from_comparison(source, expr, entry_point))
            continue
        call = ast.get_source_segment(source, expr) or source
        if not want:
            # doctest prints nothing for None: an empty output means the call returned None.
            found.append(make_example(call, "None", entry_point, "doctest", source))
        else:
            found.append(make_example(call, want, entry_point, "doctest", f"{source} -> {want}"))
    return found


def _from_comparison(source: str, expr: ast.Compare, entry_point: str) -> Found:
    """``>>> f(x) == y`` with no output line: the comparison itself is the example."""
    if len(expr.ops) == 1 and isinstance(expr.ops[0], ast.Eq):
        left, right = expr.left, expr.comparators[0]
        for call_side, value_side in ((left, right), (right, left)):
            ok, _ = literal_value(value_side)
            if ok and calls_name(call_side, entry_point):
                call = ast.get_source_segment(source, call_side) or ""
                value = ast.get_source_segment(source, value_side) or ""
                return make_example(call, value, entry_point, "doctest", source)
    return Unparsed(source, "a comparison that is not '<call> == <literal>'")


def _scan(text: str, start: int = 0) -> Iterator[tuple[int, str, int, bool]]:
    """Each character from ``start``: its index, itself, the bracket depth after it, and
    whether it is code (not inside a string literal, where a backslash escapes)."""
    depth, quote, escaped = 0, "", False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
            yield i, ch, depth, False
            continue
        if ch in "'\"":
            quote = ch
            yield i, ch, depth, False
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        yield i, ch, depth, True


def _call_end(text: str, open_paren: int) -> int | None:
    """Index just past the ``)`` that closes ``text[open_paren]``, skipping string literals."""
    for i, ch, depth, code in _scan(text, open_paren):
        if code and ch in ")]}" and depth == 0:
            return i + 1
    return None


def _inline_examples(doc: str, entry_point: str, defined: frozenset[str]) -> list[Found]:
    """``f(x) == y``, ``f(x) ➞ y``, ``f(x) => y``, ``f(x) returns y``, ...: call then value."""
    found: list[Found] = []
    own_call = re.compile(rf"(?<![\w.]){re.escape(entry_point)}\s*\(")
    line_start = 0
    while line_start < len(doc):
        line_end = doc.find("\n", line_start)
        line_end = len(doc) if line_end < 0 else line_end
        line = doc[line_start:line_end]
        start, name = _first_call(line, own_call, entry_point, defined)
        if start is None:
            line_start = line_end + 1
            continue
        open_paren = doc.index("(", line_start + start)
        end = _call_end(doc, open_paren)
        if end is None:
            line_start = line_end + 1
            continue
        call_line_end = doc.find("\n", end)
        call_line_end = len(doc) if call_line_end < 0 else call_line_end
        tail = doc[end:call_line_end]
        sep = _SEPARATOR.match(tail)
        if sep and tail[sep.end() :].strip():
            call = re.sub(r"\s*\n\s*", " ", doc[line_start + start : end])
            style = "inline"
            if name != entry_point:  # "grade_equation(...)" in numerical_letter_grade's docstring
                call, style = entry_point + call[len(name) :], "renamed"
            text = f"{call} {tail.strip()}"
            found.append(make_example(call, tail[sep.end() :], entry_point, style, text))
        line_start = call_line_end + 1
    return found


def _first_call(
    line: str, own_call: re.Pattern[str], entry_point: str, defined: frozenset[str]
) -> tuple[int | None, str]:
    match = own_call.search(line)
    if match:
        return match.start(), entry_point
    other = _LINE_CALL.match(line)
    if other and other.group("name") not in defined | BUILTINS | {"For", "for", "assert"}:
        return other.start("name"), other.group("name")
    return None, ""


def _bindings(text: str) -> list[tuple[str | None, str]]:
    """``a = 1, b = "x"`` or ``grid : [...]`` or bare values, up to the first piece of prose."""
    out: list[tuple[str | None, str]] = []
    for piece in _split_top_level(text):
        match = _BINDING.match(piece)
        name, value = (match.group("name"), match.group("value")) if match else (None, piece)
        if not read_literal(value)[0]:
            break  # prose after the arguments: "N = 1000, the sum of digits will be 1"
        out.append((name, value.strip()))
    return out


def _split_top_level(text: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    for _, ch, depth, code in _scan(text):
        if code and ch == "," and depth == 0:
            pieces.append("".join(current))
            current = []
            continue
        current.append(ch)
    pieces.append("".join(current))
    return [p for p in pieces if p.strip()]


def _build_call(
    entry_point: str, bindings: list[tuple[str | None, str]], params: tuple[str, ...]
) -> str | None:
    """Positional call in signature order when the example names the parameters."""
    if not bindings or len(bindings) != len(params):
        return None
    names = [n for n, _ in bindings]
    values = [_literal_text(v) for _, v in bindings]
    if all(names) and set(names) == set(params):
        by_name = dict(zip(names, values, strict=True))
        values = [by_name[p] for p in params]
    return f"{entry_point}({', '.join(values)})"


def _literal_text(value: str) -> str:
    ok, parsed = read_literal(value)
    return repr(parsed) if ok else value


def _for_output_examples(doc: str, entry_point: str, params: tuple[str, ...]) -> list[Found]:
    """``For lst = [1,2,3] the output should be 14`` (and "the result should be")."""
    found: list[Found] = []
    for line in doc.splitlines():
        match = _FOR_OUTPUT.match(line)
        if match:
            found.append(
                _from_arguments(
                    match["args"], match["value"], entry_point, params, line, "for_output"
                )
            )
    return found


def _from_arguments(
    args: str, value: str, entry_point: str, params: tuple[str, ...], text: str, style: str
) -> Found:
    if len(params) == 1 and not _BINDING.match(args) and read_literal(args)[0]:
        bindings: list[tuple[str | None, str]] = [(None, args)]  # one bare value, commas and all
    else:
        bindings = _bindings(args)
    call = _build_call(entry_point, bindings, params)
    if call is None:
        return Unparsed(text.strip(), f"the arguments do not match {entry_point}{params}")
    return make_example(call, value, entry_point, style, text.strip())


def _input_output_examples(doc: str, entry_point: str, params: tuple[str, ...]) -> list[Found]:
    """``Input: arr = [1, 2], k = 1`` ... ``Output: [2]``, over one or more lines."""
    found: list[Found] = []
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        start = _INPUT.match(lines[i])
        if not start:
            i += 1
            continue
        parts, j = [start["rest"]], i + 1
        while j < len(lines) and not _OUTPUT.match(lines[j]) and not _INPUT.match(lines[j]):
            parts.append(lines[j])
            j += 1
        if j == len(lines) or _INPUT.match(lines[j]):
            found.append(Unparsed(lines[i].strip(), "an 'Input:' with no 'Output:'"))
            i = j
            continue
        args = ", ".join(p.strip() for p in parts if p.strip())
        value = lines[j].split(":", 1)[1]  # the line matched _OUTPUT: "Output: <value>"
        text = f"Input: {args} Output: {value.strip()}"
        found.append(_from_arguments(args, value, entry_point, params, text, "input_output"))
        i = j + 1
    return found


def _assign_return_examples(doc: str, entry_point: str, params: tuple[str, ...]) -> list[Found]:
    """``arr = [2, 1]`` then, after any ``-> step`` lines, ``return [...]`` (HumanEval/105)."""
    found: list[Found] = []
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        match = _ASSIGNED.match(line)
        if not match or len(params) != 1 or match["name"] != params[0]:
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip().startswith("->"):
            j += 1
        returned = _RETURNED.match(lines[j]) if j < len(lines) else None
        if returned:
            call = _build_call(entry_point, [(None, match["value"])], params)
            text = f"{line.strip()} {lines[j].strip()}"
            if call is None or not read_literal(match["value"])[0]:
                found.append(Unparsed(text, "the argument is not a Python literal"))
            else:
                value = returned["value"]
                found.append(make_example(call, value, entry_point, "assign_return", text))
    return found
