"""Tests for the CVRP constructive-heuristic task (``cvrp_construct``).

Neither anchor (algodisco's cvrp_construct, which the paper's code calls, nor LLM4AD's)
publishes a score for its instances, so the pinned numbers below are our own (they guard
determinism of generators and evaluator); agreement with the anchors is checked by
regenerating their instances with their recipes and restating their route construction.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from aad_kit.tasks import TASK_NAMES, InvalidOutput, Measurement, get_task
from aad_kit.tasks.base import Setting
from aad_kit.tasks.cvrp import (
    CVRPConstructTask,
    CVRPInstance,
    _frozen,
    construct_routes,
    generate_instances,
    route_length,
    split_routes,
)

# Nearest feasible neighbour's mean total length on each setting, computed once.
NN_MEAN = {
    "n50_c40": 14.133468502362748,
    "llm4ad_n50_c40": 13.610775714030822,
    "n20_c30": 8.224046601393814,
    "n100_c50": 21.253217325064536,
    "n200_c50": 37.07850599487048,
    "n50_c20": 21.58362542537585,
    "n50_c80": 10.197901858383673,
    "clustered_n50_c40": 10.190555618857928,
    "clustered_n100_c50": 16.356549859570624,
}

# Every shipped heuristic on the default (the paper's) setting.
SHIPPED_DEFAULT = {
    "nearest_neighbour": 14.133468502362748,
    "demand_over_distance": 15.260272257160617,
    "sequential_savings": 13.2638910978621,
    "sweep_nearest": 13.925590856132718,
}


def nearest(current_node, depot, unvisited_nodes, rest_capacity, demands, distance_matrix):
    return unvisited_nodes[np.argmin(distance_matrix[current_node, unvisited_nodes])]


@pytest.fixture(scope="module")
def task() -> CVRPConstructTask:
    t = get_task("cvrp_construct")
    assert isinstance(t, CVRPConstructTask)
    return t


def _tiny(
    n: int = 6, capacity: int = 12, seed: int = 0, count: int = 2
) -> tuple[CVRPInstance, ...]:
    return generate_instances(
        {"generator": "uniform", "n": n, "capacity": capacity, "n_instances": count, "seed": seed}
    )


TINY = Setting("tiny", {}, "tiny instances")


def _hand_made() -> CVRPInstance:
    """Depot at the origin, customers 1..4 on a line; demands 5, 5, 9, 1; capacity 10."""
    coords = np.array([[0.0, 0.0], [0.1, 0.0], [0.2, 0.0], [0.3, 0.0], [0.4, 0.0]])
    return _frozen(coords, np.array([0, 5, 5, 9, 1]), 10)


# ---- contract ---------------------------------------------------------------------------
def test_task_contract(task):
    assert task.name == "cvrp_construct" and "cvrp_construct" in TASK_NAMES
    assert task.function_name == "select_next_node"
    assert task.signature == (
        "def select_next_node(current_node: int, depot: int, unvisited_nodes: np.ndarray, "
        "rest_capacity: float, demands: np.ndarray, distance_matrix: np.ndarray) -> int:"
    )
    assert task.signature in task.template_program
    assert "import numpy as np" in task.template_program
    assert task.metric_name == "mean total route length"
    assert task.metric_lower_is_better is True
    assert task.default_setting == "n50_c40"
    assert set(task.settings) == set(NN_MEAN)
    for word in ("ascending", "read-only", "fits", "depot", "automatically"):
        assert word in task.description
    for s in task.settings.values():
        assert s.timeout_s >= 10 and not s.slow


def test_setting_names_are_unambiguous_across_tasks(task):
    # Bare setting names resolve to their task (aad_kit.evaluation.generalisation.parse_settings).
    for other in TASK_NAMES:
        if other != task.name:
            assert not set(task.settings) & set(get_task(other).settings), other


def test_profiles_know_the_task(task):
    from aad_kit.profiles import CHEAPEST_SETTING, settings_for, tasks_for

    assert CHEAPEST_SETTING["cvrp_construct"] in task.settings
    assert settings_for("smoke", "cvrp_construct") == ["n50_c40"]
    assert settings_for("quick", "cvrp_construct") == list(task.settings)
    assert "cvrp_construct" in tasks_for("quick")


def test_unknown_setting_is_a_clear_key_error(task):
    with pytest.raises(KeyError, match="unknown setting 'n50'.*n50_c40"):
        task.run(nearest, "n50")


def test_template_program_is_nearest_neighbour(task):
    namespace: dict = {}
    exec(task.template_program, namespace)
    m = task.run(namespace["select_next_node"], "n50_c40")
    assert m.metric == pytest.approx(NN_MEAN["n50_c40"], rel=1e-12)


# ---- the anchors' instances ------------------------------------------------------------------
def test_default_setting_is_the_papers_instances(task):
    """algodisco's CVRPInstanceGenerator(16, 50, 40, seed=2024), restated."""
    rng = np.random.default_rng(2024)
    theirs = []
    for _ in range(16):
        coords = rng.random((51, 2))
        demands = np.zeros(51, dtype=int)
        demands[1:] = rng.integers(1, 10, size=50)
        theirs.append((coords, demands))
    ours = task.instances("n50_c40")
    assert len(ours) == 16
    for inst, (coords, demands) in zip(ours, theirs, strict=True):
        assert np.array_equal(inst.coords, coords) and np.array_equal(inst.demands, demands)
        assert inst.capacity == 40.0 and inst.n_customers == 50
        assert np.array_equal(inst.distances, np.linalg.norm(coords[:, None] - coords, axis=2))


