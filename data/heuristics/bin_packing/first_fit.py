# name: first_fit
# source: textbook First Fit (D. S. Johnson, "Fast algorithms for bin packing", J. Comput. Syst. Sci. 8(3), 1974; E. G. Coffman Jr., M. R. Garey, D. S. Johnson, "Approximation algorithms for bin packing: a survey", 1996).
# Put the item into the lowest-index bin that can take it (`bins` lists those bins in index order).
import numpy as np


def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """First fit: priority decreases with the position of the bin."""
    return -np.arange(len(bins), dtype=float)
