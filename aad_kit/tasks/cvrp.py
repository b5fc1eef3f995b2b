"""CVRP constructive heuristic: the LLM designs ``select_next_node`` (the paper's ``cvrp_construct``).

Problem
-------
An instance is a depot (node 0) and ``n`` customers (nodes 1..n), points in the unit square
with the full Euclidean distance matrix, an integer demand per customer and one vehicle
capacity. Routes are built greedily, one node at a time, by a single vehicle that may return
to the depot to unload as often as it likes (the fleet is unbounded). The vehicle starts at the
depot with an empty load; while a customer is unserved the evaluator computes the *feasible*
customers (unserved, with demand <= the capacity left on the current route) and

- if none is feasible, the vehicle returns to the depot **without a call** (its load resets);
- otherwise it calls::

      select_next_node(current_node, depot, unvisited_nodes, rest_capacity, demands,
                       distance_matrix) -> int

  with ``unvisited_nodes`` = the feasible customers, and moves to the returned node: a
  feasible customer is served (its demand is loaded), while ``depot`` ends the current route
  early (the load resets and the next call comes from the depot).

When every customer is served the vehicle returns to the depot. The total route length is
summed along the whole depot-delimited sequence ``0, c, c, 0, c, ..., 0`` from the
evaluator's own private distance matrix. The metric is the mean total length over the
setting's instances (lower is better); the score is its negative.

This is the route rule of the paper's code: the algodisco task
``task_examples/cvrp_construct`` (github.com/RayZhhh/algodisco) that RayZhhh/dpo-aad's CVRP
configs call: only feasible customers are offered (ascending index order), the vehicle
returns by itself when nothing fits, the candidate may return the depot to close a route, and
returning the depot while at the depot is an error. LLM4AD's ``cvrp_construct`` evaluator
(github.com/Optima-CityU/llm4ad) builds the same routes for every candidate both accept; it
differs only on illegal output, which it does not check (a depot-at-depot answer loops until
its timeout there; here it is ``invalid_output`` at once).

Decisions (where we pin down, or differ from, the anchors)
----------------------------------------------------------
- ``unvisited_nodes`` holds only the customers that fit (as in both anchors), in ascending
  index order, as a fresh read-only ``int64`` array each call; it is never empty.
- ``rest_capacity`` is a Python ``float``, as the task's signature says (capacity minus the
  current load; integral values, since demands are integers; both anchors pass an integer).
  ``depot`` is always 0 and ``demands[0]`` is 0.
- Inputs are **read-only**: ``unvisited_nodes``, ``demands`` and ``distance_matrix`` have
  ``flags.writeable = False``; ``demands`` and ``distance_matrix`` are per-instance copies, so
  the cached instance and the arrays used for feasibility and length are never the ones the
  candidate sees. An in-place write raises ``ValueError`` inside the candidate (reported as
  its runtime error). Served customers, the load and the route are the evaluator's own
  records, so nothing a candidate does to its arguments can produce an infeasible route.
- The return value must be an **integer** exactly as in ``tsp_construct`` (``int``, NumPy
  integer, 0-d integer array; not ``bool``, not a float even if integral, not NaN/None/str,
  not an array with a dimension). It is :class:`~aad_kit.tasks.base.InvalidOutput`, naming
  the value, when it is out of range (negative indices included), an already served
  customer, a customer whose demand exceeds ``rest_capacity``, or the depot while the
  vehicle is at the depot (a route must serve at least one customer; this is also the guard
  against a candidate that would return the depot forever). With that rule every call serves
  a customer or closes a non-empty route, so an instance takes at most ``2 n`` calls.

Settings
--------
- ``n50_c40`` (default, the training setting): the paper's instances, reproduced exactly as
  algodisco's ``CVRPInstanceGenerator`` makes them: ``rng = numpy.random.default_rng(2024)``,
  then per instance (16) ``coords = rng.random((51, 2))`` (row 0 the depot) followed by
  ``demands[1:] = rng.integers(1, 10, size=50)`` (integers 1..9, depot 0); capacity 40.
- ``llm4ad_n50_c40``: LLM4AD's legacy ``GetData`` generator (``np.random.seed(2024)``, then
  per instance ``np.random.rand(51, 2)`` and ``np.random.randint(1, 10, size=51)``; we use a
  private ``RandomState(2024)`` so the global NumPy state is untouched, and set the depot's
  drawn demand to 0: LLM4AD never loads it); capacity 40, 16 instances.
- Held-out sizes ``n20_c30``, ``n100_c50``, ``n200_c50`` and capacities ``n50_c20``,
  ``n50_c80``: 64 instances each, the paper's recipe (uniform coordinates, demands 1..9)
  with our own seeds. Capacities 30/40/50 for 20/50/100 customers are the usual ones
  (Kool, van Hoof & Welling, "Attention, Learn to Solve Routing Problems!", ICLR 2019);
  200 customers keep capacity 50 (as DeepACO/ReEvo's CVRP sets do), so routes stay ~10
  customers long.
- ``clustered_n50_c40``, ``clustered_n100_c50``: 64 instances; the depot uniform in the unit
  square, customers in ``k`` Gaussian clusters (centres uniform in [0.1, 0.9]^2, each customer
  picks a centre uniformly, N(0, 0.05^2) per coordinate, clipped to [0, 1]^2, as in
  ``tsp_construct``), demands 1..9.

Distances are ``np.linalg.norm(coords[:, None] - coords[None], axis=2)`` (both anchors).
No published number for these instances was found in either anchor; the tests pin our own
values and the anchors' generators instead.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from aad_kit.tasks.base import InvalidOutput, Measurement, Setting, Task
from aad_kit.tasks.tsp import _PLAIN_INT_TYPES, _short, distance_matrix

DEPOT = 0
MAX_DEMAND = 9  # demands are integers 1..9 in every setting (both anchors)

_SIGNATURE = (
    "def select_next_node(current_node: int, depot: int, unvisited_nodes: np.ndarray, "
    "rest_capacity: float, demands: np.ndarray, distance_matrix: np.ndarray) -> int:"
)

_TEMPLATE = f'''import numpy as np


{_SIGNATURE}
    """Choose the next node while building CVRP routes step by step.

    Args:
        current_node: index of the node the vehicle is at (the depot, 0, at the start of a route).
        depot: index of the depot (always 0).
        unvisited_nodes: read-only int array of the unserved customers whose demand fits in
            rest_capacity, in ascending index order; never empty.
        rest_capacity: capacity the vehicle has left on its current route.
        demands: read-only int array of every node's demand (demands[depot] is 0).
        distance_matrix: read-only (n, n) float array of Euclidean distances between all
            nodes, depot and served customers included.

    Returns:
        An element of unvisited_nodes (serve that customer next), or depot to end the
        current route early (not allowed while the vehicle is at the depot).
    """
    # Nearest feasible neighbour: go to the closest customer that still fits.
    distances = distance_matrix[current_node, unvisited_nodes]
    return int(unvisited_nodes[np.argmin(distances)])
'''

_DESCRIPTION = (
    "Capacitated vehicle routing problem (CVRP), solved by step-by-step construction. Each "
    "instance is a depot (node 0) and n customers (nodes 1 to n) in the unit square with "
    "Euclidean distances; every customer has an integer demand from 1 to 9, and the vehicle "
    "has a fixed capacity (e.g. 40). The vehicle starts at the depot with an empty load and "
    "serves customers one at a time; it may go back to the depot to unload and start a new "
    "route as often as needed. At every step the function select_next_node is called with "
    "the current node, the depot (always 0), the array of unserved customers whose demand "
    "fits in the remaining capacity (in ascending index order, not sorted by distance; never "
    "empty), the remaining capacity, the demands of all nodes and the full distance matrix, "
    "and must return the next node: one of those customers, or the depot to end the current "
    "route early. When no unserved customer fits, the vehicle returns to the depot "
    "automatically without a call; when all customers are served it returns to the depot. "
    "The arrays are read-only (copy them before modifying). The return value must be an "
    "integer; anything else (a served customer, a customer that does not fit, an "
    "out-of-range index, returning the depot while at the depot, a float, NaN, None) makes "
    "the heuristic invalid. The goal is to minimise the mean total length of all routes over "
    "many random instances (20 to 200 customers, uniform or clustered, several capacities); "
    "the function should also be fast, since it is called once per step. Design a "
    "select_next_node rule that builds shorter routes than greedily going to the nearest "
    "customer that fits."
)


@dataclass(frozen=True)
class CVRPInstance:
    """One instance: node 0 is the depot; all arrays are read-only.

    ``coords`` (n + 1, 2), ``distances`` (n + 1, n + 1), ``demands`` (n + 1,) int64 with
    ``demands[0] == 0``, and the vehicle ``capacity``.
    """

    coords: np.ndarray
    distances: np.ndarray
    demands: np.ndarray
    capacity: float

    @property
    def n_nodes(self) -> int:
        return int(self.coords.shape[0])

    @property
    def n_customers(self) -> int:
        return self.n_nodes - 1


def _frozen(coords: np.ndarray, demands: np.ndarray, capacity: float) -> CVRPInstance:
    coords = np.ascontiguousarray(coords, dtype=np.float64)
    demands = np.ascontiguousarray(demands, dtype=np.int64).copy()
    demands[DEPOT] = 0
    if demands[1:].min(initial=1) < 1 or demands.max(initial=0) > capacity:
        raise ValueError(f"every demand must be in 1..capacity={capacity:g}")
    dist = distance_matrix(coords)
    for a in (coords, demands, dist):
        a.setflags(write=False)
    return CVRPInstance(coords, dist, demands, float(capacity))


def generate_instances(params: Mapping[str, Any]) -> tuple[CVRPInstance, ...]:
    """Build the instances a setting's ``params`` describe (deterministic)."""
    generator = params["generator"]
    n = int(params["n"])  # customers; the depot is extra
    count = int(params["n_instances"])
    capacity = float(params["capacity"])
    if n < 1:
        raise ValueError(f"a CVRP instance needs at least 1 customer, got n={n}")
    if capacity < MAX_DEMAND:
        raise ValueError(f"capacity {capacity:g} is below the largest demand {MAX_DEMAND}")
    out = []
    if generator == "uniform":
        # algodisco's CVRPInstanceGenerator (the paper's code): one default_rng stream, per
        # instance the n + 1 coordinates, then the n customer demands.
        rng = np.random.default_rng(params["seed"])
        for _ in range(count):
            coords = rng.random((n + 1, 2))
            demands = np.zeros(n + 1, dtype=np.int64)
            demands[1:] = rng.integers(1, MAX_DEMAND + 1, size=n)
            out.append(_frozen(coords, demands, capacity))
    elif generator == "llm4ad":
        # LLM4AD's GetData: np.random.seed(seed); per instance rand(n + 1, 2), randint(1, 10, n + 1).
        rs = np.random.RandomState(params["seed"])
        for _ in range(count):
            coords = rs.rand(n + 1, 2)
            demands = rs.randint(1, MAX_DEMAND + 1, size=n + 1)  # the depot's entry is dropped
            out.append(_frozen(coords, demands, capacity))
    elif generator == "clustered":
        rng = np.random.default_rng(params["seed"])
        k, sigma = int(params["n_clusters"]), float(params["sigma"])
        for _ in range(count):
            depot = rng.random((1, 2))
            centres = 0.1 + 0.8 * rng.random((k, 2))
            labels = rng.integers(0, k, size=n)
            pts = np.clip(centres[labels] + rng.normal(0.0, sigma, size=(n, 2)), 0.0, 1.0)
            demands = np.zeros(n + 1, dtype=np.int64)
            demands[1:] = rng.integers(1, MAX_DEMAND + 1, size=n)
            out.append(_frozen(np.vstack([depot, pts]), demands, capacity))
    else:
        raise ValueError(f"unknown CVRP instance generator {generator!r}")
    return tuple(out)


