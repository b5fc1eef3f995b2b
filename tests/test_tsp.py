"""Tests for the TSP constructive-heuristic task (``tsp_construct``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aad_kit.tasks import InvalidOutput, Measurement, get_task
from aad_kit.tasks.base import Setting
from aad_kit.tasks.tsp import (
    TSPConstructTask,
    TSPInstance,
    construct_tour,
    generate_instances,
    tour_length,
)

# Nearest neighbour's mean tour length on each setting, computed once (guards determinism of
# the instance generators and of the evaluator).
NN_MEAN = {
    "n20": 4.3421971759563505,
    "n50": 7.070404323325304,
    "n100": 9.712915911531722,
    "n200": 13.420151624940798,
    "clustered_n50": 3.6994472388649458,
    "clustered_n100": 5.796487067913205,
    "llm4ad_n50": 6.8239686184057184,  # LLM4AD publishes ~6.82 for these 16 instances
}


def nearest(current_node, destination_node, unvisited_nodes, distance_matrix):
    return unvisited_nodes[np.argmin(distance_matrix[current_node, unvisited_nodes])]


@pytest.fixture(scope="module")
def task() -> TSPConstructTask:
    t = get_task("tsp_construct")
    assert isinstance(t, TSPConstructTask)
    return t


def _tiny(n: int = 6, seed: int = 0) -> tuple[TSPInstance, ...]:
    return generate_instances({"generator": "uniform", "n": n, "n_instances": 2, "seed": seed})


TINY = Setting("tiny", {}, "two tiny instances")


# ---- contract ---------------------------------------------------------------------------
def test_task_contract(task):
    assert task.name == "tsp_construct"
    assert task.function_name == "select_next_node"
    assert task.signature.startswith("def select_next_node(current_node: int, destination_node")
    assert task.signature in task.template_program
    assert "import numpy as np" in task.template_program
    assert task.metric_name == "mean tour length"
    assert task.metric_lower_is_better is True
    assert task.default_setting == "n50"
    assert set(task.settings) == set(NN_MEAN)
    assert "ascending" in task.description and "read-only" in task.description
    for s in task.settings.values():
        assert s.timeout_s >= 10 and not s.slow


def test_unknown_setting_is_a_clear_key_error(task):
    with pytest.raises(KeyError, match="unknown setting 'n51'.*n20, n50"):
        task.run(nearest, "n51")


def test_template_program_is_nearest_neighbour(task):
    namespace: dict = {}
    exec(task.template_program, namespace)
    m = task.run(namespace["select_next_node"], "n20")
    assert m.metric == pytest.approx(NN_MEAN["n20"], rel=1e-12)


# ---- published number and pinned values -------------------------------------------------
def test_nearest_neighbour_reproduces_llm4ad_published_number(task):
    m = task.run(nearest, "llm4ad_n50")
    assert m.metric == pytest.approx(6.8239686184057184, rel=1e-9)
    assert round(m.metric, 2) == 6.82
    assert m.score == -m.metric
    assert m.details["n"] == 50 and m.details["n_instances"] == 16


def _llm4ad_reference_evaluation(instances, fn) -> float:
    """LLM4AD's evaluator, restated: unvisited sorted by distance, tour cost from coords."""
    lengths = []
    for inst in instances:
        coords, dist = np.asarray(inst.coords), np.asarray(inst.distances)
        n = len(coords)
        order = np.argsort(dist, axis=1)
        route = [0]
        for _ in range(1, n - 1):
            near = order[route[-1]][1:]
            unvisited = near[~np.isin(near, route)]
            route.append(int(fn(route[-1], 0, unvisited, dist)))
        route.append(int(np.setdiff1d(np.arange(n), route)[0]))
        lengths.append(
            sum(np.linalg.norm(coords[route[j]] - coords[route[(j + 1) % n]]) for j in range(n))
        )
    return float(np.mean(lengths))


def test_llm4ad_instances_and_evaluator_match(task):
    # LLM4AD's generator uses the global state: np.random.seed(2024); 16 x np.random.rand(50, 2).
    saved = np.random.get_state()
    try:
        np.random.seed(2024)
        theirs = [np.random.rand(50, 2) for _ in range(16)]
    finally:
        np.random.set_state(saved)
    ours = task.instances("llm4ad_n50")
    assert len(ours) == 16
    for a, b in zip(ours, theirs, strict=True):
        assert np.array_equal(a.coords, b)
    # Their order (by distance) vs ours (by index) does not change what nearest neighbour does,
    # and their first-element rule is nearest neighbour under their order.
    ref = _llm4ad_reference_evaluation(ours, lambda c, d, u, dm: u[0])
    assert ref == pytest.approx(task.run(nearest, "llm4ad_n50").metric, rel=1e-12)