def test_llm4ad_setting_is_llm4ads_instances(task):
    """LLM4AD's legacy GetData(16, 51, 40, 2024): the global NumPy state, depot included."""
    saved = np.random.get_state()
    try:
        np.random.seed(2024)
        theirs = [(np.random.rand(51, 2), np.random.randint(1, 10, size=51)) for _ in range(16)]
    finally:
        np.random.set_state(saved)
    ours = task.instances("llm4ad_n50_c40")
    for inst, (coords, demands) in zip(ours, theirs, strict=True):
        assert np.array_equal(inst.coords, coords)
        assert inst.demands[0] == 0 and np.array_equal(inst.demands[1:], demands[1:])
    assert not np.array_equal(ours[0].coords, task.instances("n50_c40")[0].coords)


# ---- the anchors' route construction, restated ------------------------------------------------
def _algodisco_reference(inst: CVRPInstance, fn) -> list[int]:
    """algodisco's _construct_route: sets and a sorted list of the customers that fit."""
    demands, dist, cap = np.asarray(inst.demands), np.asarray(inst.distances), int(inst.capacity)
    route, current, load = [0], 0, 0
    todo = set(range(1, inst.n_nodes))
    while todo:
        feasible = np.array([c for c in sorted(todo) if load + int(demands[c]) <= cap], dtype=int)
        if len(feasible) == 0:
            route.append(0)
            current, load = 0, 0
            continue
        nxt = int(fn(current, 0, feasible.copy(), cap - load, demands.copy(), dist))
        if nxt == 0:
            assert current != 0
            route.append(0)
            current, load = 0, 0
            continue
        assert nxt in feasible
        route.append(nxt)
        load += int(demands[nxt])
        current = nxt
        todo.remove(nxt)
    if current != 0:
        route.append(0)
    return route


def _llm4ad_reference(inst: CVRPInstance, fn) -> tuple[list[int], float]:
    """LLM4AD's route_construct and tour_cost (closing edge back to the first node)."""
    demands, dist, cap = np.asarray(inst.demands), np.asarray(inst.distances), inst.capacity
    route, load, current = [0], 0, 0
    todo = set(range(1, inst.n_nodes))
    customers = np.array(sorted(todo))
    feasible = customers
    while todo:
        nxt = int(fn(current, 0, feasible, cap - load, demands.copy(), dist.copy()))
        route.append(nxt)
        if nxt == 0:
            load, current = 0, 0
        else:
            load += demands[nxt]
            todo.remove(nxt)
            current = nxt
        fits = np.array([c for c in customers if load + demands[c] <= cap])
        feasible = np.intersect1d(fits, list(todo))
        if todo and len(feasible) < 1:
            route.append(0)
            load, current = 0, 0
            feasible = np.array(sorted(todo))
    coords = inst.coords
    cost = sum(
        np.linalg.norm(coords[route[j]] - coords[route[j + 1]]) for j in range(len(route) - 1)
    )
    cost += np.linalg.norm(coords[route[-1]] - coords[route[0]])
    return route, float(cost)


