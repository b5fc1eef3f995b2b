# name: nearest_neighbour
# source: Rosenkrantz, Stearns & Lewis (1977), "An analysis of several heuristics for the traveling salesman problem", SIAM J. Comput. 6(3):563-581
import numpy as np


def select_next_node(current_node: int, destination_node: int, unvisited_nodes: np.ndarray, distance_matrix: np.ndarray) -> int:
    """Nearest neighbour: always move to the closest unvisited node (ties: lowest index)."""
    distances = distance_matrix[current_node, unvisited_nodes]
    return int(unvisited_nodes[np.argmin(distances)])
