# name: sweep_nearest
# source: the sweep order of B. E. Gillett & L. R. Miller, "A heuristic algorithm for the vehicle-dispatch problem", Operations Research 22(2):340-349, 1974 (customers taken by polar angle around the depot); aad-kit adaptation to a next-node rule: each route starts at the unserved customer with the smallest polar angle and continues by nearest feasible neighbour; the angles are recovered from the distance matrix alone
import numpy as np


def _polar_angles(distance_matrix: np.ndarray, depot: int) -> np.ndarray:
    """Polar angle of every node around the depot, up to one rotation/reflection.

    A Euclidean distance matrix fixes the points up to an isometry: put the depot at the
    origin and the customer farthest from it on the positive x axis; the node farthest from
    that axis fixes which side is positive y.
    """
    d0 = distance_matrix[depot]
    r = int(np.argmax(d0))
    x = (d0**2 + d0[r] ** 2 - distance_matrix[r] ** 2) / (2.0 * d0[r])
    y = np.sqrt(np.maximum(d0**2 - x**2, 0.0))
    s = int(np.argmax(y))
    same_side = np.hypot(x - x[s], y - y[s])
    other_side = np.hypot(x - x[s], y + y[s])
    y = np.where(np.abs(distance_matrix[s] - same_side) <= np.abs(distance_matrix[s] - other_side), y, -y)
    return np.arctan2(y, x)


def select_next_node(current_node: int, depot: int, unvisited_nodes: np.ndarray, rest_capacity: float, demands: np.ndarray, distance_matrix: np.ndarray) -> int:
    """Start each route where the sweep around the depot has got to, then go nearest."""
    if current_node == depot:
        angles = _polar_angles(distance_matrix, depot)
        return int(unvisited_nodes[np.argmin(angles[unvisited_nodes])])
    distances = distance_matrix[current_node, unvisited_nodes]
    return int(unvisited_nodes[np.argmin(distances)])
