# name: demand_over_distance
# source: the starting program of both anchors' cvrp_construct task (score = demand / distance, take the highest): LLM4AD, llm4ad/task/optimization/cvrp_construct/template.py (github.com/Optima-CityU/llm4ad; Liu et al., "LLM4AD: A Platform for Algorithm Design with Large Language Model", arXiv:2412.17287) and algodisco, task_examples/cvrp_construct/template_algo.txt (github.com/RayZhhh/algodisco); rule restated in vectorised form
import numpy as np


def select_next_node(current_node: int, depot: int, unvisited_nodes: np.ndarray, rest_capacity: float, demands: np.ndarray, distance_matrix: np.ndarray) -> int:
    """Serve the customer with the most demand per unit of distance from here.

    A customer at distance 0 scores +inf (served at once). Ties: lowest index.
    """
    distances = distance_matrix[current_node, unvisited_nodes]
    with np.errstate(divide="ignore"):
        score = np.where(distances > 0, demands[unvisited_nodes] / distances, np.inf)
    return int(unvisited_nodes[np.argmax(score)])
