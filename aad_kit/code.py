"""Source-code utilities shared by the sandbox, the search and the database.

One place for "what counts as the same program": two sources that differ only in comments,
docstrings, blank lines or formatting normalise to the same text and hence the same hash.
"""

from __future__ import annotations

import ast
import hashlib
import io
import re
import tokenize


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


def _function_docstrings(tree: ast.Module, function_name: str | None) -> list[tuple[ast.AST, ast.Expr | None]]:
    out: list[tuple[ast.AST, ast.Expr | None]] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
            function_name is None or node.name == function_name
        ):
            first = node.body[0] if node.body else None
            is_doc = (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                      and isinstance(first.value.value, str))
            out.append((node, first if is_doc else None))  # type: ignore[arg-type]
    return out


def strip_docstring(code: str, function_name: str | None = None) -> str:
    """``code`` without the docstrings of its top-level functions (or of ``function_name``),
    everything else kept as written. Why: a parent shown in a prompt already carries its idea
    on an ``Idea:`` line, and a copied docstring costs a small model tokens it then repeats."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code
    lines = code.splitlines(keepends=True)
    cut: set[int] = set()
    for fn, doc in _function_docstrings(tree, function_name):
        if doc is None or doc.end_lineno is None or len(fn.body) == 1:  # type: ignore[attr-defined]
            continue  # no docstring, or it is the whole body (keep the function valid)
        before = lines[doc.lineno - 1][: doc.col_offset]
        after = lines[doc.end_lineno - 1][doc.end_col_offset or 0:]
        if before.strip() or after.strip():
            continue  # shares a line with other code
        cut.update(range(doc.lineno - 1, doc.end_lineno))
    return "".join(line for i, line in enumerate(lines) if i not in cut)


def with_docstring(code: str, function_name: str, text: str) -> str:
    """``code`` with the one-line docstring ``text`` in ``function_name`` unless it has one
    (the answer format puts the idea there); code that does not parse comes back unchanged."""
    text = " ".join(text.split()).replace('"' * 3, "'" * 3).rstrip("\\")
    if not text:
        return code
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code
    found = _function_docstrings(tree, function_name)
    if not found or found[0][1] is not None:
        return code
    fn = found[0][0]
    first = fn.body[0]  # type: ignore[attr-defined]
    lines = code.splitlines(keepends=True)
    line = lines[first.lineno - 1]
    if line[: first.col_offset].strip():  # the body starts on the def line
        return code
    q = '"' * 3
    at = first.lineno - 1
    if lines[fn.lineno - 1].split("#")[0].rstrip().endswith(":"):  # one-line header
        at = fn.lineno  # type: ignore[attr-defined]
    lines.insert(at, f"{line[: first.col_offset]}{q}{text}{q}\n")
    return "".join(lines)


def rename_identifier(src: str, old: str, new: str) -> str:
    """Replace every NAME token ``old`` by ``new`` (not inside strings or comments).

    Source that does not tokenize falls back to a whole-word regex replacement."""
    lines = src.split("\n")
    spots: list[tuple[int, int]] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.NAME and tok.string == old:
                spots.append(tok.start)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return re.sub(rf"\b{re.escape(old)}\b", new, src)
    for row, col in sorted(spots, reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:col] + new + line[col + len(old) :]
    return "\n".join(lines)


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