def _check_choice(
    choice: Any,
    n_nodes: int,
    current: int,
    unserved: np.ndarray,
    demands: np.ndarray,
    rest: float,
) -> int:
    """The node ``choice`` denotes, or :class:`InvalidOutput` if it is not a legal move.

    ``unserved`` is the evaluator's private boolean mask of customers still to serve.
    """
    if type(choice) in _PLAIN_INT_TYPES:
        node = int(choice)
    else:
        if isinstance(choice, bool | np.bool_):
            raise InvalidOutput(f"select_next_node returned a bool ({choice!r}), not a node index")
        try:
            node = operator.index(choice)
        except TypeError:
            raise InvalidOutput(
                "select_next_node must return an integer node index, got "
                f"{type(choice).__name__} {_short(choice)}"
            ) from None
    if not 0 <= node < n_nodes:
        raise InvalidOutput(
            f"select_next_node returned {_short(choice)}, out of range for {n_nodes} nodes "
            f"(depot 0 and customers 1..{n_nodes - 1})"
        )
    if node == DEPOT:
        if current == DEPOT:
            raise InvalidOutput(
                "select_next_node returned the depot while the vehicle is at the depot; "
                "a route must serve at least one customer"
            )
        return node
    if not unserved[node]:
        raise InvalidOutput(
            f"select_next_node returned {_short(choice)}, an already served customer; it must "
            "be one of unvisited_nodes or the depot"
        )
    if demands[node] > rest:
        raise InvalidOutput(
            f"select_next_node returned {_short(choice)}, a customer whose demand "
            f"{int(demands[node])} exceeds rest_capacity {rest:g}"
        )
    return node


