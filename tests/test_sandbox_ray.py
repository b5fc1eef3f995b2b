"""``executor="ray"`` on a local Ray instance: the same statuses and scores as the local pool.

Ray is the ``ray`` extra (in ``all``, so ``make setup`` and CI install it); without it these
tests skip. Policy off as well as on: with the static check and the runtime guard gone, the
statuses come from the worker process itself, which is what runs on the Ray node.
"""

from __future__ import annotations

import pytest

from aad_kit.result import Status
from aad_kit.sandbox import Sandbox, SandboxConfig
from aad_kit.sandbox.hostile import hostile_candidates
from aad_kit.tasks import TASK_NAMES, get_task

ray = pytest.importorskip("ray")

TASK, SETTING = "tsp_construct", "n20"
# Generous: the memory bomb must end as memory_limit, not win by timing out on a loaded machine.
TIMEOUT_S = 4.0


def _config(executor: str, enforce_policy: bool) -> SandboxConfig:
    return SandboxConfig(workers=2, timeout_s=TIMEOUT_S, memory_mb=512, use_cache=False,
                         enforce_policy=enforce_policy, executor=executor)


def _jobs() -> list[tuple[str, str, str | None]]:
    hostile = [(TASK, h.render(TASK), SETTING) for h in hostile_candidates()]
    real = [(name, get_task(name).template_program, None) for name in TASK_NAMES]
    return hostile + real


RAY_CPUS = 8  # logical CPUs of the test's Ray: room for a few sandboxes of 2 actors each


@pytest.fixture(scope="module")
def local_ray():
    """A Ray instance of this machine for the module; the sandboxes join it (and leave it up)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024 * 1024, logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module", params=[True, False], ids=["policy-on", "policy-off"])
def ray_sandbox(request, local_ray):
    with Sandbox(_config("ray", request.param), cache=False) as sb:
        yield sb


@pytest.fixture(scope="module")
def guarded_ray(local_ray):
    with Sandbox(_config("ray", True), cache=False) as sb:
        yield sb


def test_hostile_catalogue_and_real_programs_match_the_local_pool(ray_sandbox):
    enforce_policy = ray_sandbox.config.enforce_policy
    jobs = _jobs()
    with Sandbox(_config("local", enforce_policy), cache=False) as local:
        expected = local.evaluate_many(jobs)
    got = ray_sandbox.evaluate_many(jobs)
    names = [h.name for h in hostile_candidates()] + [f"template:{t}" for t in TASK_NAMES]
    mismatches = [(n, a.status.value, b.status.value, a.score, b.score)
                  for n, a, b in zip(names, expected, got, strict=True)
                  if (a.status, a.score) != (b.status, b.score)]
    assert mismatches == []
    if enforce_policy:  # and both are the catalogue's own expectations
        assert [r.status for r in got[: len(hostile_candidates())]] == [
            h.expected for h in hostile_candidates()]
    assert all(r.status is Status.OK for r in got[len(hostile_candidates()):])
    stats = ray_sandbox.stats()
    assert stats["executor"] == "ray" and len(stats["workers"]) == 2
    assert sum(w["evaluations"] for w in stats["workers"]) >= len(jobs) - stats["static_rejections"]


def test_isolation_on_a_ray_node_is_the_local_workers(guarded_ray):
    with Sandbox(_config("local", True), cache=False) as local:
        here = local.info()
    there = guarded_ray.info()
    assert there["executor"] == "ray" and here["executor"] == "local"
    for key in ("netns", "network_isolated", "python", "numpy"):
        assert there[key] == here[key], key
    # the same capabilities (the uid itself is per worker)
    assert there["privileges"].split(",")[1:] == here["privileges"].split(",")[1:]


def test_a_lost_actor_is_replaced_and_the_job_retried(guarded_ray):
    sb = guarded_ray
    remote = sb._remote
    before = remote.replaced
    for actor in list(remote._actors):  # whichever actor the next job gets is gone
        ray.kill(actor, no_restart=True)
    result = sb.evaluate(TASK, get_task(TASK).template_program, SETTING)
    assert result.status is Status.OK and result.score is not None
    assert remote.replaced == before + 1


def test_more_actors_than_the_cluster_has_cpus_is_a_clear_error(guarded_ray):
    from aad_kit.sandbox.ray_executor import RayWorkers

    free = int(ray.available_resources().get("CPU", 0))
    with pytest.raises(RuntimeError, match=f"did not place the sandbox's {free + 1} worker actors"):
        RayWorkers(free + 1, ready_timeout_s=3)
    assert guarded_ray.evaluate(TASK, get_task(TASK).template_program, SETTING).status is Status.OK


def test_an_unknown_executor_is_refused():
    with pytest.raises(ValueError, match="executor must be one of local, ray"):
        SandboxConfig(executor="dask")


_TWO_SANDBOXES = """
import json, ray
from aad_kit.sandbox import Sandbox, SandboxConfig, ray_executor
from aad_kit.tasks import get_task
t = get_task("tsp_construct")
cfg = SandboxConfig(workers=2, timeout_s=10.0, use_cache=False, executor="ray")
seen = []
for _ in range(2):
    with Sandbox(cfg, cache=False) as sb:
        (r,) = sb.evaluate_many([("tsp_construct", t.template_program, "n20")])
        seen.append({"ok": r.ok, "gcs": ray.get_runtime_context().gcs_address})
    seen[-1]["up_after_close"] = ray.is_initialized()
print(json.dumps({"seen": seen, "shut": ray_executor.shutdown_local_ray(), "up": ray.is_initialized()}))
"""


def test_a_local_ray_serves_later_sandboxes_and_ends_on_request(tmp_path):
    """Without an address the first sandbox starts a Ray of this machine; the next sandbox of
    the process reuses it (notebook 03 opens two in a row) and ``shutdown_local_ray`` ends it.
    In a fresh interpreter, since the module's fixture Ray would hide the start."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", _TWO_SANDBOXES], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env=env, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    first, second = result["seen"]
    assert first["ok"] and second["ok"]
    assert first["up_after_close"] and first["gcs"] == second["gcs"]  # one Ray for both
    assert result["shut"] is True and result["up"] is False