@pytest.mark.parametrize("setting", sorted(NN_MEAN))
def test_pinned_nearest_neighbour_means(task, setting):
    m = task.run(nearest, setting)
    assert m.metric == pytest.approx(NN_MEAN[setting], rel=1e-9)
    assert m.details["mean_length"] == m.metric
    assert len(m.details["lengths"]) == m.details["n_instances"]
    assert m.details["n"] == task.settings[setting].params["n"]


def test_nearest_neighbour_grows_like_sqrt_n(task):
    # Beardwood-Halton-Hammersley: optimal tour ~ 0.7124 sqrt(n A) (A = 1), nearest
    # neighbour ~25% longer; boundary effects at small n add a few percent. Loose bounds.
    for n in (20, 50, 100, 200):
        ratio = task.run(nearest, f"n{n}").metric / (0.7124 * math.sqrt(n) * 1.25)
        assert 0.95 < ratio < 1.3, (n, ratio)
    # Clustered point clouds give much shorter tours than uniform ones of the same size.
    assert task.run(nearest, "clustered_n50").metric < 0.7 * NN_MEAN["n50"]


# ---- instances -----------------------------------------------------------------------------
def test_instances_shape_range_and_read_only(task):
    for name, s in task.settings.items():
        instances = task.instances(name)
        assert len(instances) == s.params["n_instances"]
        for inst in instances[:3]:
            n = s.params["n"]
            assert inst.coords.shape == (n, 2) and inst.distances.shape == (n, n)
            assert inst.coords.min() >= 0.0 and inst.coords.max() <= 1.0
            assert np.allclose(inst.distances, inst.distances.T)
            assert not inst.coords.flags.writeable and not inst.distances.flags.writeable


def test_settings_use_different_instances(task):
    firsts = [task.instances(name)[0].coords[:3] for name in ("n20", "n50", "n100", "n200")]
    assert not any(np.allclose(a, b) for i, a in enumerate(firsts) for b in firsts[i + 1 :])


def test_determinism(task):
    s = task.setting("clustered_n50")
    fresh_a = generate_instances(s.params)
    fresh_b = generate_instances(s.params)
    for a, b, c in zip(fresh_a, fresh_b, task.instances(s), strict=True):
        assert np.array_equal(a.coords, b.coords) and np.array_equal(a.coords, c.coords)
    assert task.run(nearest, "n50").details == task.run(nearest, "n50").details


# ---- the construction protocol -------------------------------------------------------------
def test_calls_arguments_and_tour(task):
    inst = _tiny(7)[0]
    calls = []

    def spy(current_node, destination_node, unvisited_nodes, distance_matrix):
        calls.append((current_node, destination_node, unvisited_nodes.copy()))
        assert type(current_node) is int and destination_node == 0
        assert unvisited_nodes.dtype.kind == "i"
        assert not unvisited_nodes.flags.writeable and not distance_matrix.flags.writeable
        assert distance_matrix.shape == (7, 7)
        return unvisited_nodes[-1]  # the highest index still unvisited

    tour = construct_tour(spy, inst)
    assert tour == [0, 6, 5, 4, 3, 2, 1]
    assert len(calls) == 7 - 2
    assert calls[0][0] == 0 and np.array_equal(calls[0][2], np.arange(1, 7))
    for (cur, _, unv), prev in zip(calls[1:], tour[1:], strict=False):
        assert cur == prev and np.all(np.diff(unv) > 0) and prev not in unv
    assert tour_length(tour, inst.distances) == pytest.approx(
        sum(inst.distances[tour[i], tour[(i + 1) % 7]] for i in range(7))
    )


def test_tour_length_on_unit_square():
    coords = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    from aad_kit.tasks.tsp import distance_matrix

    d = distance_matrix(coords)
    assert tour_length([0, 2, 1, 3], d) == pytest.approx(4.0)
    assert tour_length([0, 1, 2, 3], d) == pytest.approx(2 + 2 * math.sqrt(2))


