"""Run a task's tests from the trusted parent against one sandboxed sample.

Expected values and assertion logic stay here. The sample only evaluates the calls it is
asked for and returns plain data; the comparison is done on values this process built.
"""

from __future__ import annotations

import linecache
import traceback
import types
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from persd.records import Outcome, Test
from persd.sandbox._child import codec
from persd.sandbox.channel import Channel, ChannelClosed, ProtocolViolation
from persd.sandbox.compare import parse_expected, values_match
from persd.sandbox.remote import split_assert, trusted_namespace

MAX_REPR = 300
CHECK_FILE = "<check>"


class SampleRaised(Exception):
    """The program raised while computing a value the test asked for."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(reply.get("msg", ""))
        self.reply = reply


class SampleExited(Exception):
    """The program called sys.exit (or equivalent) during a test."""


class _Opaque:
    """Stands for a value that was not plain data: equal to nothing but itself."""

    def __init__(self, type_name: str, text: str) -> None:
        self.type_name, self.text = type_name, text

    def __repr__(self) -> str:
        return self.text or f"<{self.type_name} object>"


@dataclass
class RunState:
    outcomes: list[Outcome] = field(default_factory=list)
    exited: bool = False  # the program exited during a test
    closed: bool = False  # the channel closed before every test ran
    corrupt: str | None = None  # the sample broke the reply protocol (tampered harness)
    # Candidate calls sent ahead (see Speculation), and whether the check made one that was
    # not the next predicted (then the run says nothing and must be repeated without it).
    ahead: Speculation | None = None
    mispredicted: bool = False

    @property
    def unused_ahead(self) -> int:
        """Calls sent ahead that the check never made (the sample may have run them)."""
        return 0 if self.ahead is None else self.ahead.sent - self.ahead.used


class Mispredicted(BaseException):
    """The check made a call other than the one sent ahead: this run must be discarded.

    A BaseException, so no ``except Exception`` in a check can swallow it."""


# Candidate calls a check made in an earlier passing run, as request frames, by (context,
# check source, entry point); None once a check was seen to make other calls (unseeded random
# inputs, calls that depend on results). Only this process's own trusted runs fill it.
_PREDICTED: dict[tuple[str, str, str], tuple[bytes, ...] | None] = {}
AHEAD_BYTES = 32 << 10  # sent ahead at most: always fits the socket's buffer, so no deadlock


@dataclass
class Speculation:
    """The calls of an earlier run of the same check, sent before the check runs here.

    The sample answers them in order, without a round trip each; the check then runs as
    always, and each call it makes takes the next answer if its request is byte for byte the
    next one sent. A call that differs raises Mispredicted: the sample has already run calls
    the check did not make, so the whole run is discarded and repeated without this.
    """

    frames: tuple[bytes, ...]
    sent: int
    key: tuple[str, str, str] = ("", "", "")
    used: int = 0
    missed: bool = False

    def give_up(self) -> None:
        """Never send this check's calls ahead again (its runs had to be repeated)."""
        _PREDICTED[self.key] = None


def short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as e:  # noqa: BLE001 - values are plain data, but be safe
        text = f"<repr failed: {type(e).__name__}>"
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."


def _value(reply: dict[str, Any]) -> Any:
    op = reply.get("op")
    if op == "value":
        try:
            return codec.decode(reply.get("value"))
        except (ValueError, TypeError, RecursionError) as e:
            raise ProtocolViolation(f"bad value: {e}") from None
    if op == "unencodable":
        return _Opaque(str(reply.get("type", "?")), str(reply.get("repr", ""))[:MAX_REPR])
    if op == "raised":
        raise SampleRaised(reply)
    if op == "exited":
        raise SampleExited
    raise ProtocolViolation(f"unexpected reply {op!r}")


def _raised_outcome(index: int, e: SampleRaised, **kw: Any) -> Outcome:
    r = e.reply
    return Outcome(
        index=index,
        passed=False,
        exception=str(r.get("exc", "Exception"))[:100],
        message=str(r.get("msg", ""))[:MAX_REPR],
        traceback=str(r.get("tb", ""))[:2000] or None,
        **kw,
    )


def _call_test(ch: Channel, i: int, test: Test) -> Outcome:
    assert test.call is not None and test.expected is not None
    expected = parse_expected(test.expected)
    try:
        actual = _value(ch.request({"op": "eval", "expr": test.call}))
    except SampleRaised as e:
        return _raised_outcome(i, e, call=test.call, expected=short(expected))
    ok = not isinstance(actual, _Opaque) and values_match(expected, actual, test.comparison)
    return Outcome(
        index=i, passed=ok, call=test.call, expected=short(expected), actual=short(actual)
    )


