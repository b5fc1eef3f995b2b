"""Hostile candidates, end to end through real sandbox workers.

Every test ends with the named status *and* then evaluates a good candidate through the same
sandbox (same worker: ``workers=1``), which must still score correctly. The ``open`` sandbox
runs with ``enforce_policy=False`` (no static check, no runtime guard) to show that the
process-level layers hold on their own.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import textwrap
import threading
import time

import psutil
import pytest

from aad_kit.result import Status
from aad_kit.sandbox import Sandbox, SandboxConfig
from tests.sandbox_fixture_task import REF, TEMPLATE

pytestmark = pytest.mark.hostile

TIMEOUT = 1.5
GOOD_SCORE = 5.0  # TEMPLATE (2x) on the "small" setting (1, 2, 3, 4)


def make_sandbox(**overrides) -> Sandbox:
    config = dict(workers=1, timeout_s=TIMEOUT, memory_mb=512, max_output_bytes=4096)
    config.update(overrides)
    return Sandbox(SandboxConfig(**config), cache=False)


@pytest.fixture(scope="module")
def guarded():
    with make_sandbox() as sb:
        yield sb


@pytest.fixture(scope="module")
def open_sb():
    with make_sandbox(enforce_policy=False) as sb:
        yield sb


@pytest.fixture(scope="module")
def open_same_uid():
    """No policy and no uid switch: only rlimits, namespaces and process-group clean-up."""
    with make_sandbox(enforce_policy=False, switch_uid=False) as sb:
        yield sb


@pytest.fixture(params=["guarded", "open_sb"])
def any_sb(request):
    return request.getfixturevalue(request.param)


# Memory tests get a long wall-clock budget: the first ~0.5 GB a fresh worker touches costs
# about a second of kernel page zeroing here (0.1 s afterwards), and under CI load that raced
# a 1.5 s timeout. A memory bomb must end as MEMORY_LIMIT, never win by timing out.
MEMORY_TEST_TIMEOUT = 20.0


@pytest.fixture(scope="module", params=["guarded", "open_sb"])
def memory_sb(request):
    with make_sandbox(timeout_s=MEMORY_TEST_TIMEOUT, enforce_policy=request.param == "guarded") as sb:
        yield sb


@pytest.fixture(params=["open_sb", "open_same_uid"])
def any_open(request):
    return request.getfixturevalue(request.param)


def program(body: str, header: str = "") -> str:
    """A program whose ``f`` runs ``body`` (dedented) before returning 2x."""
    inner = textwrap.indent(textwrap.dedent(body).strip(), "    ")
    return f"{textwrap.dedent(header).strip()}\n\n\ndef f(x):\n{inner}\n    return 2.0 * x\n"


def still_good(sb: Sandbox) -> None:
    r = sb.evaluate(REF, TEMPLATE)
    assert r.status is Status.OK, r.message
    assert r.score == GOOD_SCORE


def check(sb: Sandbox, code: str, expected: Status, *, setting: str | None = None):
    r = sb.evaluate(REF, code, setting)
    assert r.status is expected, (r.status, r.message)
    assert r.score is None or expected is Status.OK
    still_good(sb)
    return r


def marker_processes(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if marker in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            pass
    return found


# ---- time ------------------------------------------------------------------------------------


def test_infinite_loop_times_out_promptly(any_sb):
    t0 = time.monotonic()
    r = check(any_sb, program("while True:\n    pass"), Status.TIMEOUT)
    elapsed = time.monotonic() - t0
    assert elapsed < TIMEOUT + 1.5 + 0.5, elapsed  # the timeout, + the good run, + margin
    assert "time limit" in r.message


def test_module_level_sleep_times_out(guarded):
    check(guarded, program("pass", "import time\ntime.sleep(30)"), Status.TIMEOUT)


# ---- memory ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, header",
    [
        ("block = bytearray(50 * 10**9)", ""),
        ("block = np.ones(int(50e9 / 8))", "import numpy as np"),
        ("keep = []\nwhile True:\n    keep.append(bytearray(10**8))", ""),
        ("keep = []\nwhile True:\n    keep.append(np.ones(10**7))", "import numpy as np"),
    ],
    ids=["bytearray-50GB", "numpy-50GB", "grow-bytes", "grow-numpy"],
)
def test_memory_bombs(memory_sb, body, header):
    r = check(memory_sb, program(body, header), Status.MEMORY_LIMIT)
    assert r.runtime_s < MEMORY_TEST_TIMEOUT / 2, r.runtime_s
    assert "memory" in r.message.lower()


# ---- processes -------------------------------------------------------------------------------


def test_fork_bomb_is_a_forbidden_import(guarded):
    check(guarded, program("while True:\n    os.fork()", "import os"), Status.FORBIDDEN_IMPORT)


DAEMONS = """
import os
import time

