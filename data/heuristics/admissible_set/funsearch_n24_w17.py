# name: funsearch_n24_w17
# source: FunSearch's discovered priority that builds a size-237,984 admissible set in A(24, 17); published in google-deepmind/funsearch, admissible_set/admissible_set.ipynb (Apache-2.0), Romera-Paredes et al., "Mathematical discoveries from program search with large language models", Nature 2023. Program reproduced as published (indentation reformatted).
def priority(el: tuple[int, ...], n: int, w: int) -> float:
    result = 0.0
    for i in range(n):
        n_violations = 0

        if el[i] < el[i - 1]:
            result += (el[i - 1] ** 0.5) * w**2 / (6 * 6)
            n_violations += 1

        if el[i] < el[i - 2]:
            result += el[i - 2] ** 0.5
            n_violations += 1

        if el[i - 1] != 0:
            result -= (el[i] - el[i - 1]) * w**2 / (6 * 3)
            n_violations += 2

        if el[i - 2] != 0:
            result -= (el[i] - el[i - 2]) * w**2 / (6 * 6) * (0.95**n_violations)
            n_violations += 1

        result -= (0.02 ** el[i]) * (el[i] - el[i - 8])

    return result