def construct_routes(fn: Callable[..., Any], instance: CVRPInstance) -> list[int]:
    """The depot-delimited node sequence ``fn`` builds: ``[0, c, ..., 0, c, ..., 0]``."""
    n_nodes = instance.n_nodes
    shown_dist = instance.distances.copy()  # the candidate's own read-only copies
    shown_dist.setflags(write=False)
    shown_demands = instance.demands.copy()
    shown_demands.setflags(write=False)
    demands = instance.demands  # the evaluator's (read-only) record
    capacity = instance.capacity
    unserved = np.ones(n_nodes, dtype=bool)
    unserved[DEPOT] = False
    left = n_nodes - 1
    route = [DEPOT]
    current, load = DEPOT, 0.0
    while left:
        rest = capacity - load
        feasible = np.flatnonzero(unserved & (demands <= rest))  # fresh int64, ascending
        if feasible.size == 0:  # nothing fits: back to the depot (never from it: demand <= cap)
            route.append(DEPOT)
            current, load = DEPOT, 0.0
            continue
        feasible.setflags(write=False)
        choice = fn(current, DEPOT, feasible, rest, shown_demands, shown_dist)
        node = _check_choice(choice, n_nodes, current, unserved, demands, rest)
        route.append(node)
        if node == DEPOT:
            current, load = DEPOT, 0.0
        else:
            unserved[node] = False
            left -= 1
            load += float(demands[node])
            current = node
    if current != DEPOT:
        route.append(DEPOT)
    return route