def spawn(marker, n):
    started = 0
    for _ in range(n):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:  # daemonize: new session, double fork, exec a sleeper
            code = 1
            try:
                os.setsid()
                if os.fork() == 0:
                    os.execv("/bin/sleep", ["sleep", marker])
                code = 0
            finally:
                os._exit(code)
        if os.waitpid(pid, 0)[1] != 0:  # the second fork failed
            break
        started += 1
    return started
"""


def test_fork_bomb_processes_are_killed_at_timeout(any_open):
    open_sb = any_open
    marker = "987.651"
    code = DAEMONS + f"\nspawn({marker!r}, 20)\nwhile True:\n    time.sleep(0.01)\n\ndef f(x):\n    return x\n"
    check(open_sb, code, Status.TIMEOUT)
    assert marker_processes(marker) == []


def test_processes_left_behind_are_killed_and_nproc_is_enforced(any_open):
    open_sb = any_open
    marker = "987.652"
    code = DAEMONS + f"\nSTARTED = spawn({marker!r}, 60)\n\ndef f(x):\n    return float(STARTED)\n"
    r = check(open_sb, code, Status.OK)
    assert marker_processes(marker) == []  # the sleepers outlived the candidate: all killed
    assert r.metric is not None and r.metric >= 1  # forking itself worked ...
    if open_sb.info().get("candidate_uid") is not None:
        # ... but RLIMIT_NPROC (enforced for the unprivileged uid) stopped it early
        assert r.metric < open_sb.config.max_processes, r.metric


# ---- files -----------------------------------------------------------------------------------


def test_writing_a_file_is_a_forbidden_call(guarded, tmp_path):
    target = tmp_path / "was_here.txt"
    check(guarded, program(f"with open({str(target)!r}, 'w') as fh:\n    fh.write('x')"), Status.FORBIDDEN_CALL)
    assert not target.exists()


def test_writing_files_fails_without_the_policy(any_open, tmp_path):
    open_sb = any_open
    private = tmp_path / "private"  # root-owned, 0700
    private.mkdir(mode=0o700)
    shared = tmp_path / "shared"  # world-writable: only RLIMIT_FSIZE stands in the way
    shared.mkdir()
    shared.chmod(0o777)
    tmp_path.chmod(0o755)
    dropped = open_sb.info().get("candidate_uid") is not None
    for target in (private / "x.txt", shared / "x.txt"):
        code = program(f"with open({str(target)!r}, 'w') as fh:\n    fh.write('x' * 10000)")
        r = check(open_sb, code, Status.RUNTIME_ERROR)
        assert not target.exists() or target.stat().st_size == 0, target
        if dropped and target.parent == private:
            assert "Permission denied" in r.message
        if target.parent == shared:
            assert "File too large" in r.message or "Permission denied" in r.message


# ---- network ---------------------------------------------------------------------------------


def test_socket_is_a_forbidden_import(guarded):
    code = program("socket.create_connection(('127.0.0.1', 80), timeout=1)", "import socket")
    check(guarded, code, Status.FORBIDDEN_IMPORT)


def test_network_is_unreachable_without_the_policy(open_sb):
    if not open_sb.info().get("network_isolated"):
        pytest.skip(f"no network namespace on this machine: {open_sb.info().get('netns')}")
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    accepted: list[object] = []

    def serve():
        server.settimeout(5)
        try:
            while True:
                conn, _ = server.accept()
                accepted.append(conn)
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()  # reachable from here
        code = program(
            f"""
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=0.5).close()
                return 1.0
            except OSError:
                return 0.0
            """,
            "import socket",
        )
        r = check(open_sb, code, Status.OK)
        assert r.metric == 0.0, "the candidate reached a server on the host's loopback"
        assert len(accepted) == 1  # only our own probe got through
    finally:
        server.close()


# ---- environment -----------------------------------------------------------------------------


def test_environment_secret_is_invisible(monkeypatch):
    monkeypatch.setenv("AAD_TEST_SECRET", "hunter2-secret")
    code = program(
        """
        import os
        seen = "hunter2-secret" in repr(dict(os.environ))
        for pid in (os.getpid(), os.getppid()):
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    seen = seen or b"hunter2-secret" in fh.read()
            except OSError:
                pass
        return 1.0 if seen else 0.0
        """
    )
    with make_sandbox(enforce_policy=False) as sb:  # started after the secret was set
        r = check(sb, code, Status.OK)
    assert r.metric == 0.0
    with make_sandbox() as sb:
        check(sb, program("k = os.environ.get('AAD_TEST_SECRET')", "import os"), Status.FORBIDDEN_IMPORT)


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid switch needs a root worker")
def test_other_processes_environment_is_unreadable(open_sb, open_same_uid):
    """/proc/<pid>/environ of a process started with a secret: the uid switch hides it."""
    env = dict(os.environ, AAD_TEST_SECRET_2="swordfish-secret")
    sleeper = subprocess.Popen(["/bin/sleep", "30"], env=env)
    try:
        code = program(
            f"""
            try:
                with open("/proc/{sleeper.pid}/environ", "rb") as fh:
                    return 1.0 if b"swordfish-secret" in fh.read() else 0.5
            except OSError:
                return 0.0
            """
        )
        assert check(open_sb, code, Status.OK).metric == 0.0
        # honest contrast: without the uid switch (and without the policy) it is readable
        assert check(open_same_uid, code, Status.OK).metric == 1.0
    finally:
        sleeper.kill()
        sleeper.wait()


# ---- output ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    ["print('x' * 100_000_000)", "for _ in range(100):\n    print('y' * 1_000_000)"],
    ids=["one-100MB-line", "100-lines-of-1MB"],
)
def test_printing_100mb_is_capped_and_still_scored(any_sb, body):
    header = "_printed = []"
    code = program(f"if not _printed:\n    _printed.append(1)\n    {body.replace(chr(10), chr(10) + '    ')}", header)
    r = check(any_sb, code, Status.OK)
    assert r.score == GOOD_SCORE
    cap = any_sb.config.max_output_bytes
    assert 0 < len(r.stdout.encode()) <= cap
    assert "truncated" in r.stdout
    assert r.details.get("stdout_dropped_chars", 0) > 99_000_000


def test_print_output_is_captured(guarded):
    r = check(guarded, program("print('hello from', x)"), Status.OK)
    assert "hello from 1.0" in r.stdout


# ---- exits and exceptions --------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, header",
    [
        ("raise SystemExit(3)", ""),
        ("raise KeyboardInterrupt", ""),
        ("raise Escape('not an Exception')", "class Escape(BaseException):\n    pass"),
        ("return 1 / 0", ""),
        ("return f(x)", ""),  # RecursionError
    ],
    ids=["SystemExit", "KeyboardInterrupt", "BaseException-subclass", "ZeroDivision", "recursion"],
)
def test_exceptions_are_runtime_errors(any_sb, body, header):
    r = check(any_sb, program(body, header), Status.RUNTIME_ERROR)
    assert r.message  # says what happened
    assert "<candidate>" in r.message or "SystemExit" in r.message  # with the candidate's frame


def test_sys_exit_and_os_exit_without_the_policy(open_sb):
    r = check(open_sb, program("sys.exit(3)", "import sys"), Status.RUNTIME_ERROR)
    assert "SystemExit" in r.message
    r = check(open_sb, program("os._exit(3)", "import os"), Status.RUNTIME_ERROR)
    assert "code 3" in r.message


def test_killing_itself_is_a_runtime_error(open_sb):
    r = check(open_sb, program("os.kill(os.getpid(), signal.SIGSEGV)", "import os, signal"), Status.RUNTIME_ERROR)
    assert "SIGSEGV" in r.message


def test_sigxcpu_is_a_timeout(open_sb):
    # what the kernel sends when RLIMIT_CPU runs out (e.g. many threads burning CPU in C code)
    r = check(open_sb, program("os.kill(os.getpid(), signal.SIGXCPU)", "import os, signal"), Status.TIMEOUT)
    assert "CPU time" in r.message


def test_limits_are_in_place(open_sb):
    code = program(
        """
        import json, os, resource
        names = ["RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_CORE", "RLIMIT_NOFILE"]
        limits = {n: resource.getrlimit(getattr(resource, n)) for n in names}
        with open("/proc/self/status") as fh:
            status = fh.read()
        print(json.dumps({"limits": limits, "uid": os.getuid(), "env": sorted(os.environ),
                          "session_leader": os.getsid(0) == os.getpid(), "status": status}))
        """
    )
    r = check(open_sb, code, Status.OK)
    report = json.loads(r.stdout.splitlines()[0])
    limits = report["limits"]
    assert limits["RLIMIT_CPU"][0] == math.ceil(TIMEOUT + 1)
    assert limits["RLIMIT_FSIZE"] == [0, 0]
    assert limits["RLIMIT_CORE"] == [0, 0]
    assert limits["RLIMIT_NPROC"][0] == open_sb.config.max_processes
    assert 0 < limits["RLIMIT_AS"][0] < 4 * 2**30  # worker size + 512 MB, far below the 50 GB bombs
    assert report["session_leader"]
    assert "AAD_TEST_SECRET" not in report["env"] and "PATH" in report["env"]
    assert "NoNewPrivs:\t1" in report["status"] or os.geteuid() != 0
    if open_sb.info().get("candidate_uid") is not None:
        assert report["uid"] == open_sb.info()["candidate_uid"]
        cap_eff = [ln for ln in report["status"].splitlines() if ln.startswith("CapEff")][0]
        keeps_read = "CAP_DAC_READ_SEARCH" in open_sb.info()["privileges"]
        assert int(cap_eff.split()[1], 16) == (1 << 2 if keeps_read else 0)


# ---- invalid output --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ret", ["float('nan')", "float('inf')", "'best'", "None", "True", "[x]"]
)
def test_invalid_outputs(any_sb, ret):
    code = f"def f(x):\n    return {ret}\n"
    r = check(any_sb, code, Status.INVALID_OUTPUT)
    assert "f(1.0)" in r.message


# ---- mutating shared state ------------------------------------------------------------------


def test_mutating_numpy_is_forbidden_by_policy(guarded):
    check(guarded, program("np.sum = lambda *a, **k: 0", "import numpy as np"), Status.FORBIDDEN_CALL)
    check(guarded, program("setattr(np, 'su' + 'm', lambda *a, **k: 0)", "import numpy as np"), Status.FORBIDDEN_CALL)


RANDOM_PROGRAM = "import random\nimport numpy as np\n\ndef f(x):\n    return random.random() + float(np.random.rand())\n"


def test_mutating_numpy_does_not_leak_to_the_next_candidate(open_sb):
    before = check(open_sb, RANDOM_PROGRAM, Status.OK).metric
    hostile = (
        "import numpy, random\n"
        "numpy.sum = lambda *a, **k: 0\n"
        "numpy.random.seed(123)\nrandom.seed(123)\n"
        "numpy.random.rand = lambda *a: 42.0\n"
        "import aad_kit.tasks.base as base\nbase.Measurement = None\n"
        "def f(x):\n    return float(numpy.sum([x, x])) + 1.0\n"
    )
    r = open_sb.evaluate(REF, hostile)  # whatever it scores, it must not poison the worker
    assert r.status in (Status.OK, Status.SANDBOX_ERROR, Status.RUNTIME_ERROR)
    still_good(open_sb)  # TEMPLATE relies on np.sum
    assert check(open_sb, RANDOM_PROGRAM, Status.OK).metric == before  # same seeded draws


def test_instances_cannot_be_poisoned(open_sb):
    # the candidate mutates what measure hands it and the task's cached instances
    code = (
        "import gc\n"
        "gc.unfreeze()\n"  # the worker freezes its objects before forking
        "for o in gc.get_objects():\n"
        "    if isinstance(o, list) and o == [1.0, 2.0, 3.0, 4.0]:\n"
        "        o[:] = [100.0] * 4\n"
        "def f(x):\n    return 2.0 * x\n"
    )
    r = open_sb.evaluate(REF, code)
    assert r.metric == 200.0  # the poisoning worked inside its own process ...
    still_good(open_sb)  # ... and nowhere else


# ---- syntax and escapes --------------------------------------------------------------------


def test_syntax_error(guarded):
    r = check(guarded, "def f(x):\n    return (1 +\n", Status.SYNTAX_ERROR)
    assert "line 2" in r.message


def test_return_outside_function_is_a_syntax_error(open_sb):
    # parses, but does not compile: caught in the worker
    check(open_sb, "return 1\ndef f(x):\n    return x\n", Status.SYNTAX_ERROR)


@pytest.mark.parametrize(
    "body, header, expected",
    [
        ("os.system('true')", "import os", Status.FORBIDDEN_IMPORT),
        ("subprocess.run(['true'])", "import subprocess", Status.FORBIDDEN_IMPORT),
        ("os = __import__('os')", "", Status.FORBIDDEN_CALL),
        ("c = ().__class__.__bases__[0].__subclasses__()", "", Status.FORBIDDEN_CALL),
        # the rest pass the static check and are stopped by the runtime guard
        ("c = getattr(type(()), '__ba' + 'ses__')", "", Status.FORBIDDEN_CALL),
        ("m = statistics.sys.modules['os']", "import statistics", Status.FORBIDDEN_IMPORT),
        ("o = enum.bltns.open('/etc/passwd')", "import enum", Status.FORBIDDEN_IMPORT),
        ("g = (i for i in [1])\nfr = getattr(g, 'gi_' + 'frame')", "", Status.FORBIDDEN_CALL),
        ("l = getattr(np, 'lo' + 'ad')('/etc/passwd')", "import numpy as np", Status.FORBIDDEN_CALL),
        ("m = np\nm.sum = len", "import numpy as np", Status.FORBIDDEN_CALL),
        (  # code injection through the source dataclasses generates from field names
            "X = type('X', (), {'__annot' + 'ations__': {'a,__import__(\"os\").getpid()': int}, 'a': 1})\n"
            "X = dataclasses.dataclass(init=False, repr=False)(X)\nleak = X() == X()",
            "import dataclasses",
            Status.FORBIDDEN_CALL,
        ),
        (
            "fl = dataclasses.fields(B)[0]\nfl.name = 'a,__import__(\"os\").getpid()'",
            "import dataclasses\n@dataclasses.dataclass\nclass B:\n    a: int = 0",
            Status.FORBIDDEN_CALL,
        ),
    ],
)
def test_escape_attempts(guarded, body, header, expected):
    check(guarded, program(body, header), expected)


def test_catalogue_of_hostile_candidates(guarded):
    hostile = pytest.importorskip("aad_kit.sandbox.hostile")
    for candidate in hostile.hostile_candidates():
        code = candidate.render(REF)
        r = guarded.evaluate(REF, code)
        assert r.status is candidate.expected, (candidate.name, r.status, r.message)
        still_good(guarded)


def test_no_candidate_processes_survive(guarded, open_sb, open_same_uid):
    assert open_same_uid.info()["candidate_uid"] is None
    for sb in (guarded, open_sb, open_same_uid):
        uid = sb.info().get("candidate_uid")
        for w in sb.stats()["workers"]:
            if w["pid"]:
                assert psutil.Process(w["pid"]).children(recursive=True) == []
        if uid is not None:
            assert [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid] == []


def test_isolation_report(open_sb):
    info = open_sb.info()
    for key in ("netns", "network_isolated", "privileges", "candidate_uid"):
        assert key in info
    if os.geteuid() == 0:
        assert info["candidate_uid"] is not None, info["privileges"]
