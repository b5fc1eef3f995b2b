"""The sandbox scores real tasks exactly as the trusted in-process path does."""

from __future__ import annotations

import pytest

from aad_kit.profiles import CHEAPEST_SETTING
from aad_kit.result import Status
from aad_kit.sandbox import Sandbox, SandboxConfig
from aad_kit.sandbox.hostile import hostile_candidates
from aad_kit.tasks import TASK_NAMES, get_task


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(workers=2, timeout_s=20, use_cache=False)) as sb:
        yield sb


@pytest.mark.parametrize("task_name", TASK_NAMES)
def test_every_shipped_heuristic_scores_as_in_process(sandbox, task_name):
    task = get_task(task_name)
    setting = CHEAPEST_SETTING[task_name]
    heuristics = list(task.heuristics().values())
    results = sandbox.evaluate_many([(task, h.code, setting) for h in heuristics])
    for h, r in zip(heuristics, results, strict=True):
        assert r.status is Status.OK, (h.name, r.message)
        expected = task.run(h.function(task.function_name), setting)
        assert r.metric == pytest.approx(expected.metric, rel=1e-12), h.name
        assert r.score == pytest.approx(expected.score, rel=1e-12), h.name


def test_numpy_internal_lazy_imports_work_under_the_guard(sandbox):
    """ndarray.min(axis=...) imports numpy._core._methods from C through the frame's builtins."""
    code = (
        "import numpy as np\n\n"
        "def select_next_node(current_node, destination_node, unvisited_nodes, distance_matrix):\n"
        "    sub = distance_matrix[np.ix_(unvisited_nodes, unvisited_nodes)]\n"
        "    spread = sub.min(axis=1) + sub.max(axis=0) + sub.mean(axis=1) + sub.std(axis=0)\n"
        "    return int(unvisited_nodes[np.argmin(distance_matrix[current_node, unvisited_nodes] + 0 * spread)])\n"
    )
    r = sandbox.evaluate("tsp_construct", code, "n20")
    nn = get_task("tsp_construct").heuristics()["nearest_neighbour"]
    assert r.status is Status.OK, r.message
    assert r.metric == pytest.approx(sandbox.evaluate("tsp_construct", nn.code, "n20").metric)


def test_private_numpy_modules_stay_forbidden_in_candidate_source(sandbox):
    for code in (
        "import numpy._core._methods as m\n\ndef select_next_node(a, b, c, d):\n    return int(c[0])\n",
        "from numpy._core import _methods\n\ndef select_next_node(a, b, c, d):\n    return int(c[0])\n",
    ):
        r = sandbox.evaluate("tsp_construct", code, "n20")
        assert r.status in (Status.FORBIDDEN_IMPORT, Status.FORBIDDEN_CALL), (code, r.status)


@pytest.mark.hostile
@pytest.mark.parametrize("task_name", TASK_NAMES)
def test_hostile_catalogue_ends_as_specified_then_a_good_candidate_still_scores(task_name):
    task = get_task(task_name)
    setting = CHEAPEST_SETTING[task_name]
    good = task.heuristics()[next(iter(task.heuristics()))]
    reference = task.run(good.function(task.function_name), setting).metric
    with Sandbox(SandboxConfig(workers=2, timeout_s=2, use_cache=False)) as sb:
        catalogue = hostile_candidates()
        jobs = [(task, h.render(task), setting) for h in catalogue] + [(task, good.code, setting)]
        results = sb.evaluate_many(jobs)
    for h, r in zip(catalogue, results[:-1], strict=True):
        assert r.status is h.expected, (h.name, r.status, r.message)
        assert (r.score is None) == (h.expected is not Status.OK), h.name
    assert results[-1].status is Status.OK and results[-1].metric == pytest.approx(reference)


def test_c_level_import_exception_is_narrow():
    """The PyImport_Import pass-through admits only loaded submodules of allowed packages."""
    import sys

    import numpy  # noqa: F401  - as in the worker, which imports numpy before any candidate

    from aad_kit.sandbox.config import DEFAULT_ALLOWED_IMPORTS
    from aad_kit.sandbox.guard import ForbiddenImport, Guard

    guard = Guard(DEFAULT_ALLOWED_IMPORTS)
    assert guard.import_("numpy._core._methods", None, None, [], 0) is sys.modules["numpy"]
    for name in ("os", "subprocess", "ctypes"):
        with pytest.raises(ForbiddenImport):
            guard.import_(name, None, None, [], 0)
    sys.modules.pop("numpy.aad_kit_not_loaded", None)
    with pytest.raises((ForbiddenImport, ModuleNotFoundError, ImportError)):
        guard.import_("numpy.aad_kit_not_loaded", None, None, [], 0)
    with pytest.raises(ForbiddenImport):  # the bytecode form still goes through the policy
        guard.import_("numpy._core._methods", None, None, None, 0)