def test_routes_match_both_anchors_evaluators(task):
    for h in task.heuristics().values():
        fn = h.function(task.function_name)
        for setting in ("n50_c40", "llm4ad_n50_c40"):
            insts = task.instances(setting)[:4]
            for inst in insts:
                ours = construct_routes(fn, inst)
                assert ours == _algodisco_reference(inst, fn), (h.name, setting)
                theirs, cost = _llm4ad_reference(inst, fn)
                assert ours == [*theirs, 0], (h.name, setting)  # they leave the last 0 implied
                assert route_length(ours, inst.distances) == pytest.approx(cost, rel=1e-12)


def test_early_depot_returns_match_the_anchors(task):
    """A candidate that closes routes early builds the same sequence in all three evaluators."""

    def two_per_route(
        current_node, depot, unvisited_nodes, rest_capacity, demands, distance_matrix
    ):
        if current_node != depot and rest_capacity < 30:  # close each route once its load passes 10
            return depot
        return nearest(
            current_node, depot, unvisited_nodes, rest_capacity, demands, distance_matrix
        )

    inst = task.instances("n50_c40")[0]
    ours = construct_routes(two_per_route, inst)
    assert ours == _algodisco_reference(inst, two_per_route)
    theirs, cost = _llm4ad_reference(inst, two_per_route)
    assert ours == [*theirs, 0]
    assert route_length(ours, inst.distances) == pytest.approx(cost, rel=1e-12)
    assert len(split_routes(ours)) > len(split_routes(construct_routes(nearest, inst)))


# ---- pinned values ------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", sorted(NN_MEAN))
def test_pinned_nearest_neighbour_means(task, setting):
    m = task.run(nearest, setting)
    assert m.metric == pytest.approx(NN_MEAN[setting], rel=1e-9)
    assert m.score == -m.metric
    d = m.details
    assert d["mean_length"] == m.metric and len(d["lengths"]) == d["n_instances"]
    assert len(d["routes"]) == d["n_instances"] and d["mean_routes"] == np.mean(d["routes"])
    s = task.settings[setting]
    assert d["n_customers"] == s.params["n"] and d["capacity"] == s.params["capacity"]
    assert d["n_instances"] == s.params["n_instances"]


def test_shipped_heuristics_on_the_default_setting(task):
    heuristics = task.heuristics()
    assert set(heuristics) == set(SHIPPED_DEFAULT)
    for name, h in heuristics.items():
        assert "import numpy as np" in h.code and h.source
        m = task.run(h.function(task.function_name), "n50_c40")
        assert m.metric == pytest.approx(SHIPPED_DEFAULT[name], rel=1e-9), name
    # Savings < sweep-seeded NN < NN < the anchors' demand/distance template.
    order = sorted(SHIPPED_DEFAULT, key=SHIPPED_DEFAULT.get)
    assert order == [
        "sequential_savings",
        "sweep_nearest",
        "nearest_neighbour",
        "demand_over_distance",
    ]


def test_shipped_heuristics_on_every_setting(task):
    for h in task.heuristics().values():
        fn = h.function(task.function_name)
        for name in task.settings:
            m = task.run(fn, name)
            assert math.isfinite(m.metric) and m.metric > 0


