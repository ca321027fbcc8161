"""Hostile programs: each gets the verdict it earned and leaves the host as it was.

One sandbox serves the whole module (small limits keep it fast). Every case checks the
verdict, then that the host is unaffected: the canary and secret files are unchanged, no file
appeared where a program tried to write, the workers and a bystander process are alive and
unchanged, the loopback listeners heard nothing, no process of the sample's uid or under a
worker remains, and a normal program still passes.

What stops each attack, and so what a case needs from ``sandbox.features``:
- ``landlock`` (ABI >= 1): reading or writing files outside the scratch dir, /proc included.
- ``seccomp`` (x86_64): exec, sockets, setsid, ptrace, namespaces, signals outside the
  sample's process group, prlimit/setpriority on other processes.
- ``net``: seccomp (no sockets), or a network namespace plus Landlock ABI >= 4.
- ``signals``: seccomp, or Landlock ABI >= 6 (signal scoping).
- ``nproc``: RLIMIT_NPROC, which the kernel ignores for root: the sample must run as a
  non-root uid (persd drops to ``sample_uid`` when it runs as root).
Root-only: as root, samples run as a separate uid, so file modes protect the repo and home
as well; as an ordinary user only Landlock does. The verdicts asserted here are the same.
"""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from persd.records import Test
from persd.sandbox import Job, Sandbox, SandboxConfig

REPO = Path(__file__).resolve().parents[1]
ANSWER_KEY = REPO / "src" / "persd" / "data" / "humaneval.jsonl"
SECRET = "s3cret-" + uuid.uuid4().hex
TOKEN = uuid.uuid4().hex[:12]
CONFIG = SandboxConfig(
    workers=4,
    wall_limit_s=2.0,
    cpu_limit_s=1.0,
    memory_limit_mb=256,
    output_limit_kb=256,
    # Our own uids (as root), so that samples of other sandboxes on this machine (other
    # test runs) are not mistaken for ours.
    sample_uid=1_500_000_000 + os.getpid() % 100_000 * 16,
)

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = (
    Test(kind="call", source="assert add(2, 3) == 5", call="add(2, 3)", expected="5"),
    Test(kind="call", source="assert add(-1, 1) == 0", call="add(-1, 1)", expected="0"),
    Test(kind="assert", source="assert add(10, 5) == 15"),
)


# ---- the host side: listeners, canaries, a bystander, and the checks after every case ------


@dataclass
class Host:
    sandbox: Sandbox
    tmp: Path
    tcp: socket.socket
    udp: socket.socket
    victim: subprocess.Popen
    canary: Path  # exists, outside scratch; must stay unchanged
    secret_file: Path  # exists, holds SECRET; must stay unreadable and unchanged
    forbidden: tuple[Path, ...]  # programs try to create these; none may exist

    @property
    def subs(self) -> dict[str, str]:
        return {
            "@canary@": str(self.canary),
            "@secret_file@": str(self.secret_file),
            "@answer_key@": str(ANSWER_KEY),
            "@tmp_target@": str(self.forbidden[0]),
            "@repo_target@": str(self.forbidden[1]),
            "@home_target@": str(self.forbidden[2]),
            "@port@": str(self.tcp.getsockname()[1]),
            "@udp_port@": str(self.udp.getsockname()[1]),
            "@test_pid@": str(os.getpid()),
            "@victim_pid@": str(self.victim.pid),
            "@repo@": str(REPO),
            "@secret@": SECRET,
        }


