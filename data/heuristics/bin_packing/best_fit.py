# name: best_fit
# source: textbook Best Fit (D. S. Johnson, "Fast algorithms for bin packing", J. Comput. Syst. Sci. 8(3), 1974; E. G. Coffman Jr., M. R. Garey, D. S. Johnson, "Approximation algorithms for bin packing: a survey", 1996). Same form as the starting priority in FunSearch's bin_packing notebook.
# Put the item into the bin it fills most tightly (smallest remaining capacity that fits).
import numpy as np


def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Best fit: the smaller the space left after packing, the higher the priority."""
    return -(bins - item)