def split_routes(route: list[int] | np.ndarray) -> list[list[int]]:
    """The vehicle routes of a depot-delimited sequence, each as its customers in order."""
    out: list[list[int]] = []
    part: list[int] = []
    for node in route:
        if int(node) == DEPOT:
            if part:
                out.append(part)
            part = []
        else:
            part.append(int(node))
    if part:
        out.append(part)
    return out


def route_length(route: list[int] | np.ndarray, distances: np.ndarray) -> float:
    """Length of the node sequence, summed edge by edge (no closing edge is added)."""
    order = np.asarray(route, dtype=np.intp)
    return float(distances[order[:-1], order[1:]].sum())


def _uniform(
    n: int,
    capacity: int,
    seed: int,
    count: int = 64,
    name: str | None = None,
    description: str | None = None,
) -> Setting:
    return Setting(
        name or f"n{n}_c{capacity}",
        {"generator": "uniform", "n": n, "capacity": capacity, "n_instances": count, "seed": seed},
        description
        or f"{count} instances of {n} customers + depot uniform in the unit square, demands "
        f"1..9, capacity {capacity} (the paper's recipe, seed {seed})",
        timeout_s=_TIMEOUT_S[n],
    )


def _clustered(n: int, capacity: int, k: int, seed: int) -> Setting:
    return Setting(
        f"clustered_n{n}_c{capacity}",
        {
            "generator": "clustered",
            "n": n,
            "capacity": capacity,
            "n_instances": 64,
            "seed": seed,
            "n_clusters": k,
            "sigma": 0.05,
        },
        f"64 instances of {n} customers in {k} Gaussian clusters (sigma 0.05, centres uniform "
        f"in [0.1, 0.9]^2, clipped), depot uniform, demands 1..9, capacity {capacity} "
        f"(seed {seed})",
        timeout_s=_TIMEOUT_S[n],
    )


