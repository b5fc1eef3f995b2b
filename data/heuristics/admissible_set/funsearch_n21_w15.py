# name: funsearch_n21_w15
# source: FunSearch's discovered priority that builds a size-43,596 admissible set in A(21, 15); published in google-deepmind/funsearch, admissible_set/admissible_set.ipynb (Apache-2.0), Romera-Paredes et al., "Mathematical discoveries from program search with large language models", Nature 2023. Program reproduced as published (indentation reformatted).
def priority(el: tuple[int, ...], n: int, w: int) -> float:
    score = 0
    coeff = 0
    for pos, x in zip(range(n), el):
        y = (el[(pos + 1) % n] - el[(pos)]) % n
        z = (el[(pos + 2) % n] - el[(pos)]) % n
        p = (el[(pos - 1) % n] + 1) % n

        u = (el[(pos - 2) % n] + 1) % n
        v = (el[(pos + 3) % n] + 1) % n

        score += 3 * p * (p + coeff) * (p + w) + (p + coeff) ** 2 * (w + 1)
        score += 2 * p * v * (p + w) + v * z * (-1 + w) - (p + coeff) * (-1 + w)
        score += v * (u + w) + u + 3 * u * y * (1 + w) + u * z * (w - 1) - (p + coeff) * (w - 1)
        score += (1 + w) ** 6 * 3 * coeff**2

    return score
