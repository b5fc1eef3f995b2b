# name: worst_fit
# source: textbook Worst Fit (D. S. Johnson, "Fast algorithms for bin packing", J. Comput. Syst. Sci. 8(3), 1974; E. G. Coffman Jr., M. R. Garey, D. S. Johnson, "Approximation algorithms for bin packing: a survey", 1996).
# Put the item into the already-opened bin with the MOST room left; open a new bin only when no
# opened bin can take it. The evaluator always offers at least one empty bin, so bins.max() is the
# capacity and a bin is still unopened exactly when it has that much room.
import numpy as np


def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Worst fit: the emptiest opened bin first; unopened (empty) bins last."""
    capacity = bins.max()
    return np.where(bins < capacity, bins, -1.0)