# Wall-clock budget per candidate and setting. Nearest neighbour takes about 0.02 s (n50_c40,
# 16 instances), 0.03 s (n20, 64), 0.15 s (n100, 64), 0.3 s (n200, 64) in-process; a plain
# Python loop over the feasible customers (the anchors' template style) 0.03 / 0.04 / 0.4 /
# 1.3 s, and one with an O(m^2) inner loop per step 0.1 / 0.06 / 1.4 / 8.8 s (2 loaded
# cores). A generalisation test should not fail such heuristics for Python speed: hence the
# same budgets as tsp_construct, a floor of 10 s and more on the larger sizes.
_TIMEOUT_S = {20: 10.0, 50: 20.0, 100: 60.0, 200: 150.0}


class CVRPConstructTask(Task):
    name: ClassVar[str] = "cvrp_construct"
    function_name: ClassVar[str] = "select_next_node"
    signature: ClassVar[str] = _SIGNATURE
    template_program: ClassVar[str] = _TEMPLATE
    description: ClassVar[str] = _DESCRIPTION
    metric_name: ClassVar[str] = "mean total route length"
    metric_lower_is_better: ClassVar[bool] = True
    default_setting: ClassVar[str] = "n50_c40"
    settings: ClassVar[dict[str, Setting]] = {
        s.name: s
        for s in (
            _uniform(
                50,
                40,
                2024,
                count=16,
                description="the paper's instances (algodisco cvrp_construct): 16 x (50 "
                "customers + depot) uniform in the unit square, demands 1..9, capacity 40, "
                "numpy default_rng(2024)",
            ),
            Setting(
                "llm4ad_n50_c40",
                {"generator": "llm4ad", "n": 50, "capacity": 40, "n_instances": 16, "seed": 2024},
                "LLM4AD's cvrp_construct instances (legacy GetData): 16 x (50 customers + "
                "depot), demands 1..9, capacity 40, np.random.seed(2024)",
                timeout_s=_TIMEOUT_S[50],
            ),
            _uniform(20, 30, 40_020),
            _uniform(100, 50, 40_100),
            _uniform(200, 50, 40_200),
            _uniform(50, 20, 40_520),
            _uniform(50, 80, 40_580),
            _clustered(50, 40, 5, 50_050),
            _clustered(100, 50, 8, 50_100),
        )
    }

    def build_instances(self, setting: Setting) -> tuple[CVRPInstance, ...]:
        return generate_instances(setting.params)

    def measure(
        self, fn: Callable[..., Any], instances: tuple[CVRPInstance, ...], setting: Setting
    ) -> Measurement:
        lengths, n_routes = [], []
        for inst in instances:
            route = construct_routes(fn, inst)
            lengths.append(route_length(route, inst.distances))
            n_routes.append(len(split_routes(route)))
        mean = float(np.mean(lengths))
        return Measurement(
            metric=mean,
            score=-mean,
            details={
                "mean_length": mean,
                "lengths": lengths,
                "routes": n_routes,
                "mean_routes": float(np.mean(n_routes)),
                "n_customers": instances[0].n_customers if instances else 0,
                "capacity": instances[0].capacity if instances else 0.0,
                "n_instances": len(instances),
            },
        )