def _assert_test(ch: Channel, i: int, test: Test, context: dict[str, Any]) -> Outcome:
    split = split_assert(test.source, frozenset(context))
    values: dict[str, Any] = {}
    for n, expr in enumerate(split.remote):
        try:
            values[f"_r{n}"] = _value(ch.request({"op": "eval", "expr": expr}))
        except SampleRaised as e:
            return _raised_outcome(i, e, call=expr, source=test.source)
    call = split.remote[0] if len(split.remote) == 1 else None
    actual = short(values["_r0"]) if call else None
    if any(isinstance(v, _Opaque) for v in values.values()):
        return Outcome(index=i, passed=False, call=call, actual=actual, source=test.source,
                       message="a value is not plain data and cannot be compared")  # fmt: skip
    # The program's functions called from a comprehension here (see remote.py).
    calls = {name: _Candidate(ch, name) for name in split.calls}
    try:
        namespace = trusted_namespace({**context, **values, **calls}.items())
        ok = bool(eval(split.check, namespace))
    except SampleRaised as e:
        last = next(
            (c.last_call for c in calls.values() if c.last_call and not c.last_actual), None
        )
        return _raised_outcome(i, e, call=last, source=test.source)
    except (ChannelClosed, SampleExited, ProtocolViolation):
        raise
    except Exception as e:  # noqa: BLE001 - the assertion itself failed to evaluate
        return Outcome(index=i, passed=False, call=call, actual=actual, source=test.source,
                       exception=type(e).__name__, message=str(e)[:MAX_REPR])  # fmt: skip
    return Outcome(index=i, passed=ok, call=call, actual=actual, source=test.source)


@lru_cache(maxsize=1024)
def _compile_trusted(source: str, filename: str) -> Any:
    name = f"{filename}{hash(source)}"  # unique per source, so tracebacks show the right lines
    linecache.cache[name] = (len(source), None, source.splitlines(True), "")
    return compile(source, name, "exec", dont_inherit=True)


@lru_cache(maxsize=256)
def _context(test_context: str) -> dict[str, Any]:
    ns = trusted_namespace()
    if test_context:
        exec(_compile_trusted(test_context, "<context>"), ns)
    return ns


def trusted_context(test_context: str) -> dict[str, Any]:
    """The task's trusted helpers (HumanEval: the prompt's functions), run here, not there.

    Executed once per task and copied per sample: tests only read these names.
    """
    return dict(_context(test_context))


@lru_cache(maxsize=256)
def _check_function(test_context: str, source: str) -> tuple[dict[str, Any], Any]:
    ns = trusted_context(test_context)
    exec(_compile_trusted(source, CHECK_FILE), ns)
    return ns, ns["check"]


class _Candidate:
    """What ``check(candidate)`` calls: each call crosses to the sample as plain data.

    ``last_call`` and ``last_actual`` (shown only when a test fails) are rendered when read,
    from the encoded arguments and the reply as they crossed: both are fresh trees nobody
    mutates, so the text is what it was at the call, without a repr on every passing call.
    """

    def __init__(
        self, ch: Channel, entry_point: str, ahead: Speculation | None = None, record: bool = False
    ) -> None:
        self.ch, self.entry_point = ch, entry_point
        self.ahead = ahead
        self.frames: list[bytes] | None = [] if record else None  # the requests, in order
        self._payload: dict[str, Any] | None = None
        self._reply: dict[str, Any] | None = None
        self._shown: str | None = None  # a call whose arguments could not be encoded

    def _show(self, args: Any, kwargs: dict[str, Any]) -> str:
        shown = ", ".join([short(a) for a in args] + [f"{k}={short(v)}" for k, v in kwargs.items()])
        return f"{self.entry_point}({shown})"

    @property
    def last_call(self) -> str | None:
        if self._payload is None:
            return self._shown
        p = self._payload
        return self._show(codec.decode(p["args"]), codec.decode(p["kwargs"]))

    @property
    def last_actual(self) -> str | None:
        return None if self._reply is None else short(_value(self._reply))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            payload = {"args": codec.encode(list(args)), "kwargs": codec.encode(kwargs)}
        except codec.Unencodable as e:
            self._payload = self._reply = None
            self._shown = self._show(args, kwargs)
            raise TypeError(f"test passes a non-data argument ({e}) to the program") from None
        self._payload, self._reply = payload, None
        frame = codec.dumps({"op": "apply", "fn": self.entry_point, **payload})
        if self.frames is not None:
            self.frames.append(frame)
        ahead = self.ahead
        if ahead is not None and (ahead.missed or ahead.used < ahead.sent):
            if ahead.missed or frame != ahead.frames[ahead.used]:
                ahead.missed = True
                raise Mispredicted
            ahead.used += 1  # its answer is the next one on the channel
        else:
            self.ch.send_frame(frame)
        reply = self.ch.recv()
        value = _value(reply)
        self._reply = reply
        return value