def _proc_stat(pid: str) -> tuple[int, str] | None:
    """(parent pid, state) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0].decode()


def _real_uid(pid: str) -> int | None:
    # /proc/<pid> is owned by root for non-dumpable processes; the status line is the truth.
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _pids() -> list[str]:
    return [p for p in os.listdir("/proc") if p.isdigit()]


def _zygote_children(parents: set[int]) -> set[int]:
    found = set()
    for pid in _pids():
        stat = _proc_stat(pid)
        if stat is None or stat[0] not in parents:
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"zygote" in cmdline:
            found.add(int(pid))
    return found


def worker_pids() -> set[int]:
    """The sandbox workers: the children of our child, the zygote (they share its cmdline)."""
    return _zygote_children(_zygote_children({os.getpid()}))


def stray_processes(workers: set[int], sample_uids: range) -> list[str]:
    """Processes left by samples: below a worker, or running as a sample uid."""
    parents = {int(p): s[0] for p in _pids() if (s := _proc_stat(p)) is not None}
    stray = []
    for pid in parents:
        if pid in workers:
            continue
        uid = _real_uid(str(pid))
        ancestor, seen = parents.get(pid), 0
        while ancestor and ancestor not in workers and seen < 64:
            ancestor, seen = parents.get(ancestor), seen + 1
        if ancestor in workers or (uid is not None and uid in sample_uids):
            stray.append(f"{pid} (uid {uid}, stat {_proc_stat(str(pid))})")
    return stray


def assert_host_unaffected(host: Host, workers_before: set[int]) -> None:
    sb = host.sandbox
    assert host.victim.poll() is None, "the bystander process was killed"
    assert worker_pids() == workers_before, "a worker died or was replaced"
    assert host.canary.read_text() == "canary", "the canary file changed"
    assert host.secret_file.read_text() == SECRET
    for path in host.forbidden:
        assert not os.path.lexists(path), f"the program created {path}"
    with pytest.raises(BlockingIOError):
        host.tcp.accept()  # nothing connected to our listener
    with pytest.raises(BlockingIOError):
        host.udp.recvfrom(64)  # nothing was sent to it
    uids = range(sb.config.sample_uid, sb.config.sample_uid + 16)
    if os.getuid() != 0:
        uids = range(0)  # samples share our uid; the ancestry check still applies
    assert stray_processes(workers_before, uids) == []
    for w in sb._base.iterdir():  # noqa: SLF001 - host side of the scratch dirs
        assert list(w.iterdir()) == [], f"scratch left behind in {w}"
    fb = sb.run(Job(program=ADD, tests=ADD_TESTS, entry_point="add"))
    assert fb.status == "passed", fb


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("hostile")
    canary = tmp / "canary.txt"
    canary.write_text("canary")
    secret_file = tmp / "secret.txt"
    secret_file.write_text(SECRET)
    forbidden = (
        Path("/tmp") / ("persd-hostile-" + TOKEN),
        REPO / ("persd-hostile-" + TOKEN),
        Path.home() / ("persd-hostile-" + TOKEN),
    )
    tcp = socket.create_server(("127.0.0.1", 0))
    tcp.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    victim = subprocess.Popen(["sleep", "3600"])
    with pytest.MonkeyPatch.context() as mp:
        # A secret in our environment before the sandbox starts: no sample may see it.
        mp.setenv("PERSD_TEST_SECRET", SECRET)
        sb = Sandbox(CONFIG)
    try:
        yield Host(sb, tmp, tcp, udp, victim, canary, secret_file, forbidden)
    finally:
        sb.close()
        victim.kill()
        victim.wait()
        tcp.close()
        udp.close()
        for path in forbidden:
            if os.path.lexists(path):
                os.unlink(path)


# ---- the cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    program: str
    status: str | tuple[str, ...]  # the verdict (or verdicts, where the kernel may pick)
    needs: tuple[str, ...] = ()  # features that stop the attack (see the module docstring)
    exception: str | None = None  # the exception the verdict names, where there is one
    detail: str | None = None  # a substring of the verdict's detail
    tests: tuple[Test, ...] = ADD_TESTS
    entry_point: str = "add"
    may_pass: bool = False  # the program is right; leaving a process behind is not cheating


def probe(expected: str) -> tuple[Test, ...]:
    """A test only an escape passes: probe() must return what the attack was after."""
    return (Test(kind="call", source="assert probe()", call="probe()", expected=expected),)


def case(id: str, program: str, status: str | tuple[str, ...], **kw) -> Case:
    return Case(id=id, program=textwrap.dedent(program).lstrip(), status=status, **kw)


NOT_PASSED = ("failed", "error", "exited_early", "crashed", "timeout", "memory", "output_limit")
SECRET_PROBE = probe(repr(SECRET))
ZERO_PROBE = probe("0")  # a syscall's success value
TRUE_PROBE = probe("True")

CASES = [
    # -- infinite loops ---------------------------------------------------------------------------
    # CPU-time limit normally; the wall clock first when the machine is starved of CPU.
    case("loop_plain", "def add(a, b):\n    while True:\n        pass\n", "timeout",
         detail="limit of"),
    case("loop_at_import", "while True:\n    pass\n", "timeout"),
    case("loop_ignoring_signals", """
        import signal
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGHUP,
                  signal.SIGXCPU, signal.SIGUSR1, signal.SIGVTALRM, signal.SIGPROF):
            signal.signal(s, signal.SIG_IGN)
        def add(a, b):
            while True:
                pass
        """, "timeout"),
    case("loop_try_finally_reenters", """
        def add(a, b):
            while True:
                try:
                    while True:
                        pass
                except BaseException:
                    continue
                finally:
                    continue
        """, "timeout"),
    case("loop_regex_backtracking", """
        import re
        def add(a, b):
            return re.match(r"(a+)+$", "a" * 64 + "b") or a + b
        """, "timeout"),
    case("loop_c_level_sum", "def add(a, b):\n    return sum(range(10**14)) + a + b\n",
         "timeout"),
    case("loop_c_level_deque_count", """
        import collections, itertools
        collections.deque(itertools.count(), maxlen=0)
        """, "timeout"),
    case("sleep_forever", "import time\ntime.sleep(3600)\n", "timeout",
         detail="wall-clock limit"),
    case("stop_self_sigstop", """
        import os, signal
        def add(a, b):
            os.kill(0, signal.SIGSTOP)
            return a + b
        """, "timeout", detail="wall-clock limit"),
    case("raise_rlimit_cpu_then_loop", """
        import resource
        for r in (resource.RLIMIT_CPU, resource.RLIMIT_AS, resource.RLIMIT_NPROC):
            try:
                resource.setrlimit(r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            except (ValueError, OSError):
                pass
        while True:
            pass
        """, "timeout"),
    case("cpu_in_forked_children", """
        import os
        for _ in range(4):
            if os.fork() == 0:
                while True:
                    pass
        os.wait()
        """, "timeout", needs=("nproc",)),
    # -- memory -----------------------------------------------------------------------------------
    case("memory_bytearray", "x = bytearray(10**10)\n", "memory"),
    case("memory_growing_list", """
        def add(a, b):
            xs = []
            while True:
                xs.append([0] * 100000)
        """, "memory"),
    case("memory_string_repeat", "def add(a, b):\n    return 'a' * 10**11\n", "memory"),
    # -- processes --------------------------------------------------------------------------------
    case("fork_bomb", """
        import os
        while True:
            os.fork()
        """, NOT_PASSED, needs=("nproc",)),
    case("thread_bomb", """
        import threading, time
        while True:
            threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
        """, "error", needs=("nproc",), exception="RuntimeError"),
    case("multiprocessing_pool", """
        import multiprocessing
        def add(a, b):
            with multiprocessing.Pool(32) as pool:
                return sum(pool.map(abs, [a, b]))
        """, NOT_PASSED, needs=("nproc",)),
    case("multiprocessing_process_bomb", """
        import multiprocessing, time
        def add(a, b):
            while True:
                multiprocessing.Process(target=time.sleep, args=(3600,)).start()
        """, NOT_PASSED, needs=("nproc",)),
    case("double_fork_setsid_daemon", """
        import os, time
        if os.fork() == 0:
            if os.fork() == 0:
                try:
                    os.setsid()
                except OSError:
                    pass
                try:
                    os.setpgid(0, 0)
                except OSError:
                    pass
                while True:
                    time.sleep(1)
            os._exit(0)
        os.wait()
        def add(a, b):
            return a + b
        """, "passed", may_pass=True),
    case("child_sleeps_forever", """
        import os, signal, time
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            while True:
                time.sleep(1)
        def add(a, b):
            return a + b
        """, "passed", may_pass=True),
    # -- output and disk --------------------------------------------------------------------------
    case("flood_stdout", "while True:\n    print('x' * 1000)\n", "output_limit"),
    case("flood_stderr", "import sys\nwhile True:\n    sys.stderr.write('y' * 1000)\n",
         "output_limit"),
    case("flood_stdout_from_children", """
        import os
        for _ in range(3):
            if os.fork() == 0:
                while True:
                    os.write(1, b"z" * 4096)
        os.wait()
        """, "output_limit"),
    case("disk_many_files", """
        def add(a, b):
            i = 0
            while True:
                with open("f%d" % i, "wb") as f:
                    f.write(b"x" * (1 << 20))
                i += 1
        """, ("error", "timeout"), exception="OSError"),
    case("disk_one_huge_file", """
        def add(a, b):
            with open("big", "wb") as f:
                while True:
                    f.write(b"x" * (1 << 20))
        """, "error", exception="OSError"),
    # -- early exits and self-inflicted deaths ----------------------------------------------------
    case("os_exit_at_import", "import os\nos._exit(0)\n", "exited_early"),
    case("sys_exit_at_import", "import sys\nsys.exit(0)\n", "exited_early"),
    case("os_exit_in_function", "import os\ndef add(a, b):\n    os._exit(0)\n", "exited_early"),
    case("sys_exit_in_function", "import sys\ndef add(a, b):\n    sys.exit(0)\n",
         "exited_early"),
    case("raise_system_exit", "def add(a, b):\n    raise SystemExit\n", "exited_early"),
    case("forge_infra_error_exit_code", "import os\nos._exit(121)\n", "exited_early"),
    # Known: exit code 123 is the harness's own out-of-memory code; a program can choose it.
    case("forge_memory_exit_code", "import os\nos._exit(123)\n", ("memory", "exited_early")),
    case("abort", "import os\ndef add(a, b):\n    os.abort()\n", "crashed", detail="SIGABRT"),
    case("segfault", "import ctypes\ndef add(a, b):\n    return ctypes.string_at(0)\n",
         "crashed", detail="SIGSEGV"),
    case("killpg_own_group", "import os\ndef add(a, b):\n    os.killpg(0, 9)\n",
         "crashed", detail="SIGKILL"),  # intended: the sample's own group is the sample
    case("x32_syscall_abi", """
        import ctypes
        def add(a, b):
            return ctypes.CDLL(None).syscall(0x40000000 + 39)
        """, "crashed", needs=("seccomp",), detail="SIGSYS"),
    # -- always-equal objects ---------------------------------------------------------------------
    case("always_equal_object", """
        class Any:
            def __eq__(self, other):
                return True
            __hash__ = object.__hash__
        def add(a, b):
            return Any()
        """, "failed"),
    case("always_equal_int_subclass", """
        class I(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        def add(a, b):
            return I(0)
        """, "failed"),
    case("always_equal_list_subclass", """
        class L(list):
            def __eq__(self, other):
                return True
        def add(a, b):
            return L()
        """, "failed"),
    case("always_equal_str_subclass_raising_repr", """
        class S(str):
            def __eq__(self, other):
                return True
            def __ne__(self, other):
                return False
            __hash__ = str.__hash__
            def __repr__(self):
                raise SystemExit
        def add(a, b):
            return S("?")
        """, "failed"),
    case("always_equal_in_check_test", """
        class Any:
            def __eq__(self, other):
                return True
        def add(a, b):
            return Any()
        """, "failed", tests=(
            Test(kind="check", source="def check(candidate):\n    assert candidate(2, 3) == 5\n"),
        )),
    case("always_equal_in_comprehension_assert", """
        class Same:
            def __eq__(self, other):
                return True
        def add(a, b):
            return Same()
        """, "failed", tests=(
            Test(kind="assert", source="assert all([add(a, b) == c for a, b, c in [(2, 3, 5)]])"),
            Test(kind="assert", source="assert all(add(a, b) == c for a, b, c in [(1, 1, 2)])"),
        )),
    # -- builtins patching ------------------------------------------------------------------------
    case("patch_builtins_isinstance", """
        import builtins
        builtins.isinstance = lambda *a: True
        def add(a, b):
            return object()
        """, ("failed", "exited_early")),  # json in the harness breaks too: its loss
    case("patch_builtins_type", """
        import builtins
        builtins.type = lambda *a: int
        def add(a, b):
            return object()
        """, ("exited_early", "error", "failed")),  # breaks the harness: its loss
    case("patch_builtins_assertionerror", """
        import builtins
        builtins.AssertionError = type("Nope", (Exception,), {})
        def add(a, b):
            return 0
        """, "failed"),
    case("swap_module_builtins", """
        __builtins__ = {"__import__": __import__, "True": True}
        def add(a, b):
            return 0
        """, "failed"),
    case("patch_builtins_eval_and_compile", """
        import builtins
        builtins.eval = lambda *a, **k: 5
        def add(a, b):
            return 5
        """, "failed"),
    # -- tampering with the harness ---------------------------------------------------------------
    case("frame_walk_patch_harness_globals", """
        import sys
        f = sys._getframe().f_back  # the harness's serve(), then its callers
        while f is not None:
            f.f_globals["eval"] = lambda *a, **k: 5
            f.f_locals["value"] = 5
            f = f.f_back
        def add(a, b):
            return 5
        """, "failed"),
    case("sys_modules_patch_codec_encode", """
        import sys
        for name, m in list(sys.modules.items()):
            if hasattr(m, "encode") and hasattr(m, "decode") and hasattr(m, "dumps"):
                m.encode = lambda v, _d=0: {"forged": True}
        def add(a, b):
            return a + b
        """, "error", detail="broke the test protocol"),
    case("sys_modules_patch_harness_recv", """
        import sys
        for name, m in list(sys.modules.items()):
            if hasattr(m, "FrameReader"):  # every later request reads as "stop now"
                m.FrameReader.next = lambda self: b'{"op": "done"}'
        def add(a, b):
            return a + b
        """, "exited_early"),
    case("fake_frames_on_fd3", """
        import json, os, struct
        def frame(m):
            data = json.dumps(m).encode()
            return struct.pack(">I", len(data)) + data
        os.write(3, frame({"op": "ready"}) + frame({"op": "value", "value": 5}) * 3)
        def add(a, b):
            return a + b
        """, "failed"),
    case("fake_verdict_frame_on_fd3", """
        import json, os, struct
        data = json.dumps({"op": "report", "status": "passed", "passed": True}).encode()
        os.write(3, struct.pack(">I", len(data)) + data)
        """, "error", detail="broke the test protocol"),
    case("garbage_and_huge_header_on_fd3", """
        import os
        os.write(3, b"\\xff\\xff\\xff\\xff" + b"{" * 1000)
        """, "error", detail="broke the test protocol"),
    case("close_fd3", "import os\nos.close(3)\n", "exited_early"),
    case("write_to_worker_fds", """
        import os
        def probe():
            ok = False
            for fd in range(4, 1024):
                try:
                    os.write(fd, b'{"op": "report"}')
                    ok = True
                except OSError:
                    pass
            return ok
        """, "failed", tests=TRUE_PROBE, entry_point="probe"),
    # -- secrets ----------------------------------------------------------------------------------
    case("env_secret_os_environ", """
        import os
        def probe():
            return os.environ.get("PERSD_TEST_SECRET") or repr(dict(os.environ))
        """, "failed", tests=SECRET_PROBE, entry_point="probe"),
    case("env_is_only_the_sandboxs", """
        import ctypes, os
        def probe():  # the C environment too, not just os.environ's copy of it
            env = ctypes.POINTER(ctypes.c_char_p).in_dll(ctypes.CDLL(None), "environ")
            names, i = [], 0
            while env[i] is not None:
                names.append(env[i].split(b"=")[0].decode())
                i += 1
            return sorted(os.environ) == sorted(names) == ["HOME", "LANG", "PATH", "TMPDIR"]
        """, "passed", tests=TRUE_PROBE, entry_point="probe", may_pass=True),
    case("env_secret_proc_self_environ", """
        def probe():
            return open("/proc/self/environ").read()
        """, "error", needs=("landlock",), exception="PermissionError",
         tests=SECRET_PROBE, entry_point="probe"),
    case("env_secret_proc_parent_environ", """
        import os
        def probe():
            return open("/proc/%d/environ" % os.getppid()).read()
        """, "error", needs=("landlock",), exception="PermissionError",
         tests=SECRET_PROBE, entry_point="probe"),
    case("env_secret_proc_test_process_environ", """
        def probe():
            return open("/proc/@test_pid@/environ").read()
        """, "error", needs=("landlock",), exception=("PermissionError", "FileNotFoundError"),
         tests=SECRET_PROBE, entry_point="probe"),
    case("read_answer_key", "def probe():\n    return open('@answer_key@').read()\n", "error",
         needs=("landlock",), exception="PermissionError",
         tests=probe(repr(ANSWER_KEY.read_text()[:50])) if ANSWER_KEY.exists() else SECRET_PROBE,
         entry_point="probe"),
    case("read_etc_passwd", "def probe():\n    return open('/etc/passwd').read()[:4]\n", "error",
         needs=("landlock",), exception="PermissionError", tests=probe("'root'"),
         entry_point="probe"),
    case("read_secret_file", "def probe():\n    return open('@secret_file@').read()\n", "error",
         needs=("landlock",), exception="PermissionError", tests=SECRET_PROBE,
         entry_point="probe"),
    case("read_secret_via_symlink_in_scratch", """
        import os
        def probe():
            os.symlink("@secret_file@", "link")
            return open("link").read()
        """, "error", needs=("landlock",), exception="PermissionError", tests=SECRET_PROBE,
         entry_point="probe"),
    case("read_secret_via_hardlink_in_scratch", """
        import os
        def probe():
            os.link("@secret_file@", "hard")
            return open("hard").read()
        """, "error", needs=("landlock",), exception=("PermissionError", "OSError"),
         tests=SECRET_PROBE, entry_point="probe"),
    case("list_repo_dir", "import os\ndef probe():\n    return len(os.listdir('@repo@')) > 0\n",
         "error", needs=("landlock",), exception="PermissionError", tests=TRUE_PROBE,
         entry_point="probe"),
    case("proc_self_mem_and_parent_mem", """
        import os
        def probe():
            open("/proc/self/mem", "r+b").close()
            open("/proc/%d/mem" % os.getppid(), "r+b").close()
            return True
        """, "error", needs=("landlock",), exception="PermissionError", tests=TRUE_PROBE,
         entry_point="probe"),
    case("open_by_handle_at_shocker", """
        import ctypes
        def probe():
            return ctypes.CDLL(None).syscall(304, -100, None, 0)  # open_by_handle_at
        """, "failed", needs=("seccomp",), tests=ZERO_PROBE, entry_point="probe"),
    # -- writing outside scratch ------------------------------------------------------------------
    case("write_tmp", "def add(a, b):\n    open('@tmp_target@', 'w').write('x')\n", "error",
         needs=("landlock",), exception="PermissionError"),
    case("write_repo_dir", "def add(a, b):\n    open('@repo_target@', 'w').write('x')\n",
         "error", needs=("landlock",), exception="PermissionError"),
    case("write_home_dir", "def add(a, b):\n    open('@home_target@', 'w').write('x')\n",
         "error", needs=("landlock",), exception="PermissionError"),
    case("overwrite_canary", "def add(a, b):\n    open('@canary@', 'w').write('pwned')\n",
         "error", needs=("landlock",), exception="PermissionError"),
    case("symlink_escape_from_scratch", """
        import os
        def add(a, b):
            os.symlink("/tmp", "t")
            open("t/" + "@tmp_target@".rsplit("/", 1)[1], "w").write("x")
        """, "error", needs=("landlock",), exception="PermissionError"),
    # Clean-up (the worker's own fd-relative rmtree) must remove all of this without following
    # the links out of scratch: the canary next to their targets must survive.
    case("messy_scratch_left_for_cleanup", """
        import os
        os.makedirs("a/b/c")
        open("a/b/c/f", "w").write("x")
        os.mkdir("locked")
        open("locked/f", "w").write("x")
        os.chmod("locked", 0)
        os.symlink(os.path.dirname("@canary@"), "up")
        os.symlink("@canary@", "canary_link")
        try:
            os.mkdir("../sibling")
            os.symlink(os.path.dirname("@canary@"), "../sibling/up")
        except OSError:
            pass
        def add(a, b):
            return a + b
        """, "passed", may_pass=True),
    case("rename_out_of_scratch", """
        import os
        def add(a, b):
            open("f", "w").write("x")
            os.rename("f", "@tmp_target@")
        """, "error", needs=("landlock",), exception=("PermissionError", "OSError")),
    # -- network ----------------------------------------------------------------------------------
    case("tcp_create_connection", """
        import socket
        def add(a, b):
            socket.create_connection(("127.0.0.1", @port@), timeout=1).sendall(b"hi")
            return a + b
        """, "error", needs=("net",), exception="PermissionError"),
    case("tcp_raw_socket_connect", """
        import socket
        def add(a, b):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(("127.0.0.1", @port@))
            return a + b
        """, "error", needs=("net",), exception="PermissionError"),
    case("udp_sendto", """
        import socket
        def add(a, b):
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", @udp_port@))
            return a + b
        """, "error", needs=("net",), exception="PermissionError"),
    case("tcp_bind_listen", """
        import socket
        def add(a, b):
            socket.create_server(("0.0.0.0", 0))
            return a + b
        """, "error", needs=("net",), exception="PermissionError"),
    case("unix_abstract_socket", """
        import socket
        def add(a, b):
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect("\\0persd")
            return a + b
        """, "error", needs=("net",), exception="PermissionError"),
    # -- shells -----------------------------------------------------------------------------------
    case("subprocess_run", """
        import subprocess
        def add(a, b):
            subprocess.run(["touch", "@tmp_target@"])
            return a + b
        """, "error", needs=("seccomp",), exception="PermissionError"),
    case("os_system", """
        import os
        def probe():
            return os.system("touch @tmp_target@")
        """, "failed", needs=("seccomp",), tests=ZERO_PROBE, entry_point="probe"),
    case("os_posix_spawn", """
        import os
        def add(a, b):
            os.posix_spawn("/bin/sh", ["sh", "-c", "touch @tmp_target@"], {})
            return a + b
        """, "error", needs=("seccomp",), exception="PermissionError"),
    case("os_execv", "import os\ndef add(a, b):\n    os.execv('/bin/sh', ['sh'])\n", "error",
         needs=("seccomp",), exception="PermissionError"),
    case("ctypes_libc_system", """
        import ctypes
        def probe():
            return ctypes.CDLL(None).system(b"touch @tmp_target@")
        """, "failed", needs=("seccomp",), tests=ZERO_PROBE, entry_point="probe"),
    case("ctypes_libc_execve", """
        import ctypes
        def probe():
            argv = (ctypes.c_char_p * 4)(b"sh", b"-c", b"touch @tmp_target@", None)
            return ctypes.CDLL(None).execve(b"/bin/sh", argv, None)
        """, "failed", needs=("seccomp",), tests=ZERO_PROBE, entry_point="probe"),
    # -- signals and other processes --------------------------------------------------------------
    case("kill_parent_worker", "import os\nos.kill(os.getppid(), 9)\n", "error",
         needs=("signals",), exception="PermissionError"),
    case("kill_test_process", "import os\nos.kill(@test_pid@, 9)\n", "error",
         needs=("signals",), exception="PermissionError"),
    case("kill_bystander", "import os\nos.kill(@victim_pid@, 9)\n", "error",
         needs=("signals",), exception="PermissionError"),
    # seccomp refuses kill(-1) outright (PermissionError) where it filters signals by pid;
    # with Landlock signal scoping the kernel tries every process, may signal none outside
    # the sample, and still returns 0, so the program goes on and fails for lack of add().
    case("kill_everything", "import os\nos.kill(-1, 9)\n", "error", needs=("signals",),
         exception=("PermissionError", "NameError")),
    case("killpg_parent_group", "import os\nos.killpg(os.getpgid(os.getppid()), 9)\n",
         "error", needs=("signals",), exception="PermissionError"),
    case("pidfd_send_signal_parent", """
        import os, signal
        signal.pidfd_send_signal(os.pidfd_open(os.getppid()), 9)
        """, "error", needs=("seccomp",), exception="PermissionError"),
    case("tgkill_parent", """
        import ctypes, os
        def probe():
            return ctypes.CDLL(None).syscall(234, os.getppid(), os.getppid(), 9)
        """, "failed", needs=("signals",), tests=ZERO_PROBE, entry_point="probe"),
    case("ptrace_attach_parent", """
        import ctypes, os
        def probe():
            return ctypes.CDLL(None).ptrace(16, os.getppid(), 0, 0)
        """, "failed", needs=("seccomp",), tests=ZERO_PROBE, entry_point="probe"),
    case("process_vm_readv_parent", """
        import ctypes, os
        def probe():
            return ctypes.CDLL(None).process_vm_readv(os.getppid(), None, 0, None, 0, 0)
        """, "failed", needs=("seccomp",), tests=ZERO_PROBE, entry_point="probe"),
    case("setpriority_parent", "import os\nos.setpriority(os.PRIO_PROCESS, os.getppid(), 19)\n",
         "error", needs=("seccomp",), exception="PermissionError"),
    case("nice_negative", "import os\nos.nice(-10)\n", "error", exception="PermissionError"),
    case("prlimit_parent", """
        import os, resource
        resource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (1, 1))
        """, "error", needs=("seccomp",), exception="PermissionError"),
    # -- privileges, namespaces, mounts -----------------------------------------------------------
    # EINVAL as an ordinary user: uid 0 does not exist in the worker's user namespace.
    case("setuid_root", "import os\nos.setuid(0)\n", "error",
         exception=("PermissionError", "OSError")),
    case("unshare_user_namespace", """
        import ctypes
        def probe():
            return ctypes.CDLL(None).unshare(0x10000000 | 0x20000)
        """, "failed", needs=("seccomp",), tests=ZERO_PROBE, entry_point="probe"),
    case("mount_tmpfs", """
        import ctypes
        def probe():
            return ctypes.CDLL(None).mount(b"none", b".", b"tmpfs", 0, None)
        """, "failed", needs=("seccomp",), tests=ZERO_PROBE, entry_point="probe"),
    case("chroot", "import os\nos.chroot('.')\n", "error", needs=("seccomp",),
         exception="PermissionError"),
    case("fd_exhaustion", """
        fds = []
        while True:
            fds.append(open("/dev/null"))
        """, "error", exception="OSError"),
]  # fmt: skip


def _feature_skip(sb: Sandbox, needs: tuple[str, ...]) -> str | None:
    f = sb.features
    have = {
        "landlock": f.get("landlock_abi", 0) >= 1,
        "seccomp": bool(f.get("seccomp")),
        "net": bool(f.get("seccomp"))
        or (f.get("network_namespace") and f.get("landlock_abi", 0) >= 4),
        "signals": bool(f.get("seccomp")) or f.get("landlock_abi", 0) >= 6,
        "nproc": f.get("sample_uid", 0) != 0,
    }
    missing = [n for n in needs if not have[n]]
    if missing:
        return f"sandbox lacks {', '.join(missing)} here (features: {f})"
    return None


def test_every_case_is_distinct():
    assert len({c.id for c in CASES}) == len(CASES) >= 30
    assert len({c.program for c in CASES}) == len(CASES)


def test_features_are_all_active_as_root_on_a_modern_kernel(host: Host):
    """On this project's machines (root, Linux >= 6.7) every layer must be active."""
    release = tuple(int(x) for x in os.uname().release.split(".")[:2] if x.isdigit())
    if os.getuid() != 0 or release < (6, 7):
        pytest.skip("needs root and Linux >= 6.7 (Landlock ABI >= 4 with signal scoping)")
    f = host.sandbox.features
    assert f["landlock_abi"] >= 6 and f["seccomp"] and f["network_namespace"]
    assert f["mount_namespace"] and f["sample_uid"] != 0
    assert host.sandbox.warnings == []


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_hostile_program(host: Host, c: Case):
    sb = host.sandbox
    reason = _feature_skip(sb, c.needs)
    if reason:
        pytest.skip(reason)
    program = c.program
    for key, value in host.subs.items():
        program = program.replace(key, value)
    workers = worker_pids()
    assert len(workers) == sb.config.workers
    start = time.monotonic()
    fb = sb.run(Job(program=program, tests=c.tests, entry_point=c.entry_point))
    elapsed = time.monotonic() - start

    statuses = (c.status,) if isinstance(c.status, str) else c.status
    assert fb.status in statuses, fb
    if not c.may_pass:
        assert fb.status != "passed" and not fb.passed
    if c.exception and fb.status == "error":  # a timeout names no exception
        names = (c.exception,) if isinstance(c.exception, str) else c.exception
        raised = fb.exception or (fb.first_failure.exception if fb.first_failure else None)
        assert raised in names, fb
    if c.detail:
        assert c.detail in (fb.detail or ""), fb
    # The worker owns the clock: nothing runs much past the wall limit.
    assert elapsed < sb.config.wall_limit_s + 1.5, elapsed
    assert_host_unaffected(host, workers)


def test_every_sample_runs_with_every_layer_set(host: Host):
    """What the sample sees of its own confinement, whichever process set each layer."""
    sb = host.sandbox
    check = textwrap.dedent("""
        import ctypes, resource
        def probe():  # (/proc is not readable: Landlock)
            prctl = ctypes.CDLL(None).prctl
            fixed = [resource.getrlimit(r) for r in (resource.RLIMIT_CORE,
                     resource.RLIMIT_MEMLOCK, resource.RLIMIT_MSGQUEUE)]
            nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
            return fixed, nofile, prctl(39, 0, 0, 0, 0), prctl(21, 0, 0, 0, 0)  # NNP, SECCOMP
        """)
    nofile = 4 + sb.config.max_open_files
    seccomp = 2 if sb.features["seccomp"] else 0
    expected = repr(([(0, 0)] * 3, (nofile, nofile), 1, seccomp))
    for _ in range(sb.config.workers):
        fb = sb.run(Job(program=check, tests=probe(expected), entry_point="probe"))
        assert fb.status == "passed", fb


def test_state_does_not_leak_between_samples(host: Host):
    """A sample that patches modules, builtins or files leaves nothing for the next one."""
    sb = host.sandbox
    patch = textwrap.dedent("""
        import builtins, math, string
        math.pi = 3
        builtins.sorted = lambda xs: "patched"
        string.ascii_letters = "patched"
        open("left.txt", "w").write("x")
        def add(a, b):
            return a + b
        """)
    check = textwrap.dedent("""
        import math, os, string
        def probe():
            try:  # the worker's scratch base: only this sample's own directory, if listable
                others = [n for n in os.listdir("..") if n != os.path.basename(os.getcwd())]
            except PermissionError:
                others = []
            return (math.pi, sorted([2, 1]), string.ascii_letters[:3], os.listdir("."), others)
        """)
    workers = worker_pids()
    n = sb.config.workers
    patched = [sb.run(Job(program=patch, tests=ADD_TESTS, entry_point="add")) for _ in range(n)]
    assert [fb.status for fb in patched] == ["passed"] * n
    expected = repr((3.141592653589793, [1, 2], "abc", [], []))
    for _ in range(n):  # the idle queue is FIFO: n runs visit every worker
        fb = sb.run(Job(program=check, tests=probe(expected), entry_point="probe"))
        assert fb.status == "passed", fb
    assert_host_unaffected(host, workers)


def test_concurrent_hostile_batch_keeps_normal_verdicts(host: Host):
    """Hostile programs running beside normal ones don't change the normal ones' verdicts."""
    sb = host.sandbox
    hostile = ["import os\nos.kill(-1, 9)\n", "while True:\n    pass\n", "x = bytearray(10**10)\n"]
    jobs = []
    for i in range(8):
        program = ADD if i % 2 == 0 else hostile[i // 2 % len(hostile)]
        jobs.append(Job(program=program, tests=ADD_TESTS, entry_point="add"))
    workers = worker_pids()
    results = sb.run_many(jobs)
    assert [fb.status for fb in results[::2]] == ["passed"] * 4
    assert all(fb.status != "passed" for fb in results[1::2])
    assert_host_unaffected(host, workers)
