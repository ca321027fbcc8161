"""Benchmark and model code parse without warnings (issue 34, item 7): MBPP's gold code holds
regexes like "\\d+" in plain strings, and the quick tests printed 26 compiler warnings."""

from __future__ import annotations

import warnings

import pytest

from persd.pysource import parse_expression, parse_module
from persd.tasks import load_mbpp

MODEL_OUTPUT = 'import re\ndef digits(s):\n    return re.findall("\\d+", s)\n'


def _warnings_of(fn) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [f"{w.category.__name__}: {w.message}" for w in caught]


def test_mbpp_in_either_prompt_shape_loads_without_a_warning():
    assert _warnings_of(lambda: load_mbpp(shape="signature")) == []
    assert _warnings_of(lambda: load_mbpp(shape="docstring")) == []


def test_model_code_with_invalid_escapes_parses_quietly():
    assert "\\d" in MODEL_OUTPUT  # what the compiler warns about
    assert _warnings_of(lambda: parse_module(MODEL_OUTPUT)) == []
    assert _warnings_of(lambda: parse_expression('"\\d" * 2')) == []
    with pytest.raises(SyntaxError):
        parse_module("def f(:\n")
