"""Structural diversity of algorithms, without any model download.

Three measures, all computed from the source code alone:

* **code similarity** in ``[0, 1]``: the normalised Indel similarity (``rapidfuzz``) between the
  *token sequences* of two programs after :func:`aad_kit.code.normalize_code` (comments,
  docstrings and formatting removed). ``mode="tokens"`` compares the tokens as written;
  ``mode="shape"`` first abstracts the program to its AST shape (local names renamed in order
  of appearance, constants replaced by their type), so two programs that differ only in
  parameter values or variable names have similarity 1.
* **structures**: near-duplicate families, i.e. the connected components of the graph that
  links two programs whose similarity is ``>= threshold`` (single linkage). Any two programs
  at or above the threshold are therefore in the same family, which makes caps "per family"
  a guarantee about pairwise similarity.
* **distinct AST shapes**: the number of different :func:`ast_shape` strings, a stricter count
  (only programs identical up to names and constants share a shape).

Plus the **reuse count** of each algorithm across preference pairs (:func:`reuse_counts`).

Similarity matrices cost ``O(n^2)`` comparisons in C++ (``rapidfuzz.process.cdist``): about a
second for 1,000 programs of typical length on one core.
"""

from __future__ import annotations

import ast
import builtins
import io
import tokenize
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from aad_kit.code import normalize_code

SIMILARITY_MODES = ("tokens", "shape")
_BUILTIN_NAMES = frozenset(dir(builtins))


# ---------------------------------------------------------------------------- AST shape
class _Abstract(ast.NodeTransformer):
    """Rename locals in order of first appearance and replace constants by their type."""

    def __init__(self, keep: frozenset[str]) -> None:
        self.keep = keep
        self.names: dict[str, str] = {}

    def _rename(self, name: str) -> str:
        if name in self.keep:
            return name
        if name not in self.names:
            self.names[name] = f"v{len(self.names)}"
        return self.names[name]

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.copy_location(ast.Name(id=self._rename(node.id), ctx=node.ctx), node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self._rename(node.arg)
        node.annotation = None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.returns = None
        self.generic_visit(node)
        return node

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        """An f-string: its literal parts must stay string constants (unparse requires it);
        only the formatted values are abstracted."""
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                part.value = self.visit(part.value)
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        kind = type(node.value).__name__
        return ast.copy_location(ast.Name(id=f"<{kind}>", ctx=ast.Load()), node)


def _module_level_names(tree: ast.Module) -> set[str]:
    """Names bound by imports (np, math, ...): part of the structure, never renamed."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.update(a.asname or a.name for a in node.names)
    return out


@lru_cache(maxsize=65536)
def ast_shape(code: str) -> str:
    """The program's structure: normalised AST with local names and constants abstracted.

    Function names, imported modules, builtins and attribute names (``np.argmax``) are kept,
    so programs that call different functions have different shapes. Unparseable code gets
    its normalised text as shape (it is its own structure).
    """
    try:
        tree = ast.parse(normalize_code(code))
    except (SyntaxError, ValueError):
        return normalize_code(code)
    keep = frozenset(_BUILTIN_NAMES | _module_level_names(tree))
    function_names = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    tree = _Abstract(keep | function_names).visit(tree)
    return ast.unparse(ast.fix_missing_locations(tree))


# ---------------------------------------------------------------------------- tokens
@lru_cache(maxsize=65536)
def code_tokens(code: str, mode: str = "tokens") -> tuple[str, ...]:
    """Token strings of the normalised program (``mode="shape"``: of its :func:`ast_shape`)."""
    if mode not in SIMILARITY_MODES:
        raise ValueError(f"unknown similarity mode {mode!r}; choose one of {SIMILARITY_MODES}")
    text = ast_shape(code) if mode == "shape" else normalize_code(code)
    skip = {tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.ENDMARKER, tokenize.ENCODING}
    try:
        toks = [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type not in skip]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        toks = text.split()
    return tuple(t if t.strip() else "<ws>" for t in toks)


def _encode(token_lists: Sequence[Sequence[str]]) -> list[str]:
    """Map every distinct token to one character, so rapidfuzz compares token sequences fast."""
    vocab: dict[str, str] = {}
    out = []
    for toks in token_lists:
        chars = []
        for t in toks:
            c = vocab.get(t)
            if c is None:
                k = 0x100 + len(vocab)
                c = vocab[t] = chr(k + 0x800 if k >= 0xD800 else k)  # skip the surrogates
            chars.append(c)
        out.append("".join(chars))
    return out


def code_similarity(a: str, b: str, mode: str = "tokens") -> float:
    """Similarity in ``[0, 1]`` of two programs (1: same normalised token sequence)."""
    from rapidfuzz.distance import Indel

    ea, eb = _encode([code_tokens(a, mode), code_tokens(b, mode)])
    return float(Indel.normalized_similarity(ea, eb))


def similarity_matrix(codes: Sequence[str], mode: str = "tokens") -> np.ndarray:
    """``n x n`` matrix of :func:`code_similarity` (diagonal 1)."""
    from rapidfuzz.distance import Indel
    from rapidfuzz.process import cdist

    n = len(codes)
    if n == 0:
        return np.zeros((0, 0))
    enc = _encode([code_tokens(c, mode) for c in codes])
    sim = np.asarray(cdist(enc, enc, scorer=Indel.normalized_similarity, dtype=np.float64, workers=1))
    np.fill_diagonal(sim, 1.0)
    return sim


def structure_clusters(
    codes: Sequence[str], threshold: float = 0.9, mode: str = "tokens",
    sim: np.ndarray | None = None,
) -> np.ndarray:
    """Family label per program: connected components of ``similarity >= threshold``.

    Labels are ``0 .. k-1`` in order of each family's first member. Pass a precomputed
    ``sim`` (from :func:`similarity_matrix`) to avoid recomputing it.
    """
    n = len(codes)
    if sim is None:
        sim = similarity_matrix(codes, mode)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows, cols = np.nonzero(np.triu(sim >= threshold, k=1))
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    labels = np.empty(n, dtype=int)
    first: dict[int, int] = {}
    for i in range(n):
        labels[i] = first.setdefault(find(i), len(first))
    return labels


def n_structures(codes: Sequence[str], threshold: float = 0.9, mode: str = "tokens") -> int:
    """Number of near-duplicate families among ``codes`` (see :func:`structure_clusters`)."""
    return int(len(set(structure_clusters(codes, threshold, mode).tolist()))) if codes else 0


def n_distinct_shapes(codes: Iterable[str]) -> int:
    """Number of distinct :func:`ast_shape` strings."""
    return len({ast_shape(c) for c in codes})


def mean_pairwise_similarity(codes: Sequence[str], mode: str = "tokens") -> float:
    """Mean off-diagonal similarity (NaN for fewer than two programs). Lower = more diverse."""
    n = len(codes)
    if n < 2:
        return float("nan")
    sim = similarity_matrix(codes, mode)
    return float((sim.sum() - n) / (n * (n - 1)))


def reuse_counts(ids: Iterable[int]) -> Counter[int]:
    """How many times each algorithm id occurs (e.g. as the chosen answer across pairs)."""
    return Counter(int(i) for i in ids)


__all__ = [
    "SIMILARITY_MODES",
    "ast_shape",
    "code_similarity",
    "code_tokens",
    "mean_pairwise_similarity",
    "n_distinct_shapes",
    "n_structures",
    "reuse_counts",
    "similarity_matrix",
    "structure_clusters",
]
