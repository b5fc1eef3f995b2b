# name: nearest_neighbour
# source: textbook nearest-neighbour route construction for the VRP (the nearest feasible unrouted customer next; a new route when none fits), as in M. M. Solomon, "Algorithms for the vehicle routing and scheduling problems with time window constraints", Operations Research 35(2):254-265, 1987
import numpy as np


def select_next_node(current_node: int, depot: int, unvisited_nodes: np.ndarray, rest_capacity: float, demands: np.ndarray, distance_matrix: np.ndarray) -> int:
    """Nearest feasible neighbour: the closest customer that still fits (ties: lowest index)."""
    distances = distance_matrix[current_node, unvisited_nodes]
    return int(unvisited_nodes[np.argmin(distances)])
