"""Kernel confinement for one sample process: capabilities, Landlock, seccomp, rlimits.

Each function is one layer and says what it stops. They are applied in the forked sample
process before any untrusted byte is compiled, in the order ``apply()`` gives. Layers the
kernel lacks are reported (``features()``), never silently assumed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# ---- capabilities --------------------------------------------------------------------------

_SYS_CAPSET = 126  # x86_64
_CAP_V3 = 0x20080522
CAP_DAC_READ_SEARCH = 2
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4


def _check(result: int, what: str) -> int:
    if result < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return result


def set_caps(keep: tuple[int, ...] = ()) -> None:
    """Keep only the capabilities in ``keep`` (effective and permitted); clear the rest."""
    mask = 0
    for cap in keep:
        mask |= 1 << cap
    header = struct.pack("Ii", _CAP_V3, 0)
    lo, hi = mask & 0xFFFFFFFF, mask >> 32
    data = struct.pack("IIIIII", lo, lo, 0, hi, hi, 0)  # effective, permitted, inheritable x2
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    _check(_syscall(_SYS_CAPSET, header, data), "capset")


def drop_to_uid(uid: int, *, keep_read: bool) -> None:
    """Become ``uid`` (root mode); with ``keep_read``, keep only the right to read files.

    Reading stays possible because Python's own library may live under a private home
    directory (pyenv under /root); that is safe only when Landlock, not file modes, decides
    which paths are readable, so callers pass ``keep_read`` only when Landlock is active.
    A non-root uid is what makes the kernel enforce RLIMIT_NPROC and refuse signals to root's
    processes.
    """
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    _libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setresuid(uid, uid, uid)
    set_caps((CAP_DAC_READ_SEARCH,) if keep_read else ())


def unshare(flags: int) -> int:
    """unshare(2) (os.unshare is Python 3.12+); 0 on success, else the errno."""
    return 0 if _libc.unshare(flags) == 0 else ctypes.get_errno()


def no_new_privs() -> None:
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")


# ---- Landlock -------------------------------------------------------------------------------

_LL_CREATE, _LL_ADD_RULE, _LL_RESTRICT = 444, 445, 446
_LL_VERSION_FLAG = 1
_LL_RULE_PATH_BENEATH = 1
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1, 2, 4, 8
_FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 14, 1 << 15
_NET_ALL = 0b11  # BIND_TCP | CONNECT_TCP
_SCOPE_ALL = 0b11  # ABSTRACT_UNIX_SOCKET | SIGNAL


def landlock_abi() -> int:
    r = _syscall(_LL_CREATE, None, 0, _LL_VERSION_FLAG)
    return max(int(r), 0)


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # EXECUTE .. MAKE_SYM (ABI 1)
    if abi >= 2:
        rights |= 1 << 13  # REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def landlock_ruleset(
    abi: int, read_paths: list[str], write_dirs: list[str], rw_files: list[str]
) -> int:
    """A ruleset fd: read ``read_paths``, write ``write_dirs``, nothing else on the file system.

    Built once per worker, so a sample pays a single ``landlock_restrict_self``. With ABI >= 4
    it also forbids every TCP bind and connect; with ABI >= 6 it forbids signals to processes
    outside the sample and connecting to abstract UNIX sockets outside it.
    """
    handled = _fs_rights(abi)
    net = _NET_ALL if abi >= 4 else 0
    scoped = _SCOPE_ALL if abi >= 6 else 0
    attr = struct.pack("QQQ", handled, net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    fd = _check(_syscall(_LL_CREATE, attr[:size], size, 0), "landlock_create_ruleset")
    read_dir = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
    read_file = _FS_EXECUTE | _FS_READ_FILE
    file_rw = _FS_READ_FILE | _FS_WRITE_FILE | (_FS_TRUNCATE if abi >= 3 else 0)
    rules = [(p, read_dir if os.path.isdir(p) else read_file) for p in read_paths]
    rules += [(p, handled) for p in write_dirs] + [(p, file_rw) for p in rw_files]
    for path, access in rules:
        try:
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # a library dir this machine does not have
        try:
            rule = struct.pack("=Qi", access & handled, pfd)
            _check(_syscall(_LL_ADD_RULE, fd, _LL_RULE_PATH_BENEATH, rule, 0), path)
        finally:
            os.close(pfd)
    return fd


def landlock_restrict(ruleset_fd: int) -> None:
    _check(_syscall(_LL_RESTRICT, ruleset_fd, 0), "landlock_restrict_self")


# ---- seccomp ----------------------------------------------------------------------------------

_AUDIT_ARCH_X86_64 = 0xC000003E
_RET_ALLOW, _RET_KILL = 0x7FFF0000, 0x80000000
_RET_EPERM, _RET_ENOSYS = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_CLONE_NS_FLAGS = 0x7E020080  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME

# x86_64 numbers. Denied outright: running programs, tracing, networking, leaving the
# process group, namespaces and mounts, signalling by other routes, changing other processes.
_DENY_X86_64 = {
    "execve": 59, "execveat": 322, "ptrace": 101, "process_vm_readv": 310,
    "process_vm_writev": 311, "socket": 41, "setsid": 112, "setpgid": 109, "unshare": 272,
    "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "bpf": 321,
    "perf_event_open": 298, "keyctl": 250, "add_key": 248, "request_key": 249,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "kexec_load": 246, "kexec_file_load": 320, "reboot": 169,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "swapon": 167,
    "swapoff": 168, "acct": 163, "personality": 135, "pidfd_open": 434,
    "pidfd_send_signal": 424, "pidfd_getfd": 438, "rt_sigqueueinfo": 129,
    "rt_tgsigqueueinfo": 297, "tkill": 200, "setpriority": 141, "sched_setaffinity": 203,
    "sched_setscheduler": 144, "sched_setparam": 142, "ioprio_set": 251,
    "migrate_pages": 256, "move_pages": 279, "kcmp": 312, "process_madvise": 440,
    "open_by_handle_at": 304, "name_to_handle_at": 303, "fanotify_init": 300,
    "quotactl": 179, "mknod": 133, "mknodat": 259, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "settimeofday": 164, "clock_settime": 227, "adjtimex": 159, "clock_adjtime": 305,
    "syslog": 103, "iopl": 172, "ioperm": 173, "vhangup": 153,
}  # fmt: skip
_NR = {"kill": 62, "tgkill": 234, "clone": 56, "clone3": 435, "prlimit64": 302}


def seccomp_supported() -> bool:
    return os.uname().machine == "x86_64"


def _assemble(prog: list[tuple]) -> bytes:
    """Resolve ("label", name) markers and symbolic jump targets into sock_filter structs."""
    labels, pos = {}, 0
    for op in prog:
        if op[0] == "label":
            labels[op[1]] = pos
        else:
            pos += 1
    out, pos = [], 0
    for op in prog:
        if op[0] == "label":
            continue
        code, jt, jf, k = op
        pos += 1
        jt = labels[jt] - pos if isinstance(jt, str) else jt
        jf = labels[jf] - pos if isinstance(jf, str) else jf
        out.append(struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF))
    return b"".join(out)


_SENTINEL = 0x3FFFFFF1  # above any pid_max: marks where the sample's pid goes
_template: tuple[bytearray, list[int], list[int]] | None = None


# What the worker itself still needs after it installs the shared filter: each sample denies
# these with a small filter of its own, installed after its setsid().
_SAMPLE_ONLY = ("setsid", "setpgid", "pidfd_open")


def worker_filter() -> bytes:
    """The filter a worker installs on itself once (Landlock ABI >= 6: signals scoped there).

    Every sample inherits it through fork at no cost; compiling a 70-rule BPF program per
    sample was ~10% of a sample process's CPU. Only ``_SAMPLE_ONLY`` is left out, which
    ``sample_filter`` adds back in each sample.
    """
    return _build_filter(None, skip=_SAMPLE_ONLY)


def sample_filter() -> bytes:
    """The per-sample filter stacked on ``worker_filter``: deny what the worker had to keep."""
    nrs = [_DENY_X86_64[name] for name in _SAMPLE_ONLY]
    p: list[tuple] = [
        (_LD_W_ABS, 0, 0, 4),
        (_JEQ, 0, "kill_process", _AUDIT_ARCH_X86_64),
        (_LD_W_ABS, 0, 0, 0),
    ]
    p += [(_JEQ, "eperm", 0, nr) for nr in nrs]
    p += [
        (_RET, 0, 0, _RET_ALLOW),
        ("label", "eperm"),
        (_RET, 0, 0, _RET_EPERM),
        ("label", "kill_process"),
        (_RET, 0, 0, _RET_KILL),
    ]
    return _assemble(p)


def seccomp_filter(pid: int | None) -> bytes:
    """The BPF program for a sample whose process (and process group) id is ``pid``.

    ``pid=None`` leaves signals to Landlock's scoping (ABI >= 6), which already confines them
    to the sample's own processes; that program has no per-sample part and is prepared once
    per worker. Otherwise the pid is patched into a template assembled once per worker:
    forked children pay for every Python-level step.
    """
    global _template
    if pid is None:
        return _build_filter(None)
    if _template is None:
        prog = bytearray(_build_filter(_SENTINEL))
        ks = [struct.unpack_from("I", prog, off + 4)[0] for off in range(0, len(prog), 8)]
        plus = [i * 8 + 4 for i, k in enumerate(ks) if k == _SENTINEL]
        minus = [i * 8 + 4 for i, k in enumerate(ks) if k == (-_SENTINEL) & 0xFFFFFFFF]
        _template = (prog, plus, minus)
    prog, plus, minus = _template
    out = bytearray(prog)
    for off in plus:
        struct.pack_into("I", out, off, pid & 0xFFFFFFFF)
    for off in minus:
        struct.pack_into("I", out, off, -pid & 0xFFFFFFFF)
    return bytes(out)


def _build_filter(pid: int | None, skip: tuple[str, ...] = ()) -> bytes:
    nr_off, arch_off, arg0 = 0, 4, 16  # offsets in struct seccomp_data (arg0 low word)
    p: list[tuple] = [
        (_LD_W_ABS, 0, 0, arch_off),
        (_JEQ, 0, "kill_process", _AUDIT_ARCH_X86_64),
        (_LD_W_ABS, 0, 0, nr_off),
        (_JGE, "kill_process", 0, 0x40000000),  # the x32 ABI
    ]
    p += [(_JEQ, "eperm", 0, nr) for name, nr in _DENY_X86_64.items() if name not in skip]
    if pid is not None:
        p += [(_JEQ, "kill", 0, _NR["kill"]), (_JEQ, "tgkill", 0, _NR["tgkill"])]
    p += [
        (_JEQ, "clone", 0, _NR["clone"]),
        (_JEQ, "enosys", 0, _NR["clone3"]),  # flags live in memory; libc falls back to clone
        (_JEQ, "prlimit", 0, _NR["prlimit64"]),
        (_RET, 0, 0, _RET_ALLOW),
    ]
    if pid is not None:
        p += [
            ("label", "kill"),  # only this sample's own process group
            (_LD_W_ABS, 0, 0, arg0),
            (_JEQ, "allow", 0, pid),
            (_JEQ, "allow", 0, 0),
            (_JEQ, "allow", "eperm", -pid),
            ("label", "tgkill"),
            (_LD_W_ABS, 0, 0, arg0),
            (_JEQ, "allow", "eperm", pid),
        ]
    p += [
        ("label", "clone"),
        (_LD_W_ABS, 0, 0, arg0),
        (_JSET, "eperm", "allow", _CLONE_NS_FLAGS),
        ("label", "prlimit"),  # own limits only
        (_LD_W_ABS, 0, 0, arg0),
        (_JEQ, "allow", "eperm", 0),
        ("label", "allow"),
        (_RET, 0, 0, _RET_ALLOW),
        ("label", "eperm"),
        (_RET, 0, 0, _RET_EPERM),
        ("label", "enosys"),
        (_RET, 0, 0, _RET_ENOSYS),
        ("label", "kill_process"),
        (_RET, 0, 0, _RET_KILL),
    ]
    return _assemble(p)


class Seccomp:
    """A BPF program in memory, ready to install with one prctl (also in a forked child)."""

    def __init__(self, program: bytes) -> None:
        self._buf = ctypes.create_string_buffer(program, len(program))
        self._fprog = struct.pack("HxxxxxxQ", len(program) // 8, ctypes.addressof(self._buf))

    def install(self) -> None:
        _check(_libc.prctl(22, 2, self._fprog, 0, 0), "prctl(SET_SECCOMP)")  # MODE_FILTER


# ---- rlimits ----------------------------------------------------------------------------------


def vm_bytes() -> int:
    """Current virtual size of this process (the base the memory limit is added to)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def count_processes(uid: int) -> int:
    """How many processes ``uid`` runs now (RLIMIT_NPROC counts them all, by real uid).

    Reads each process's real uid from /proc/<pid>/status: the owner of /proc/<pid> is root
    for a process that changed uid (it is no longer dumpable), so stat() would miss them.
    """
    n = 0
    want = b"Uid:\t%d\t" % uid
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status", "rb") as f:
                    n += want in f.read()
            except OSError:
                pass
    return n


def set_fixed_limits() -> None:
    """The limits that are zero for every sample: set once on the worker, which needs none of
    them (no core dumps, locked memory or message queues), and inherited by every fork."""
    for res in (resource.RLIMIT_CORE, resource.RLIMIT_MEMLOCK, resource.RLIMIT_MSGQUEUE):
        resource.setrlimit(res, (0, 0))


def set_limits(
    *, address_space: int, cpu_s: int, file_bytes: int, open_files: int, processes: int
) -> None:
    """Limits as absolute numbers the caller already made relative to current usage.

    The zero ones are the worker's own (``set_fixed_limits``), inherited through fork.
    """
    setrlimit = resource.setrlimit
    setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))  # SIGXCPU, then SIGKILL
    setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
    setrlimit(resource.RLIMIT_NPROC, (processes, processes))