def test_two_node_instance_needs_no_call(task):
    inst = _tiny(2)[0]

    def never(*args):
        raise AssertionError("not called")

    assert construct_tour(never, inst) == [0, 1]


# ---- invalid output ------------------------------------------------------------------------
def _returning(value):
    def fn(current_node, destination_node, unvisited_nodes, distance_matrix):
        return value(unvisited_nodes) if callable(value) else value

    return fn


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (0, "returned 0, the start/destination node"),
        (6, "returned 6, out of range for n=6"),
        (10**30, "out of range"),
        (-1, "returned -1, out of range"),
        (np.int64(-2), "out of range"),
        (float("nan"), "integer node index, got float nan"),
        (3.0, "integer node index, got float 3.0"),
        (np.float64(2.0), "got float64"),
        ("3", "integer node index, got str '3'"),
        (None, "integer node index, got NoneType None"),
        (True, "bool"),
        (np.bool_(True), "bool"),
        (lambda u: u[:1], "got ndarray"),
        (lambda u: [int(u[0])], "got list"),
        (lambda u: u.astype(float)[0], "got float64"),
    ],
)
def test_invalid_return_values(task, value, pattern):
    with pytest.raises(InvalidOutput, match=pattern):
        task.measure(_returning(value), _tiny(6), TINY)


def test_revisiting_a_node_is_invalid(task):
    seen = []

    def revisit(current_node, destination_node, unvisited_nodes, distance_matrix):
        seen.append(current_node)
        return seen[1] if len(seen) > 2 else unvisited_nodes[0]

    with pytest.raises(InvalidOutput, match="returned 1, an already visited node"):
        task.measure(revisit, _tiny(6), TINY)


@pytest.mark.parametrize(
    "convert",
    [int, np.int64, np.int32, np.uint16, lambda x: np.array(x), lambda x: np.intp(x)],
)
def test_integer_types_are_accepted(task, convert):
    fn = _returning(lambda u: convert(int(u[0])))
    m = task.measure(fn, _tiny(6), TINY)
    ref = task.measure(_returning(lambda u: u[0]), _tiny(6), TINY)
    assert isinstance(m, Measurement) and m.metric == ref.metric


# ---- read-only inputs ----------------------------------------------------------------------
def test_writing_into_the_distance_matrix_raises(task):
    def vandal(current_node, destination_node, unvisited_nodes, distance_matrix):
        distance_matrix[:] = 0.0
        return unvisited_nodes[0]

    before = task.instances("n20")[0].distances.copy()
    with pytest.raises(ValueError, match="read-only"):
        task.run(vandal, "n20")
    assert np.array_equal(task.instances("n20")[0].distances, before)


def test_writing_into_unvisited_nodes_raises(task):
    def sorter(current_node, destination_node, unvisited_nodes, distance_matrix):
        unvisited_nodes.sort()
        return unvisited_nodes[0]

    with pytest.raises(ValueError, match="read-only"):
        task.run(sorter, "n20")


def test_candidate_cannot_corrupt_the_scoring(task):
    """Even re-enabling writes on its own copy only affects what the candidate sees."""

    def saboteur(current_node, destination_node, unvisited_nodes, distance_matrix):
        distance_matrix.setflags(write=True)  # its private copy owns its data
        distance_matrix[:] = 0.0
        return nearest(current_node, destination_node, unvisited_nodes, distance_matrix)

    m = task.run(saboteur, "n20")
    assert m.metric > 3.0  # scored on the true distances
    assert task.run(nearest, "n20").metric == pytest.approx(NN_MEAN["n20"], rel=1e-12)


# ---- shipped heuristics --------------------------------------------------------------------
def test_shipped_heuristics_run_on_n20(task):
    heuristics = task.heuristics()
    assert {"nearest_neighbour", "outlier_first", "lookahead_nearest_neighbour"} <= set(heuristics)
    results = {}
    for name, h in heuristics.items():
        assert "import numpy as np" in h.code and h.source
        results[name] = task.run(h.function(task.function_name), "n20").metric
        assert math.isfinite(results[name]) and results[name] > 0
    assert results["nearest_neighbour"] == pytest.approx(NN_MEAN["n20"], rel=1e-12)
    assert results["outlier_first"] < results["nearest_neighbour"]


def test_shipped_heuristics_on_every_setting(task):
    for h in task.heuristics().values():
        fn = h.function(task.function_name)
        for name in task.settings:
            assert math.isfinite(task.run(fn, name).metric)
