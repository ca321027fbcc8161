"""The sandbox run by an ordinary user: the same verdicts, and warnings where the kernel says no.

As root, the test starts a script as uid 65534 (``setpriv``). That user must be able to run this
interpreter: where Python lives under a home directory others can't enter (pyenv under /root,
mode 700), or a venv sits in a clone under a 0700 temp dir, the script runs in a private mount
namespace in which each such directory is replaced by a tmpfs others can traverse, holding
only the interpreter's or the venv's tree (bind-mounted back, read-only to them as before).
Nothing changes outside that namespace. The "kernel refuses namespaces" case installs, in the
script, a seccomp filter that fails ``unshare``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest

import persd

NOBODY = 65534
TARGET = Path("/tmp") / ("persd-user-" + uuid.uuid4().hex[:12])  # DAC lets nobody write here

SCRIPT = textwrap.dedent(
    """
    import ctypes, json, os, socket, struct, sys
    from persd.records import Test
    from persd.sandbox import Job, Sandbox, SandboxConfig

    target, degraded = sys.argv[1], sys.argv[2] == "1"
    if degraded:  # the kernel refuses unshare(): no user, network or mount namespaces
        libc = ctypes.CDLL(None, use_errno=True)
        prog = b"".join(struct.pack("HBBI", *op) for op in [
            (0x20, 0, 0, 0),  # load the syscall number
            (0x15, 0, 1, 272),  # unshare?
            (0x06, 0, 0, 0x00050000 | 1),  # EPERM
            (0x06, 0, 0, 0x7FFF0000),  # allow
        ])
        buf = ctypes.create_string_buffer(prog, len(prog))
        assert libc.prctl(38, 1, 0, 0, 0) == 0  # no_new_privs
        assert libc.prctl(22, 2, struct.pack("HxxxxxxQ", 4, ctypes.addressof(buf)), 0, 0) == 0

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    tests = (Test(kind="call", source="", call="add(2, 3)", expected="5"),)
    programs = {
        "normal": "def add(a, b):\\n    return a + b\\n",
        "busy_loop": "def add(a, b):\\n    while True:\\n        pass\\n",
        "kill_parent": "import os\\nos.kill(os.getppid(), 9)\\n",
        "connect": "import socket\\nsocket.create_connection(('127.0.0.1', %d), timeout=1)\\n"
        % port,
        "write_outside": "open(%r, 'w').write('x')\\n" % target,
        "after": "def add(a, b):\\n    return a + b\\n",
    }
    out = {"uid": os.getuid(), "euid": os.geteuid()}
    with Sandbox(SandboxConfig(workers=1, wall_limit_s=2, cpu_limit_s=0.5)) as sb:
        out["features"], out["warnings"] = sb.features, sb.warnings
        worker = next(iter(sb._idle.queue))
        for name, program in programs.items():
            fb = sb.run(Job(program=program, tests=tests, entry_point="add"))
            out[name] = {"status": fb.status, "exception": fb.exception, "detail": fb.detail}
        out["worker_alive"] = worker.alive() and next(iter(sb._idle.queue)) is worker
    try:
        listener.accept()
        out["listener_connected"] = True
    except BlockingIOError:
        out["listener_connected"] = False
    out["target_exists"] = os.path.exists(target)
    print(json.dumps(out))
    """
)


def _blocking_ancestors(path: Path) -> list[Path]:
    """Directories above ``path`` that others may not enter."""
    return [p for p in reversed(path.parents) if not os.stat(p).st_mode & stat.S_IXOTH]


def _nobody_can_run_python(workdir: Path) -> bool:
    """Whether nobody runs THIS interpreter. A venv whose interpreter links into a closed
    directory (pyenv under /root) can look runnable: the exec resolves, through the venv, to
    another Python (the system's), which then cannot start the sandbox's own interpreter."""
    probe = [sys.executable, "-c", "import sys, persd.sandbox; print(sys.version)"]
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *probe]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(workdir / "src")}
    done = subprocess.run(cmd, capture_output=True, cwd="/", env=env, text=True)
    return done.returncode == 0 and done.stdout.strip() == sys.version


def _launcher(workdir: Path) -> list[str]:
    """The command prefix that runs a program as nobody with this interpreter reachable."""
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if _nobody_can_run_python(workdir):
        return drop
    # The interpreter's real home (a venv's python is a link to it) and the venv itself,
    # whose site-packages the script imports: each may sit under a closed directory (pyenv
    # under /root; a venv in a clone under a 0700 temp dir).
    homes = {Path(os.path.realpath(sys.executable)).parent.parent, Path(sys.prefix)}
    opened: dict[Path, set[Path]] = {}
    for home in homes:
        blocking = _blocking_ancestors(home)
        if len(blocking) > 1 or shutil.which("unshare") is None or shutil.which("mount") is None:
            pytest.skip(
                f"uid {NOBODY} cannot run {sys.executable} (closed directories above "
                f"{home}: {[str(p) for p in blocking]}) and no way was found to open only it"
            )
        if blocking:
            closed = blocking[0]
            opened.setdefault(closed, set()).add(closed / home.relative_to(closed).parts[0])
    lines = ["set -e"]
    for i, (closed, children) in enumerate(sorted(opened.items())):
        stages = []
        for j, child in enumerate(sorted(children)):  # e.g. /root/.pyenv
            stage = workdir / f"stage{i}-{j}"
            stage.mkdir()
            stages.append((stage, child))
            lines.append(f"mount --bind '{child}' '{stage}'")
        lines.append(f"mount -t tmpfs -o mode=0711,size=1m persd-open '{closed}'")
        for stage, child in stages:
            lines += [f"mkdir '{child}'", f"mount --move '{stage}' '{child}'"]
    script = "\n".join([*lines, 'exec "$@"'])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *drop]


@pytest.fixture(scope="module")
def run_as_nobody():
    if os.getuid() != 0:
        pytest.skip("not root: the other sandbox suites already run as an ordinary user")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="persd-user-test-"))
    os.chmod(workdir, 0o755)
    (workdir / "script.py").write_text(SCRIPT)
    # A copy of the package others can read: the checkout may sit in a private directory
    # (a CI clone under a 0700 temp dir), which nobody can't enter.
    shutil.copytree(
        Path(persd.__file__).parent,
        workdir / "src" / "persd",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for path in (workdir / "src").rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    (workdir / "src").chmod(0o755)
    launcher = _launcher(workdir)

    def run(degraded: bool) -> dict:
        cmd = [*launcher, sys.executable, str(workdir / "script.py"), str(TARGET)]
        cmd.append("1" if degraded else "0")
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(workdir),
            "TMPDIR": "/tmp",
            "PYTHONPATH": str(workdir / "src"),
        }
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env=env, timeout=60)
        assert done.returncode == 0, done.stderr[-3000:]
        return {**json.loads(done.stdout.splitlines()[-1]), "stderr": done.stderr}

    try:
        yield run
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if TARGET.exists():
            TARGET.unlink()


def _assert_right_verdicts(out: dict) -> None:
    assert (out["uid"], out["euid"]) == (NOBODY, NOBODY)
    assert out["features"]["sample_uid"] == NOBODY  # no uid of its own to drop to
    assert out["normal"]["status"] == "passed"
    assert out["busy_loop"]["status"] == "timeout"
    assert (out["kill_parent"]["status"], out["kill_parent"]["exception"]) == (
        "error",
        "PermissionError",
    )
    assert out["worker_alive"]
    assert (out["connect"]["status"], out["connect"]["exception"]) == ("error", "PermissionError")
    assert not out["listener_connected"]
    assert (out["write_outside"]["status"], out["write_outside"]["exception"]) == (
        "error",
        "PermissionError",
    )
    assert not out["target_exists"] and not TARGET.exists()
    assert out["after"]["status"] == "passed"


def test_ordinary_user_gets_the_same_verdicts(run_as_nobody):
    out = run_as_nobody(degraded=False)
    _assert_right_verdicts(out)
    if out["features"]["network_namespace"]:  # this kernel lets users make namespaces
        assert out["features"]["mount_namespace"]
        assert out["warnings"] == []


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the test's seccomp filter is x86_64")
def test_ordinary_user_without_namespaces_still_right_and_warned(run_as_nobody):
    out = run_as_nobody(degraded=True)
    _assert_right_verdicts(out)
    features = out["features"]
    assert not features["network_namespace"] and not features["mount_namespace"]
    assert features["landlock_abi"] >= 1 and features["seccomp"]
    warnings = "\n".join(out["warnings"])
    assert "no network namespace" in warnings
    assert "no private tmpfs for scratch directories" in warnings
    assert "no network namespace" in out["stderr"]  # logged as a warning when it starts
