# name: funsearch_weibull
# source: FunSearch heuristic discovered for the Weibull datasets; B. Romera-Paredes et al., "Mathematical discoveries from program search with large language models", Nature 625, 468-475 (2023); google-deepmind/funsearch repository, bin_packing/bin_packing.ipynb. Copyright 2023 DeepMind Technologies Limited, Apache License 2.0.
# Published result (notebook): 2001.4 bins on FunSearch's Weibull 5k vs L1 1987.8, excess 0.68%.
# Code as published (re-indented to 4 spaces).
import numpy as np


def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Heuristic discovered for the Weibull datasets."""
    max_bin_cap = max(bins)
    score = (bins - max_bin_cap)**2 / item + bins**2 / (item**2)
    score += bins**2 / item**3
    score[bins > item] = -score[bins > item]
    score[1:] -= score[:-1]
    return score