def test_metric_moves_the_right_way_with_capacity_and_size(task):
    # More capacity: fewer, longer routes and less driving back and forth to the depot.
    assert NN_MEAN["n50_c80"] < NN_MEAN["n50_c40"] < NN_MEAN["n50_c20"]
    assert NN_MEAN["n20_c30"] < NN_MEAN["n50_c40"] < NN_MEAN["n100_c50"] < NN_MEAN["n200_c50"]
    assert NN_MEAN["clustered_n50_c40"] < NN_MEAN["n50_c40"]
    r20, r80 = (task.run(nearest, s).details["mean_routes"] for s in ("n50_c20", "n50_c80"))
    assert r20 > 2.5 * r80


# ---- feasibility of what the evaluator builds --------------------------------------------------
def test_every_route_is_feasible_on_every_setting(task):
    for h in task.heuristics().values():
        fn = h.function(task.function_name)
        for name in task.settings:
            for inst in task.instances(name)[:5]:
                route = construct_routes(fn, inst)
                assert route[0] == 0 and route[-1] == 0
                assert all(a != 0 or b != 0 for a, b in zip(route, route[1:], strict=False))
                routes = split_routes(route)
                served = [c for r in routes for c in r]
                assert sorted(served) == list(range(1, inst.n_nodes))  # each customer once
                loads = [int(inst.demands[r].sum()) for r in routes]
                assert max(loads) <= inst.capacity
                assert len(routes) >= math.ceil(inst.demands.sum() / inst.capacity)
                closed = sum(route_length([0, *r, 0], inst.distances) for r in routes)
                assert route_length(route, inst.distances) == pytest.approx(closed, rel=1e-12)


def test_instances_shape_range_and_read_only(task):
    for name, s in task.settings.items():
        instances = task.instances(name)
        assert len(instances) == s.params["n_instances"]
        for inst in instances[:3]:
            n1 = s.params["n"] + 1
            assert inst.coords.shape == (n1, 2) and inst.distances.shape == (n1, n1)
            assert inst.demands.shape == (n1,) and inst.demands.dtype == np.int64
            assert inst.demands[0] == 0 and inst.demands[1:].min() >= 1 and inst.demands.max() <= 9
            assert inst.coords.min() >= 0.0 and inst.coords.max() <= 1.0
            assert np.allclose(inst.distances, inst.distances.T)
            for a in (inst.coords, inst.distances, inst.demands):
                assert not a.flags.writeable


def test_determinism_and_distinct_settings(task):
    s = task.setting("clustered_n50_c40")
    a, b = generate_instances(s.params), generate_instances(s.params)
    for x, y, z in zip(a, b, task.instances(s), strict=True):
        assert np.array_equal(x.coords, y.coords) and np.array_equal(x.coords, z.coords)
        assert np.array_equal(x.demands, y.demands)
    assert task.run(nearest, "n20_c30").details == task.run(nearest, "n20_c30").details
    firsts = [task.instances(n)[0].coords[:3] for n in ("n50_c40", "n50_c20", "n50_c80")]
    assert not any(np.allclose(p, q) for i, p in enumerate(firsts) for q in firsts[i + 1 :])


def test_generator_rejects_bad_params():
    base = {"generator": "uniform", "n": 5, "capacity": 10, "n_instances": 1, "seed": 0}
    with pytest.raises(ValueError, match="below the largest demand"):
        generate_instances({**base, "capacity": 8})
    with pytest.raises(ValueError, match="at least 1 customer"):
        generate_instances({**base, "n": 0})
    with pytest.raises(ValueError, match="unknown CVRP instance generator"):
        generate_instances({**base, "generator": "gaussian"})


# ---- the construction protocol -------------------------------------------------------------------
def test_calls_arguments_and_automatic_returns():
    inst = _hand_made()
    calls = []

    def spy(current_node, depot, unvisited_nodes, rest_capacity, demands, distance_matrix):
        calls.append((current_node, unvisited_nodes.tolist(), rest_capacity))
        assert type(current_node) is int and depot == 0 and type(rest_capacity) is float
        assert unvisited_nodes.dtype == np.int64 and unvisited_nodes.size > 0
        for a in (unvisited_nodes, demands, distance_matrix):
            assert not a.flags.writeable
        assert distance_matrix.shape == (5, 5) and demands.tolist() == [0, 5, 5, 9, 1]
        return unvisited_nodes[-1]  # the highest index that fits

    route = construct_routes(spy, inst)
    # 4 (demand 1) then 3 (9): full, back automatically; 2 (5), 1 (5): full; all served.
    assert route == [0, 4, 3, 0, 2, 1, 0]
    assert calls == [
        (0, [1, 2, 3, 4], 10.0),
        (4, [1, 2, 3], 9.0),
        (0, [1, 2], 10.0),  # after the automatic return
        (2, [1], 5.0),
    ]
    assert route_length(route, inst.distances) == pytest.approx(0.4 + 0.1 + 0.3 + 0.2 + 0.1 + 0.1)
    assert split_routes(route) == [[4, 3], [2, 1]]


