"""Process-level isolation primitives (Linux), used by the worker and, for clean-up, the pool.

Everything here degrades gracefully: a primitive that the kernel or our privileges do not
allow is reported (``worker info``) and skipped, never silently assumed.

- :func:`enter_network_namespace`: ``unshare(CLONE_NEWNET)`` (as root), else
  ``unshare(CLONE_NEWUSER | CLONE_NEWNET)`` (unprivileged user namespaces). The new namespace
  has only a loopback device, and it is down: no connection anywhere, 127.0.0.1 included.
- :func:`drop_privileges`: as root, the candidate runs under a uid of its own
  (``UID_BASE + worker pid``) with no capabilities, ``no_new_privs`` set, and the parent-death
  signal armed. Only when that uid cannot read the interpreter's own files (Python installed
  under a root-only prefix such as ``/root/.pyenv``) does it keep ``CAP_DAC_READ_SEARCH``,
  i.e. read access to every file (still no writes); the worker reports which.
  An unprivileged uid makes ``RLIMIT_NPROC`` enforceable (it is not for root), stops writes to
  anything it does not own, stops signalling or ptracing other processes and reading their
  ``/proc/<pid>/environ``, and lets the worker kill every process the candidate left behind
  with one ``kill(-1)`` from that uid.
- :func:`apply_limits`: ``RLIMIT_AS`` (current size + budget), ``RLIMIT_CPU``,
  ``RLIMIT_FSIZE`` (0: a file can be created where the uid may, but not written),
  ``RLIMIT_NPROC``, ``RLIMIT_NOFILE``, ``RLIMIT_CORE`` 0.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import resource
import signal
import time

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
CAP_DAC_READ_SEARCH = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

UID_BASE = 1_000_000_000  # candidate uid = UID_BASE + worker pid: unique while the worker lives

_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _call(fn_name: str, *args: int) -> int:
    try:
        fn = getattr(libc(), fn_name)
    except (AttributeError, OSError) as e:  # not Linux
        raise OSError(errno.ENOSYS, f"{fn_name} is not available: {e}") from None
    result = fn(*[ctypes.c_ulong(a) if i else ctypes.c_int(a) for i, a in enumerate(args)])
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{fn_name}: {os.strerror(err)}")
    return result


def prctl(option: int, arg2: int = 0) -> None:
    _call("prctl", option, arg2, 0, 0, 0)


def enter_network_namespace() -> str:
    """Move this (single-threaded) process into a fresh network namespace; say how it went."""
    try:
        _call("unshare", CLONE_NEWNET)
        return "netns"
    except OSError as first:
        uid, gid = os.getuid(), os.getgid()
        try:
            _call("unshare", CLONE_NEWUSER | CLONE_NEWNET)
        except OSError as second:
            return f"unavailable ({first.strerror}; user namespace: {second.strerror})"
        for path, text in (
            ("/proc/self/setgroups", "deny"),
            ("/proc/self/uid_map", f"{uid} {uid} 1"),
            ("/proc/self/gid_map", f"{gid} {gid} 1"),
        ):
            try:
                with open(path, "w") as f:
                    f.write(text)
            except OSError:
                pass
        return "userns+netns"


def set_child_subreaper() -> bool:
    """Orphaned descendants of the candidate get re-parented to us, so we can reap/kill them."""
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        return True
    except OSError:
        return False


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _capset(mask: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = mask & 0xFFFFFFFF
    data[1].effective = data[1].permitted = mask >> 32
    if libc().capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def drop_privileges(uid: int, keep_read_access: bool = True) -> None:
    """Become ``uid`` (and gid ``uid``), keeping at most CAP_DAC_READ_SEARCH. Irreversible."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    os.setgroups([])
    if keep_read_access:
        prctl(PR_SET_KEEPCAPS, 1)
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if keep_read_access:
        _capset(1 << CAP_DAC_READ_SEARCH)
        prctl(PR_SET_KEEPCAPS, 0)


def apply_limits(
    *, memory_bytes: int | None, cpu_s: float, max_processes: int, max_files: int = 256
) -> None:
    def set_(which: int, soft: int, hard: int | None = None) -> None:
        hard = soft if hard is None else hard
        cur_soft, cur_hard = resource.getrlimit(which)
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))

    if memory_bytes is not None:
        set_(resource.RLIMIT_AS, memory_bytes)
    cpu = max(1, math.ceil(cpu_s))
    set_(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU at the soft limit, SIGKILL a second later
    set_(resource.RLIMIT_FSIZE, 0)
    set_(resource.RLIMIT_CORE, 0)
    set_(resource.RLIMIT_NPROC, max_processes)
    set_(resource.RLIMIT_NOFILE, max_files)


def vm_size_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def kill_uid_processes_as(uid: int) -> None:
    """Fork a helper that becomes ``uid`` and sends SIGKILL to every process of that uid.

    ``kill(-1)`` runs under the kernel's task-list lock, so a fork loop cannot outrun it. Only
    for single-threaded callers (the worker); the helper drops all capabilities first.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass  # nothing to kill
        except BaseException:
            code = 1
        os._exit(code)
    os.waitpid(pid, 0)


def _proc_pids() -> list[int]:
    try:
        return [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []


def _proc_status_field(pid: int, field: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def processes_of_uid(uid: int) -> list[int]:
    found = []
    for pid in _proc_pids():
        uids = _proc_status_field(pid, "Uid")
        if uids and int(uids.split()[0]) == uid:
            found.append(pid)
    return found


def descendants(root: int) -> list[int]:
    """All live descendants of ``root`` (from /proc; racy by nature, call repeatedly)."""
    children: dict[int, list[int]] = {}
    for pid in _proc_pids():
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(pid)
    out: list[int] = []
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def kill_uid_processes(uid: int, rounds: int = 50) -> int:
    """SIGKILL every process whose real uid is ``uid`` by scanning /proc (any caller as root)."""
    total = 0
    for _ in range(rounds):
        pids = processes_of_uid(uid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                total += 1
            except ProcessLookupError:
                pass
            except PermissionError:
                return total
        time.sleep(0.005)
    return total


def killpg_quiet(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    except OSError as e:  # pragma: no cover
        if e.errno != errno.ESRCH:
            raise


__all__ = [
    "UID_BASE",
    "apply_limits",
    "descendants",
    "drop_privileges",
    "enter_network_namespace",
    "kill_uid_processes",
    "kill_uid_processes_as",
    "killpg_quiet",
    "prctl",
    "processes_of_uid",
    "rss_bytes",
    "set_child_subreaper",
    "vm_size_bytes",
]
