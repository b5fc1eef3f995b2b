"""Source-code utilities shared by the sandbox, the search and the database.

One place for "what counts as the same program": two sources that differ only in comments,
docstrings, blank lines or formatting normalise to the same text and hence the same hash.
"""

from __future__ import annotations

import ast
import hashlib


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]


def normalize_code(code: str) -> str:
    """Canonical text of ``code``: parsed and unparsed, without comments or docstrings.

    Unparseable code is returned with trailing whitespace stripped per line, so it still
    has a stable (if less forgiving) identity.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return "\n".join(line.rstrip() for line in code.strip().splitlines())
    _strip_docstrings(tree)
    return ast.unparse(tree)


def code_hash(code: str) -> str:
    """sha256 (hex, 16 chars) of the normalised code: the dedup and cache key."""
    return hashlib.sha256(normalize_code(code).encode("utf-8")).hexdigest()[:16]


def bound_names(tree: ast.AST, *, include_declarations: bool = False) -> set[str]:
    """Every name a module binds anywhere: assignments, defs, arguments, imports, handlers, matches.

    ``include_declarations`` also counts ``global``/``nonlocal`` names. The sandbox policy
    leaves it off on purpose: ``global open`` binds nothing, so ``open`` is still the builtin.
    """
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
        elif include_declarations and isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
    return bound
