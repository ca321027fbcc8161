"""A worker, forked from the zygote: forks one confined process per sample, supervises it.

Trusted, and never runs untrusted code itself. Per sample it creates the scratch directory,
forks, owns the clock (wall and CPU time), drains stdout/stderr under a cap, kills the process
group, reaps every descendant (it is their subreaper), removes the scratch dir, and reports.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from typing import Any

from . import confine, harness, procs

RULESET_FD = 251  # the Landlock ruleset every sample applies to itself
SAMPLE_FD = 3  # in the sample: its private socket to the parent
EXIT_CONFINE = 121  # the sample could not be confined: an infrastructure error
TAIL = 4096  # bytes of stdout/stderr kept for feedback
PR_SET_CHILD_SUBREAPER = 36
_STARVED_RECHECK_S = 0.05  # how often a sample past its wall limit is checked for sleeping
# A sample at its CPU-time limit with this share of its memory limit already mapped is still
# allocating: on a loaded machine page faults and the collector cost it more CPU per byte
# (0.35 s idle, 1.02 s once in CI for the same 256 MB), so it may run on for up to
# _MEMORY_GRACE of its CPU limit (at most 0.9 s, below the kernel's RLIMIT_CPU at +1 s) and
# let the memory limit decide. A spinning sample never maps that much and stops on time.
_NEAR_MEMORY = 0.75
_MEMORY_GRACE = 0.5


class Worker:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.warnings: list[str] = []
        self.features: dict[str, Any] = {}
        self.uid = os.getuid()
        self.sample_uid: int | None = None
        self.nproc_base = 0
        self.nproc_checked = 0.0
        self.scratch_base = cfg["scratch_base"]
        self.read_paths = list(cfg["read_paths"])
        self.on_demand = frozenset(cfg.get("import_on_demand", ()))

    # ---- start-up ---------------------------------------------------------------------------

    def setup(self) -> dict[str, Any]:
        """Enter namespaces, mount the scratch tmpfs, probe the kernel; report what holds."""
        root = self.uid == 0
        flags = 0x20000 | 0x40000000 | 0x08000000  # NEWNS | NEWNET | NEWIPC
        if not root:
            flags |= 0x10000000  # NEWUSER: what lets an ordinary user make the others
        ns_ok = self._unshare(flags, root)
        if not ns_ok:
            ns_ok = self._unshare(flags & ~0x20000, root)  # without a mount namespace
            self.features["mount_namespace"] = False
        self.features["network_namespace"] = ns_ok
        if not ns_ok:
            self.warnings.append(
                "no network namespace (the kernel refused unshare): network is blocked by "
                "seccomp (no sockets) and Landlock only"
            )
        if self.features.get("mount_namespace", ns_ok):
            self.features["mount_namespace"] = self._mount_tmpfs()
        if not self.features["mount_namespace"]:
            self.warnings.append(
                "no private tmpfs for scratch directories: disk use is bounded per file "
                "(RLIMIT_FSIZE) and by the time limit, not in total"
            )
        abi = confine.landlock_abi()
        self.features["landlock_abi"] = abi
        if abi < 1:
            self.warnings.append(
                "Landlock unavailable: the sample can read any file its user can read "
                "and write outside its scratch directory where file modes allow"
            )
        else:
            devs = ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"]
            fd = confine.landlock_ruleset(abi, self.read_paths, [self.scratch_base], devs)
            os.dup2(fd, RULESET_FD, inheritable=False)
            os.close(fd)
            if abi < 6:
                self.warnings.append(
                    f"Landlock ABI {abi} < 6: signals are confined by seccomp only"
                )
        self.features["seccomp"] = confine.seccomp_supported()
        if not self.features["seccomp"]:
            self.warnings.append(
                "seccomp filter not built for this CPU architecture: programs may exec "
                "shells, open sockets and signal other processes of the same user"
            )
        if root:
            self.sample_uid = int(self.cfg["sample_uid"])
        self.features["sample_uid"] = self.sample_uid if root else self.uid
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self._refresh_nproc()
        self.seccomp: confine.Seccomp | None = None
        shared_filter = self.features["seccomp"] and abi >= 6
        if self.features["seccomp"]:
            if shared_filter:  # signals confined by Landlock: the filter has no per-pid part
                self.seccomp = confine.Seccomp(confine.sample_filter())
            else:
                confine.seccomp_filter(os.getpid())  # assemble the template once, here
        # Per-sample state a fork inherits instead of building: the scratch path is the same
        # for every sample (one at a time per worker), so the environment is set once here.
        self.scratch = os.path.join(self.scratch_base, "s")
        self.scratch_base_fd = os.open(self.scratch_base, os.O_RDONLY | os.O_DIRECTORY)
        os.environ.clear()
        os.environ.update(
            HOME=self.scratch, TMPDIR=self.scratch, PATH="/usr/bin:/bin", LANG="C.UTF-8"
        )
        self.devnull = os.open("/dev/null", os.O_RDONLY)
        self.vm_base = confine.vm_bytes()  # a fork starts with the same address space
        confine.set_fixed_limits()  # every sample inherits them
        self.no_new_privs = False  # set on the worker itself: inherited, can't be unset
        if shared_filter:
            # The worker filters itself: every sample inherits the big filter through fork
            # and stacks only a three-rule one (setsid, setpgid, pidfd_open, which the worker
            # still uses). Installed last: setup needed unshare and mount.
            confine.no_new_privs()
            self.no_new_privs = True
            confine.Seccomp(confine.worker_filter()).install()
        return {"op": "hello", "features": self.features, "warnings": self.warnings}

    def _unshare(self, flags: int, root: bool) -> bool:
        if confine.unshare(flags) != 0:
            return False
        if not root and flags & 0x10000000:
            uid, gid = os.getuid(), os.getgid()
            try:
                with open("/proc/self/setgroups", "w") as f:
                    f.write("deny")
                with open("/proc/self/uid_map", "w") as f:
                    f.write(f"{uid} {uid} 1")
                with open("/proc/self/gid_map", "w") as f:
                    f.write(f"{gid} {gid} 1")
            except OSError:
                return False
        return True  # a fresh network namespace has only a loopback device, and it is down

    def _mount_tmpfs(self) -> bool:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        ms_rec, ms_private = 0x4000, 0x40000
        if libc.mount(b"none", b"/", None, ms_rec | ms_private, None) != 0:
            return False
        opts = f"size={int(self.cfg['scratch_mb'])}m,mode=0711"
        target = self.scratch_base.encode()
        return libc.mount(b"persd-scratch", target, b"tmpfs", 0x2 | 0x8, opts.encode()) == 0

    def _refresh_nproc(self) -> None:
        # RLIMIT_NPROC counts every process of the uid: the limit is current usage + budget.
        now = time.monotonic()
        if now - self.nproc_checked > 2.0:
            uid = self.sample_uid if self.sample_uid is not None else self.uid
            self.nproc_base = confine.count_processes(uid)
            self.nproc_checked = now

    # ---- one sample ---------------------------------------------------------------------------

    def _load(self, names: list[str]) -> None:
        """Import the config's on-demand modules a program names, once: later forks have them.

        Only names from the trusted config's list, chosen by the trusted parent; the worker
        runs no untrusted code. Its address space grew, so the memory limit's base moves.
        """
        loaded = False
        for name in names:
            if name in self.on_demand and name not in sys.modules:
                try:
                    __import__(name)
                except Exception:  # noqa: BLE001 - the sample will fail to import it itself
                    pass
                loaded = True
        if loaded:
            self.vm_base = confine.vm_bytes()

    def run(self, job: dict[str, Any], sock_fd: int) -> dict[str, Any]:
        if "imports" in job:
            self._load(job["imports"])
        scratch = self.scratch
        os.mkdir(scratch, 0o700)
        if self.sample_uid is not None:
            os.chown(scratch, self.sample_uid, self.sample_uid)
        self._refresh_nproc()
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        # Written only by our code when confinement fails; closed before any untrusted byte
        # runs, so a program can't pass its own exit(EXIT_CONFINE) off as a sandbox failure.
        fail_r, fail_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the sample
            try:
                self._enter_sample(job, scratch, sock_fd, out_w, err_w)
            except BaseException as e:  # noqa: BLE001 - say why on the sample's stderr
                import traceback

                why = "".join(traceback.format_exception(e)[-3:])
                os.write(err_w, (f"persd sandbox: cannot confine: {why}").encode())
                os.write(fail_w, b"!")
                os._exit(EXIT_CONFINE)
            harness.main(SAMPLE_FD)
            os._exit(EXIT_CONFINE)
        os.close(sock_fd)
        os.close(out_w)
        os.close(err_w)
        os.close(fail_w)
        try:
            report = self._supervise(pid, job, out_r, err_r)
            os.set_blocking(fail_r, False)
            try:
                report["confine_failed"] = os.read(fail_r, 1) == b"!"
            except BlockingIOError:
                report["confine_failed"] = False
        finally:
            os.close(out_r)
            os.close(err_r)
            os.close(fail_r)
        report["leftover"], report["orphan_cpu_s"] = self._reap_all()
        for name in os.listdir(self.scratch_base):  # the sample may have made siblings
            procs.remove_tree(name, self.scratch_base_fd)
        return report

    def _enter_sample(
        self, job: dict[str, Any], scratch: str, sock_fd: int, out_w: int, err_w: int
    ) -> None:
        os.setsid()  # its own process group: the unit the worker kills
        os.dup2(self.devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        if sock_fd != SAMPLE_FD:
            os.dup2(sock_fd, SAMPLE_FD, inheritable=False)
        os.chdir(scratch)  # HOME and TMPDIR already point here (see setup)
        confine.set_limits(
            address_space=self.vm_base + int(job["memory_bytes"]),
            cpu_s=int(job["cpu_s"]) + 1,
            file_bytes=int(job["file_bytes"]),
            open_files=4 + int(job["open_files"]),
            processes=self.nproc_base + int(job["processes"]),
        )
        if self.sample_uid is not None:
            confine.drop_to_uid(self.sample_uid, keep_read=self.features["landlock_abi"] >= 1)
        else:
            confine.set_caps(())
        if not self.no_new_privs:
            confine.no_new_privs()
        if self.features["landlock_abi"] >= 1:
            confine.landlock_restrict(RULESET_FD)
        if self.seccomp is not None:
            self.seccomp.install()
        elif self.features["seccomp"]:
            confine.Seccomp(confine.seccomp_filter(os.getpid())).install()
        os.closerange(SAMPLE_FD + 1, 1 << 16)  # the control socket above all

    def _supervise(self, pid: int, job: dict[str, Any], out_r: int, err_r: int) -> dict:
        start = time.monotonic()
        wall_deadline = start + float(job["wall_s"])
        # A sample still on a run queue at its wall-clock limit is waiting for a CPU, not
        # for time: on a busy machine it would reach the wall before its CPU time and a
        # memory or CPU verdict would turn into a wall-clock one. Up to wall_max_s it keeps
        # running and its CPU-time limit decides; a sleeping or stopped sample does not.
        wall_max = start + float(job.get("wall_max_s", job["wall_s"]))
        starved_since: float | None = None
        cpu_limit = float(job["cpu_s"])
        cpu_grace_limit = cpu_limit + min(_MEMORY_GRACE * cpu_limit, 0.9)
        near_memory = self.vm_base + _NEAR_MEMORY * int(job["memory_bytes"])
        memory_grace_since: float | None = None
        next_cpu_check = start + cpu_limit  # CPU time can't exceed wall time elapsed
        cap = int(job["output_bytes"])
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        for fd in (pidfd, out_r, err_r):
            poller.register(fd, select.POLLIN)
        tails = {out_r: bytearray(), err_r: bytearray()}
        total, reason, cpu = 0, None, 0.0
        open_pipes = {out_r, err_r}
        try:
            while reason is None:
                now = time.monotonic()
                timeout = max(0.0, min(wall_deadline, next_cpu_check) - now)
                events = poller.poll(timeout * 1000 + 1)
                exited = False
                for fd, _ev in events:
                    if fd == pidfd:
                        exited = True
                    else:
                        n = self._drain(fd, tails[fd], open_pipes, poller)
                        total += n
                if total > cap:
                    reason = "output"
                    break
                if exited:
                    break
                now = time.monotonic()
                if now >= next_cpu_check:
                    cpu = procs.cpu_seconds(pid)
                    if cpu >= cpu_limit:
                        mapped = procs.address_space(pid)  # 0 once it is exiting: wait for that
                        if cpu < cpu_grace_limit and (mapped >= near_memory or mapped == 0):
                            memory_grace_since = memory_grace_since or now
                            next_cpu_check = now + _STARVED_RECHECK_S / 5
                            continue
                        reason = "cpu"
                        break
                    next_cpu_check = now + max(cpu_limit - cpu, 0.01)
                if now >= wall_deadline:
                    if now < wall_max and procs.waiting_for_cpu(pid):
                        starved_since = starved_since or now
                        wall_deadline = now + _STARVED_RECHECK_S
                    else:
                        reason = "wall"
            # Kill before reaping: a zombie still pins the process-group id, so no unrelated
            # process can have taken it.
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for fd in list(open_pipes):
                total += self._drain(fd, tails[fd], open_pipes, poller, final=True)
            _, status, usage = os.wait4(pid, 0)
        finally:
            os.close(pidfd)
        wall = time.monotonic() - start
        report: dict[str, Any] = {
            "op": "report",
            "reason": reason if reason else ("output" if total > cap else None),
            "wall_s": round(wall, 4),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 4),
            "maxrss_kb": usage.ru_maxrss,
            "stdout": bytes(tails[out_r]).decode("utf-8", "replace"),
            "stderr": bytes(tails[err_r]).decode("utf-8", "replace"),
            "output_bytes": total,
        }
        if memory_grace_since is not None:
            report["memory_grace_s"] = round(time.monotonic() - memory_grace_since, 4)
        if starved_since is not None:
            report["busy_extension_s"] = round(time.monotonic() - starved_since, 4)
        if os.WIFSIGNALED(status):
            report["signal"] = os.WTERMSIG(status)
        else:
            report["exit_code"] = os.WEXITSTATUS(status)
        return report

    @staticmethod
    def _drain(fd: int, tail: bytearray, open_pipes: set, poller: Any, final: bool = False) -> int:
        n = 0
        os.set_blocking(fd, False)
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return n
            if not chunk:
                open_pipes.discard(fd)
                poller.unregister(fd)
                return n
            n += len(chunk)
            tail += chunk
            if len(tail) > TAIL:
                del tail[: len(tail) - TAIL]
            if not final and n > 1 << 20:
                return n  # let the caller check the cap
            if final and n > 1 << 22:
                return n  # a writer outside the group cannot exist; don't spin regardless

    def _reap_all(self) -> tuple[int, float]:
        """Wait for every orphan the sample left (we are their subreaper).

        Returns how many were still running after 2 s, and the CPU time of those reaped.
        """
        deadline, cpu = time.monotonic() + 2.0, 0.0
        while True:
            try:
                pid, _, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return 0, round(cpu, 4)
            if pid:
                cpu += usage.ru_utime + usage.ru_stime
                continue
            if time.monotonic() > deadline:
                return procs.kill_children(), round(cpu, 4)
            time.sleep(0.001)
