"""The worker pool: parallelism, worker replacement, caching, determinism, the public API."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from aad_kit.result import EvalResult, Status
from aad_kit.sandbox import ResultCache, Sandbox, SandboxConfig, default_sandbox
from aad_kit.tasks import Setting, get_task
from tests.sandbox_fixture_task import REF, TEMPLATE, FixtureTask

TRIVIAL = "def f(x):\n    return x\n"


def variant(code: str, i: int) -> str:
    """Same behaviour, different program (a distinct cache key)."""
    return f"{code}\n_variant = {i}\n"


@pytest.fixture(scope="module")
def pool():
    with Sandbox(SandboxConfig(workers=2, timeout_s=5), cache=False) as sb:
        yield sb


def test_evaluate_basic(pool):
    r = pool.evaluate(REF, TEMPLATE)
    assert isinstance(r, EvalResult)
    assert r.status is Status.OK and r.score == 5.0 and r.metric == 5.0
    assert r.task == "sandbox_fixture" and r.setting == "small" and len(r.code_hash) == 16
    assert r.details == {"n": 4} and not r.cached
    r = pool.evaluate(FixtureTask(), TEMPLATE, "other")  # a Task instance and a named setting
    assert r.status is Status.OK and r.metric == 30.0 and r.setting == "other"


def test_a_batch_runs_on_both_workers_at_once(pool):
    """Parallelism as behaviour, not speed (the speed-up is benchmarks/eval_executors.py's):
    while a batch runs, both workers have a candidate child alive at the same moment, and each
    worker scored some of the batch."""
    pool.evaluate_many([(REF, variant(TRIVIAL, i)) for i in range(4)])  # both workers warm
    before = {w["index"]: w["evaluations"] for w in pool.stats()["workers"]}
    worker_pids = [w["pid"] for w in pool.stats()["workers"]]
    burn = "_s = 0\nfor _i in range(4_000_000):\n    _s += _i\n\ndef f(x):\n    return x\n"
    jobs = [(REF, variant(burn, i), None) for i in range(8)]
    overlap = threading.Event()
    done = threading.Event()

    def watch() -> None:  # both workers with a live (non-zombie) child: two candidates at once
        procs = [psutil.Process(pid) for pid in worker_pids]
        while not done.is_set() and not overlap.is_set():
            try:
                busy = [any(c.status() != psutil.STATUS_ZOMBIE for c in p.children()) for p in procs]
            except psutil.Error:
                busy = []
            if len(busy) == 2 and all(busy):
                overlap.set()
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        results = pool.evaluate_many(jobs)
    finally:
        done.set()
        watcher.join()
    assert all(r.status is Status.OK for r in results), [r.message for r in results]
    assert overlap.is_set(), "the two workers never ran a candidate at the same time"
    workers = pool.stats()["workers"]
    used = [w for w in workers if w["evaluations"] > before[w["index"]]]
    assert len(used) == 2 and used[0]["pid"] != used[1]["pid"]
    assert sum(w["evaluations"] - before[w["index"]] for w in workers) == len(jobs)


def test_legitimate_programs_run_in_the_sandbox(pool):
    from tests.test_sandbox_policy import LEGIT

    for r in pool.evaluate_many([(REF, code, None) for code in LEGIT]):
        assert r.status is Status.OK, r.message


def test_results_come_back_in_input_order(pool):
    codes = [f"def f(x):\n    return {i}.0\n" for i in range(10)]
    codes[3] = "import os\ndef f(x):\n    return 1.0\n"  # a static rejection in the middle
    results = pool.evaluate_many([(REF, c, None) for c in codes], progress=True)
    for i, r in enumerate(results):
        if i == 3:
            assert r.status is Status.FORBIDDEN_IMPORT
        else:
            assert r.status is Status.OK and r.metric == float(i)


def test_worker_killed_between_jobs_is_replaced():
    with Sandbox(SandboxConfig(workers=1, timeout_s=5), cache=False) as sb:
        assert sb.evaluate(REF, TEMPLATE).ok
        pid = sb.stats()["workers"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
        r = sb.evaluate(REF, TEMPLATE)
        assert r.status is Status.OK and r.score == 5.0
        stats = sb.stats()
        assert stats["worker_restarts"] == 1
        assert stats["workers"][0]["pid"] != pid


def test_worker_killed_right_before_a_job_is_replaced():
    with Sandbox(SandboxConfig(workers=1, timeout_s=5), cache=False) as sb:
        assert sb.evaluate(REF, TEMPLATE).ok
        os.kill(sb.stats()["workers"][0]["pid"], signal.SIGKILL)  # no pause: may still be dying
        assert sb.evaluate(REF, TEMPLATE).ok


def test_hung_worker_is_replaced_after_timeout_plus_grace():
    """A worker frozen mid-job is given up on after its candidate's timeout + grace (1.5 s), not
    after the setup timeout. The bound below is the setup timeout (120 s), 80x the expected
    wait: only a pool that waited for the wrong timer can reach it, a slow machine cannot."""
    config = SandboxConfig(workers=1, timeout_s=1.0, grace_s=0.5, setup_timeout_s=120)
    with Sandbox(config, cache=False) as sb:
        assert sb.evaluate(REF, TEMPLATE).ok
        pid = sb.stats()["workers"][0]["pid"]
        slow = "import time\ntime.sleep(0.6)\n\ndef f(x):\n    return x\n"
        stopper = threading.Timer(0.3, os.kill, (pid, signal.SIGSTOP))  # freeze the worker mid-job
        stopper.start()
        t0 = time.monotonic()
        r = sb.evaluate(REF, slow)
        elapsed = time.monotonic() - t0
        stopper.join()
        assert r.status is Status.TIMEOUT, r.message
        assert "replaced" in r.message
        assert elapsed >= config.timeout_s, elapsed  # the timeout ran out first: a causal bound
        assert elapsed < config.setup_timeout_s, elapsed  # timeout + grace, not the setup timeout
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        r = sb.evaluate(REF, TEMPLATE)
        assert r.status is Status.OK and r.score == 5.0
        assert sb.stats()["worker_restarts"] == 1


def test_unimportable_task_is_a_sandbox_error_and_not_cached():
    def make_local_task():
        class LocalTask(FixtureTask):  # defined in a function: workers cannot import it
            name = "local_fixture"

        return LocalTask()

    task = make_local_task()
    with Sandbox(SandboxConfig(workers=1, timeout_s=5)) as sb:
        r = sb.evaluate(task, TEMPLATE)
        assert r.status is Status.SANDBOX_ERROR
        assert "importable" in r.message
        assert not sb.evaluate(task, TEMPLATE).cached  # infrastructure failures are not cached
        assert sb.evaluate(REF, TEMPLATE).ok  # the worker is fine


def test_unregistered_setting_is_rejected(pool):
    custom = Setting("custom", {"xs": (1.0,)}, "not registered")
    with pytest.raises(ValueError, match="registered"):
        pool.evaluate(REF, TEMPLATE, custom)
    with pytest.raises(KeyError):
        pool.evaluate(REF, TEMPLATE, "no_such_setting")


# ---- cache -----------------------------------------------------------------------------------


def test_cache_ignores_comments_and_formatting_but_not_the_setting():
    with Sandbox(SandboxConfig(workers=1, timeout_s=5)) as sb:
        a = sb.evaluate(REF, TEMPLATE)
        reformatted = (
            "# a comment\nimport numpy   as np\ndef f( x:float )->float:\n"
            "    return float(np.sum([x,x]))   # twice\n"
        )
        b = sb.evaluate(REF, reformatted)
        assert not a.cached and b.cached
        assert b.code_hash == a.code_hash and b.score == a.score
        c = sb.evaluate(REF, TEMPLATE, "other")
        assert not c.cached and c.metric == 30.0
        stats = sb.stats()
        assert stats["cache_hits"] == 1 and stats["evaluations"] == 2


def test_duplicates_within_a_batch_are_evaluated_once():
    with Sandbox(SandboxConfig(workers=2, timeout_s=5)) as sb:
        same = [TEMPLATE, TEMPLATE + "\n# trailing comment\n", '"""doc"""\n' + TEMPLATE]
        results = sb.evaluate_many([(REF, c, None) for c in same])
        assert [r.cached for r in results] == [False, True, True]
        assert {r.score for r in results} == {5.0}
        assert sb.stats()["evaluations"] == 1


def test_cache_key_includes_limits():
    cache = ResultCache()
    with Sandbox(SandboxConfig(workers=1, timeout_s=5), cache=cache) as sb:
        sb.evaluate(REF, TEMPLATE)
    with Sandbox(SandboxConfig(workers=1, timeout_s=2), cache=cache) as sb:
        assert not sb.evaluate(REF, TEMPLATE).cached  # a different time limit: re-evaluated
    assert len(cache) == 2


def test_sqlite_cache_survives_restarts(tmp_path):
    path = tmp_path / "cache.sqlite"
    slow_fail = "def f(x):\n    return float('nan')\n"
    with Sandbox(SandboxConfig(workers=1, timeout_s=5, cache_path=str(path))) as sb:
        first = sb.evaluate_many([(REF, TEMPLATE, None), (REF, slow_fail, None)])
    with Sandbox(SandboxConfig(workers=1, timeout_s=5), cache=path) as sb:
        again = sb.evaluate_many([(REF, TEMPLATE, None), (REF, slow_fail, None)])
        assert [r.cached for r in again] == [True, True]
        assert [r.status for r in again] == [Status.OK, Status.INVALID_OUTPUT]
        assert again[0].score == first[0].score == 5.0
        assert sb.stats()["worker_starts"] == 0  # no process was needed


def test_exported_rows_import_once_and_keep_existing_entries(tmp_path):
    source = ResultCache()
    with Sandbox(SandboxConfig(workers=1, timeout_s=5), cache=source) as sb:
        ok, bad = sb.evaluate_many([(REF, TEMPLATE, None), (REF, "def f(x):\n    return float('nan')\n", None)])
    assert source.export_rows(tmp_path / "rows.jsonl.gz") == 2
    key_of = {r.status: k for k, r in source._memory.items()}
    ok_key, bad_key = key_of[Status.OK], key_of[Status.INVALID_OUTPUT]
    for target in (ResultCache(), ResultCache(tmp_path / "cache.sqlite")):
        stale = source.get(bad_key)
        target.put(ok_key, stale)  # an entry already there is not replaced by the import
        assert target.import_rows(tmp_path / "rows.jsonl.gz") == 1
        assert target.import_rows(tmp_path / "rows.jsonl.gz") == 0
        assert target.get(ok_key).status is stale.status
        assert target.get(bad_key).status is Status.INVALID_OUTPUT and target.get(bad_key).cached
        assert len(target) == 2
    reopened = ResultCache(tmp_path / "cache.sqlite")
    assert reopened.get(bad_key).to_dict() == source.get(bad_key).to_dict()
    assert ok.status is Status.OK and bad.status is Status.INVALID_OUTPUT


# ---- determinism -----------------------------------------------------------------------------


RANDOM = """
import random
import numpy as np

def f(x):
    return random.random() + float(np.random.rand()) + (hash("abc") % 1000) / 1000
"""


def test_random_candidates_are_deterministic(pool):
    # cache off, distinct programs, spread over both workers: all draw the same numbers
    results = pool.evaluate_many([(REF, variant(RANDOM, i), None) for i in range(6)])
    metrics = {r.metric for r in results}
    assert all(r.ok for r in results) and len(metrics) == 1
    assert pool.evaluate(REF, RANDOM).metric in metrics


# ---- API, stats, lifecycle -------------------------------------------------------------------


def test_stats_and_info(pool):
    stats = pool.stats()
    for key in ("requests", "evaluations", "cache_hits", "worker_restarts", "timeouts", "by_status", "workers"):
        assert key in stats
    info = pool.info()
    assert info["workers"] == 2 and "netns" in info and "privileges" in info


def test_closed_sandbox_refuses_work_and_leaves_no_processes():
    sb = Sandbox(SandboxConfig(workers=2, timeout_s=5), cache=False)
    sb.evaluate_many([(REF, variant(TRIVIAL, i), None) for i in range(4)])
    pids = [w["pid"] for w in sb.stats()["workers"] if w["pid"]]
    assert pids
    sb.close()
    sb.close()  # idempotent
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(RuntimeError):
        sb.evaluate(REF, TEMPLATE)


def test_default_sandbox_is_shared(monkeypatch):
    monkeypatch.setenv("AAD_KIT_SANDBOX_WORKERS", "1")
    sb = default_sandbox()
    assert default_sandbox() is sb
    r = sb.evaluate(REF, TEMPLATE)
    assert r.ok and r.score == 5.0


def test_task_registry_resolves_the_fixture():
    assert isinstance(get_task(REF), FixtureTask)


def test_the_warm_worker_forks_a_fresh_child_per_candidate(pool):
    """The fork path, as behaviour (its cost per candidate is benchmarks/eval_executors.py's and
    benchmarks/lib/sandbox_overhead.py's): 30 distinct trivial candidates are each evaluated,
    none from a cache, by the same warm worker processes (no restart), one evaluation each."""
    pool.evaluate(REF, variant(TRIVIAL, -1))
    before = pool.stats()
    pids = {w["pid"] for w in before["workers"]}
    results = [pool.evaluate(REF, variant(TRIVIAL, 1000 + i)) for i in range(30)]
    assert all(r.ok and not r.cached for r in results)
    assert len({r.code_hash for r in results}) == 30
    after = pool.stats()
    assert {w["pid"] for w in after["workers"]} == pids
    assert after["worker_restarts"] == before["worker_restarts"]
    assert (sum(w["evaluations"] for w in after["workers"])
            - sum(w["evaluations"] for w in before["workers"])) == 30


def test_sandbox_evaluate_is_the_entry_point_and_tasks_stay_pure(pool):
    """aad_kit.sandbox.evaluate scores untrusted code for a task (default setting, a named
    one, a Task instance); Task.evaluate only delegates to a sandbox it is given."""
    from aad_kit.sandbox import evaluate

    r = evaluate(REF, TEMPLATE, sandbox=pool)
    assert r.ok and r.setting == "small" and r.score == 5.0
    assert evaluate(FixtureTask(), TEMPLATE, "other", sandbox=pool).metric == 30.0
    assert FixtureTask().evaluate(TEMPLATE, "other", sandbox=pool).metric == 30.0
    with pytest.raises(TypeError, match="aad_kit.sandbox.evaluate"):
        FixtureTask().evaluate(TEMPLATE)


def test_timeout_scale_multiplies_the_settings_limit():
    """A profile's timeout_scale reaches the sandbox: the fixture setting's 5 s limit at
    scale 0.1 kills a busy loop after 0.5 s and says so."""
    spin = "def f(x):\n    while True:\n        x = x + 1\n"
    with Sandbox(SandboxConfig(workers=1, timeout_scale=0.1, grace_s=2.0), cache=False) as sb:
        r = sb.evaluate(FixtureTask(), spin, "small")
        assert r.status == Status.TIMEOUT and "0.5 s" in r.message
        assert sb.info()["timeout_scale"] == 0.1
    with pytest.raises(ValueError, match="timeout_scale"):
        SandboxConfig(timeout_scale=0)
