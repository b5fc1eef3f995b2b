# name: balanced_blocks
# source: aad-kit authors (hand-written baseline, not from a paper): prefer candidates whose weight is spread evenly over the blocks of three, breaking ties towards fewer rotating blocks
import numpy as np


def priority(el: tuple[int, ...], n: int, w: int) -> float:
    """Higher for candidates whose per-block weights are close to the average w / (n / 3)."""
    blocks = np.array(el, dtype=float).reshape(-1, 3)
    block_weights = (blocks != 0).sum(axis=1)
    spread = float(np.var(block_weights))
    constant_blocks = int(sum(1 for b in blocks if b[0] == b[1] == b[2]))
    return -spread + 0.01 * constant_blocks
