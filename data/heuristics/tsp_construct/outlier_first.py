# name: outlier_first
# source: aad-kit, hand-written; the idea (favour nodes far from the other unvisited nodes) follows the evolved heuristic in EoH's examples/tsp_construct/evaluation/heuristic.py (github.com/FeiLiu36/EoH); weight 0.7 chosen on separate tuning instances (seed 999)
import numpy as np


def select_next_node(current_node: int, destination_node: int, unvisited_nodes: np.ndarray, distance_matrix: np.ndarray) -> int:
    """Nearest neighbour that visits peripheral nodes first.

    Score of a candidate j: d(current, j) - 0.7 * (mean distance from j to the other
    unvisited nodes); take the lowest. Nodes on the edge of the remaining point cloud get
    picked up on the way instead of being left stranded for a long detour at the end.
    """
    m = len(unvisited_nodes)
    if m == 1:
        return int(unvisited_nodes[0])
    among = distance_matrix[np.ix_(unvisited_nodes, unvisited_nodes)]
    mean_to_others = among.sum(axis=1) / (m - 1)  # the diagonal is 0
    score = distance_matrix[current_node, unvisited_nodes] - 0.7 * mean_to_others
    return int(unvisited_nodes[np.argmin(score)])
