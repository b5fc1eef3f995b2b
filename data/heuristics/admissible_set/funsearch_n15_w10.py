# name: funsearch_n15_w10
# source: FunSearch's discovered priority for I(15, 10), reaching the maximum size C(15, 10) = 3003; published in google-deepmind/funsearch, admissible_set/admissible_set.ipynb (Apache-2.0), Romera-Paredes et al., "Mathematical discoveries from program search with large language models", Nature 2023. Program reproduced as published (indentation reformatted).
def priority(el: tuple[int, ...], n: int, w: int) -> float:
    score = 0.0
    for i in range(n):
        if el[i] < el[i - 1]:
            score += 1
        elif el[i] < el[i - 2]:
            score += 0.05
        elif el[i] < el[i - 3]:
            score -= 0.05
        elif el[i] < el[i - 4]:
            score += 0.01
        elif el[i] < el[i - 5]:
            score -= 0.01
        elif el[i] < el[i - 6]:
            score += 0.001
        else:
            score += 0.005

    for i in range(n):
        if el[i] == el[i - 1]:
            score -= w
        elif el[i] == 0 and i != n - 1 and el[i + 1] != 0:
            score += w
        if el[i] != el[i - 1]:
            score += w

    for i in range(n):
        if el[i] < el[i - 1]:
            if el[i] == 0:
                score -= w
    return score