def test_returning_the_depot_closes_a_route():
    inst = _hand_made()

    def one_each(current_node, depot, unvisited_nodes, rest_capacity, demands, distance_matrix):
        return depot if current_node != depot else unvisited_nodes[0]

    route = construct_routes(one_each, inst)
    assert route == [0, 1, 0, 2, 0, 3, 0, 4, 0]
    assert route_length(route, inst.distances) == pytest.approx(2 * (0.1 + 0.2 + 0.3 + 0.4))


def test_at_most_two_calls_per_customer(task):
    calls = []

    def greedy_returner(
        current_node, depot, unvisited_nodes, rest_capacity, demands, distance_matrix
    ):
        calls.append(current_node)
        return depot if current_node != depot else unvisited_nodes[0]

    for inst in task.instances("n20_c30")[:3]:
        calls.clear()
        construct_routes(greedy_returner, inst)
        assert len(calls) == 2 * inst.n_customers - 1  # the last customer's return needs no call


def test_route_helpers():
    assert split_routes([0, 3, 1, 0, 2, 0]) == [[3, 1], [2]]
    assert split_routes([0, 0]) == [] and split_routes(np.array([0, 5, 0])) == [[5]]
    d = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.5], [2.0, 1.5, 0.0]])
    assert route_length([0, 1, 2, 0], d) == pytest.approx(4.5)
    assert route_length([0, 1, 0, 2, 0], d) == pytest.approx(6.0)


# ---- invalid output ----------------------------------------------------------------------------
def _returning(value):
    def fn(current_node, depot, unvisited_nodes, rest_capacity, demands, distance_matrix):
        return value(unvisited_nodes) if callable(value) else value

    return fn


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (0, "returned the depot while the vehicle is at the depot"),
        (7, "returned 7, out of range for 7 nodes"),
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


def test_returning_the_depot_forever_is_invalid(task):
    def stay(current_node, depot, unvisited_nodes, rest_capacity, demands, distance_matrix):
        return depot

    with pytest.raises(InvalidOutput, match="at the depot; a route must serve at least one"):
        task.run(stay, "n20_c30")

    # ... also after some progress: serve one customer, return, then return the depot again.
    state = []

    def stall(current_node, depot, unvisited_nodes, rest_capacity, demands, distance_matrix):
        state.append(current_node)
        return unvisited_nodes[0] if len(state) == 1 else depot

    with pytest.raises(InvalidOutput, match="while the vehicle is at the depot"):
        construct_routes(stall, _hand_made())
    assert state == [0, 1, 0]


def test_serving_a_customer_twice_is_invalid():
    def revisit(current_node, depot, unvisited_nodes, rest_capacity, demands, distance_matrix):
        return 1

    with pytest.raises(InvalidOutput, match="returned 1, an already served customer"):
        construct_routes(revisit, _hand_made())


def test_a_customer_that_does_not_fit_is_invalid():
    def overload(current_node, depot, unvisited_nodes, rest_capacity, demands, distance_matrix):
        return 1 if current_node == depot else 3  # demand 5, then 9 with 5 left

    with pytest.raises(
        InvalidOutput, match="returned 3, a customer whose demand 9 exceeds rest_capacity 5"
    ):
        construct_routes(overload, _hand_made())


