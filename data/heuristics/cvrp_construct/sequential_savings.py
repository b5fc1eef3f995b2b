# name: sequential_savings
# source: the savings criterion of G. Clarke & J. W. Wright, "Scheduling of vehicles from a central depot to a number of delivery points", Operations Research 12(4):568-581, 1964, with the route-shape parameter of T. J. Gaskell, "Bases for vehicle fleet scheduling", Operational Research Quarterly 18(3):281-295, 1967, applied sequentially (one route grown at a time); aad-kit adaptation to a next-node rule: a route starts at the farthest customer, lambda = 1.4 chosen from {1.0, 1.2, 1.4, 1.6, 2.0} on separate tuning instances (seed 999)
import numpy as np


def select_next_node(current_node: int, depot: int, unvisited_nodes: np.ndarray, rest_capacity: float, demands: np.ndarray, distance_matrix: np.ndarray) -> int:
    """Grow the route by the customer with the largest saving.

    Saving of appending j after i (instead of serving j on its own route):
    d(i, depot) + d(depot, j) - lambda * d(i, j). From the depot every saving is equal, so a
    new route starts at the feasible customer farthest from the depot.
    """
    lam = 1.4
    to_depot = distance_matrix[depot, unvisited_nodes]
    if current_node == depot:
        return int(unvisited_nodes[np.argmax(to_depot)])
    saving = distance_matrix[current_node, depot] + to_depot - lam * distance_matrix[current_node, unvisited_nodes]
    return int(unvisited_nodes[np.argmax(saving)])
