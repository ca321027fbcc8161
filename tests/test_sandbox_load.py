"""Verdicts must not depend on how busy the machine is.

A CPU-bound sample on a loaded machine gets a share of a core, so it reaches its wall-clock
limit before it uses its CPU time: the old worker called a program that grows a list until
memory runs out a ``timeout`` whenever the machine was busy. Here busy processes, each in its
own session (the kernel's autogroup scheduler gives every session an equal share, so these
take most of the CPU from the sample), run beside the sandbox while the hostile cases run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from persd.records import Test
from persd.sandbox import Job, Sandbox, SandboxConfig

ADD_TESTS = (Test(kind="call", source="assert add(2, 3) == 5", call="add(2, 3)", expected="5"),)
GROWING_LIST = """
def add(a, b):
    xs = []
    while True:
        xs.append([0] * 100000)
"""
SPIN = "def add(a, b):\n    while True:\n        pass\n"
SLEEP = "import time\ndef add(a, b):\n    time.sleep(30)\n"
# Enough sessions that the sample gets about a tenth of the CPU: growing the list to the
# memory limit then takes longer than the wall-clock limit on any machine this runs on.
BUSY = 4 * (os.cpu_count() or 1) + 2
CONFIG = SandboxConfig(
    workers=1,
    wall_limit_s=1.0,
    cpu_limit_s=1.0,
    memory_limit_mb=256,
    sample_uid=1_600_000_000 + os.getpid() % 100_000 * 16,
)


@pytest.fixture(scope="module")
def busy_machine():
    spinners = [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"], start_new_session=True
        )  # own session: own autogroup
        for _ in range(BUSY)
    ]
    try:
        with Sandbox(CONFIG) as sb:
            yield sb
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def _run(sb: Sandbox, program: str):
    return sb.run(Job(program=program, tests=ADD_TESTS, entry_point="add"))


def test_memory_verdict_holds_under_load(busy_machine: Sandbox) -> None:
    for i in range(10):
        fb = _run(busy_machine, GROWING_LIST)
        assert fb.status == "memory", f"run {i + 1} of 10: {fb.status} ({fb.detail})"


def test_spinning_sample_still_times_out_under_load(busy_machine: Sandbox) -> None:
    fb = _run(busy_machine, SPIN)
    assert fb.status == "timeout", fb


def test_sleeping_sample_times_out_at_the_wall_clock(busy_machine: Sandbox) -> None:
    """Waiting for the CPU is not charged to a sample; sleeping is, so it gets no extension."""
    start = time.monotonic()
    fb = _run(busy_machine, SLEEP)
    assert fb.status == "timeout" and "wall-clock" in (fb.detail or ""), fb
    assert time.monotonic() - start < CONFIG.wall_limit_s + 2.0


# ---- a sample still allocating at its CPU limit ------------------------------------------------
# On a loaded machine a program growing towards its memory limit pays more CPU per byte (page
# faults, the collector): GROWING_LIST used 0.35 s of CPU idle and 1.02 s once in a CI run,
# where it was called a timeout. A sample at its CPU limit that has already mapped most of its
# memory limit runs on for a bounded grace, so the memory limit decides. These programs make
# that state without load: hold most of the memory, burn CPU past the limit, then allocate.
HOLD_BURN_GROW = """
import time
def add(a, b):
    ballast = bytearray(210 * 2**20)  # 82% of the 256 MB limit, mapped
    while time.process_time() < 1.2:  # the process's CPU: past the 1 s limit, inside the grace
        pass
    more = bytearray(100 * 2**20)
"""
HOLD_AND_SPIN = """
def add(a, b):
    ballast = bytearray(210 * 2**20)
    while True:
        pass
"""
QUIET = CONFIG.model_copy(update={"wall_limit_s": 3.0})


@pytest.fixture(scope="module")
def quiet_sandbox():
    with Sandbox(QUIET) as sb:
        yield sb


def test_sample_near_its_memory_limit_gets_a_cpu_grace(quiet_sandbox: Sandbox) -> None:
    fb = _run(quiet_sandbox, HOLD_BURN_GROW)
    assert fb.status == "memory", fb


def test_the_cpu_grace_is_bounded(quiet_sandbox: Sandbox) -> None:
    """Holding memory and spinning still ends as a timeout, within the grace (1.5 x 1 s)."""
    fb = _run(quiet_sandbox, HOLD_AND_SPIN)
    assert fb.status == "timeout" and "CPU-time" in (fb.detail or ""), fb
    assert fb.cpu_s < 1.5 + 0.3, fb.cpu_s