@pytest.mark.parametrize(
    "convert",
    [int, np.int64, np.int32, np.uint16, lambda x: np.array(x), lambda x: np.intp(x)],
)
def test_integer_types_are_accepted(task, convert):
    fn = _returning(lambda u: convert(int(u[0])))
    m = task.measure(fn, _tiny(6), TINY)
    ref = task.measure(_returning(lambda u: u[0]), _tiny(6), TINY)
    assert isinstance(m, Measurement) and m.metric == ref.metric


# ---- read-only inputs ----------------------------------------------------------------------------
@pytest.mark.parametrize("argument", ["unvisited_nodes", "demands", "distance_matrix"])
def test_writing_into_an_input_raises(task, argument):
    def vandal(current_node, depot, unvisited_nodes, rest_capacity, demands, distance_matrix):
        target = {
            "unvisited_nodes": unvisited_nodes,
            "demands": demands,
            "distance_matrix": distance_matrix,
        }[argument]
        target[...] = 0
        return unvisited_nodes[0]

    inst = task.instances("n50_c40")[0]
    before = (inst.distances.copy(), inst.demands.copy())
    with pytest.raises(ValueError, match="read-only"):
        task.run(vandal, "n50_c40")
    assert np.array_equal(inst.distances, before[0]) and np.array_equal(inst.demands, before[1])


def test_candidate_cannot_corrupt_the_scoring(task):
    """Re-enabling writes on its own copies only changes what the candidate sees."""

    def saboteur(current_node, depot, unvisited_nodes, rest_capacity, demands, distance_matrix):
        for a in (demands, distance_matrix, unvisited_nodes):
            a.setflags(write=True)  # each is a private copy that owns its data
        demands[:] = 0
        distance_matrix[:] = 0.0
        choice = unvisited_nodes[0]
        unvisited_nodes[:] = 1  # claims customer 1 is still to serve
        return choice

    m = task.run(saboteur, "n50_c40")
    ref = task.run(_returning(lambda u: u[0]), "n50_c40")
    assert m.metric == ref.metric > 10.0  # scored on the true distances, demands, capacity
    assert task.run(nearest, "n50_c40").metric == pytest.approx(NN_MEAN["n50_c40"], rel=1e-12)


# ---- through the sandbox -------------------------------------------------------------------------
def test_sandbox_statuses(task):
    from aad_kit.result import Status
    from aad_kit.sandbox import Sandbox, SandboxConfig

    head = "import numpy as np\n\n" + task.signature + "\n"
    codes = {
        "template": (task.template_program, Status.OK),
        "depot_forever": (head + "    return depot\n", Status.INVALID_OUTPUT),
        "served_twice": (head + "    return int(np.argmax(demands))\n", Status.INVALID_OUTPUT),
        "write": (
            head + "    demands[0] = 1\n    return int(unvisited_nodes[0])\n",
            Status.RUNTIME_ERROR,
        ),
    }
    with Sandbox(SandboxConfig(workers=1, timeout_s=20, use_cache=False)) as sb:
        results = sb.evaluate_many([(task, code, "n50_c40") for code, _ in codes.values()])
    for (name, (_, expected)), r in zip(codes.items(), results, strict=True):
        assert r.status is expected, (name, r.status, r.message)
    assert results[0].metric == pytest.approx(NN_MEAN["n50_c40"], rel=1e-12)
    assert results[0].score == pytest.approx(-NN_MEAN["n50_c40"], rel=1e-12)
    assert results[1].score is None and "depot" in results[1].message


# ---- the notebook figure ---------------------------------------------------------------------------
def test_routes_figure():
    import matplotlib

    matplotlib.use("Agg")
    from aad_kit import plots

    fig = plots.cvrp_routes("n20_c30", ["nearest_neighbour", "sequential_savings"], instance=1)
    axes = fig.get_axes()
    assert len(axes) == 2 and "nearest_neighbour" in axes[0].get_title()
    inst = get_task("cvrp_construct").instances("n20_c30")[1]
    n_routes = len(split_routes(construct_routes(nearest, inst)))
    assert len(axes[0].get_lines()) == n_routes and f"{n_routes} routes" in axes[0].get_title()