def _check_test(
    ch: Channel, i: int, test: Test, test_context: str, entry_point: str, state: RunState | None
) -> Outcome:
    """Run a check function here; with ``state``, its calls may be sent ahead (Speculation)."""
    base, check = _check_function(test_context, test.source)
    ns = dict(base)  # per sample: the check must see this sample's candidate, nobody else's
    check = types.FunctionType(check.__code__, ns, check.__name__, check.__defaults__)
    key = (test_context, test.source, entry_point)
    predicted = _PREDICTED.get(key)
    ahead = None
    if state is not None and predicted:
        ahead = state.ahead = Speculation(predicted, sent=len(predicted), key=key)
        ch.send_frame(b"".join(predicted))
    candidate = _Candidate(ch, entry_point, ahead, record=key not in _PREDICTED)
    # Inside the check the entry point's own name means the program's function (HumanEval/33
    # compares candidate(x) with sort_third(x)), not the prompt's docstring-only stub.
    ns[entry_point] = candidate
    try:
        outcome = _run_check(check, candidate, i)
    except Mispredicted:
        _PREDICTED[key] = None  # this check's calls vary: never sent ahead again
        raise
    if ahead is not None:
        if ahead.missed:  # a check that caught Mispredicted itself
            _PREDICTED[key] = None
            raise Mispredicted
        if outcome.passed and ahead.used < ahead.sent:
            _PREDICTED[key] = None  # it passed with fewer calls: they vary
    elif candidate.frames and outcome.passed and key not in _PREDICTED:
        n, size = 0, 0  # the calls that fit in AHEAD_BYTES; later ones go one at a time
        while n < len(candidate.frames) and size + len(candidate.frames[n]) <= AHEAD_BYTES:
            size += len(candidate.frames[n])
            n += 1
        if n:
            if len(_PREDICTED) >= 4096:
                _PREDICTED.clear()
            _PREDICTED[key] = tuple(candidate.frames[:n])
    return outcome


def _run_check(check: Any, candidate: _Candidate, i: int) -> Outcome:
    try:
        check(candidate)
    except SampleRaised as e:
        return _raised_outcome(i, e, call=candidate.last_call)
    except AssertionError:
        line = _failing_line()
        return Outcome(index=i, passed=False, call=candidate.last_call,
                       actual=candidate.last_actual, source=line)  # fmt: skip
    except (ChannelClosed, SampleExited, ProtocolViolation):
        raise
    except Exception as e:  # noqa: BLE001 - e.g. the check did arithmetic on a wrong type
        return Outcome(index=i, passed=False, call=candidate.last_call,
                       actual=candidate.last_actual, exception=type(e).__name__,
                       message=str(e)[:MAX_REPR], source=_failing_line())  # fmt: skip
    return Outcome(index=i, passed=True)


def _failing_line() -> str | None:
    import sys

    frames = traceback.extract_tb(sys.exc_info()[2])
    lines = [f.line for f in frames if f.filename.startswith(CHECK_FILE) and f.line]
    return lines[-1] if lines else None


def run_tests(
    ch: Channel,
    tests: tuple[Test, ...],
    *,
    test_context: str,
    entry_point: str,
    speculate: bool = False,
) -> RunState:
    """Run every test in order; stop only when the sample is gone.

    With ``speculate``, a check that is the last test may send its calls ahead (Speculation);
    the caller must then honour ``unused_ahead`` and ``mispredicted`` (see workers.py).
    """
    state = RunState()
    context = trusted_context(test_context)
    last = len(tests) - 1
    for i, test in enumerate(tests):
        try:
            if test.kind == "call":
                outcome = _call_test(ch, i, test)
            elif test.kind == "assert":
                outcome = _assert_test(ch, i, test, context)
            else:
                ahead = state if speculate and i == last else None
                outcome = _check_test(ch, i, test, test_context, entry_point, ahead)
        except Mispredicted:
            state.mispredicted = True
            return state
        except SampleExited:
            state.exited = True
            return state
        except ChannelClosed:
            state.closed = True
            return state
        except ProtocolViolation as e:
            state.corrupt = str(e)
            return state
        state.outcomes.append(outcome)
    return state
