# name: trivial
# source: FunSearch symmetric admissible-set skeleton (google-deepmind/funsearch, admissible_set/admissible_set.ipynb, Apache-2.0; Romera-Paredes et al., Nature 2023): the constant priority, so the greedy takes candidates in enumeration order
def priority(el: tuple[int, ...], n: int, w: int) -> float:
    """Every candidate gets the same priority: the greedy keeps enumeration order."""
    return 0.0
