# name: lookahead_nearest_neighbour
# source: aad-kit, hand-written (one-step lookahead variant of nearest neighbour); note: on uniform instances it is WORSE than plain nearest neighbour, since it postpones isolated nodes
import numpy as np


def select_next_node(current_node: int, destination_node: int, unvisited_nodes: np.ndarray, distance_matrix: np.ndarray) -> int:
    """One-step lookahead: minimise d(current, j) + d(j, nearest other unvisited node of j)."""
    m = len(unvisited_nodes)
    if m <= 2:  # the lookahead term is the same for both: plain nearest neighbour
        return int(unvisited_nodes[np.argmin(distance_matrix[current_node, unvisited_nodes])])
    among = distance_matrix[np.ix_(unvisited_nodes, unvisited_nodes)]  # a fresh copy
    np.fill_diagonal(among, np.inf)
    score = distance_matrix[current_node, unvisited_nodes] + among.min(axis=1)
    return int(unvisited_nodes[np.argmin(score)])
