"""Robust extraction of (idea, code) from a model's answer, small models included.

Small models rarely follow the answer format exactly. :func:`parse_answer` recovers what it
can and records every repair in ``notes``:

- code in ```python / ``` fences (an unclosed final fence, i.e. a truncated answer, is read
  to the end), or bare code with prose before and after it;
- several fences: the one defining the target function wins, else one whose single function
  can be renamed, else the first that parses;
- prose after the code (also inside a fence) is cut at a top-level line boundary, never
  inside a function body, so a truncated body is a syntax error rather than silently shorter
  code;
- a wrongly named function (exactly one top-level function with another name that takes the
  target's number of positional arguments) is renamed to the target name;
- missing imports of well-known modules / names (``np.``, ``math.``, ``defaultdict``, ...)
  are added; ``if __name__ == "__main__":`` blocks and top-level demo calls are removed;
- ``<think>...</think>`` reasoning is ignored;
- the idea: a line starting with ``Idea:`` (markdown decorations allowed), else EoH-style text
  in braces ``{...}``, else the first informative prose sentence, else the docstring.

The sandbox stays the judge of validity: a parsed answer with code is always evaluated there.
``status_hint`` is set only when no evaluable code exists: ``missing_function`` (no code, or
code without the function) or ``syntax_error`` (code that does not parse).
"""

from __future__ import annotations

import ast
import builtins
import re
import textwrap
from dataclasses import dataclass, field

from aad_kit.code import bound_names
from aad_kit.code import rename_identifier as _rename
from aad_kit.result import Status
from aad_kit.tasks import Task, get_task

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S)
_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_CODE_START = re.compile(r"^([ \t]*)(?:import\s+\w|from\s+[\w.]+\s+import\s|def\s+\w|async\s+def\s|class\s+\w|@\w)")
_PY_LANGS = {"", "python", "py", "python3", "python3.10", "python3.11", "python3.12", "py3"}

# Names a model often uses without importing, and the import that provides them.
KNOWN_IMPORTS: dict[str, str] = {
    "np": "import numpy as np",
    "numpy": "import numpy",
    "math": "import math",
    "random": "import random",
    "itertools": "import itertools",
    "heapq": "import heapq",
    "collections": "import collections",
    "functools": "import functools",
    "statistics": "import statistics",
    "bisect": "import bisect",
    "defaultdict": "from collections import defaultdict",
    "Counter": "from collections import Counter",
    "deque": "from collections import deque",
    "OrderedDict": "from collections import OrderedDict",
    "lru_cache": "from functools import lru_cache",
    "reduce": "from functools import reduce",
    "partial": "from functools import partial",
    "permutations": "from itertools import permutations",
    "combinations": "from itertools import combinations",
    "product": "from itertools import product",
    "sqrt": "from math import sqrt",
    "ceil": "from math import ceil",
    "floor": "from math import floor",
    "pi": "from math import pi",
    "exp": "from math import exp",
    "log": "from math import log",
    **{
        name: f"from typing import {name}"
        for name in ("List", "Tuple", "Dict", "Optional", "Sequence", "Any", "Iterable",
                     "Callable", "Union", "Set")
    },  # fmt: skip
}

_BOILERPLATE = re.compile(
    r"^(sure|certainly|of course|okay|ok|great|absolutely|here(?:'s| is| are)|below|"
    r"i(?:'ll| will| have| can)|let(?:'s| me)|the (?:code|function|following|answer)|"
    r"answer|code|solution|python)\b",
    re.I,
)
_IDEA_LINE = re.compile(
    r"^[ \t>*#_\-\d.)]*[*_]*\s*(?:new\s+)?(?:idea|algorithm idea|thought|description)\s*[*_]*\s*[:：]"
    r"[ \t*_]*(.*)$",
    re.I | re.M,
)
_BRACES = re.compile(r"\{([^{}]{10,800})\}")


@dataclass
class ParsedAnswer:
    """What :func:`parse_answer` extracted from one answer."""

    code: str | None
    idea: str
    notes: list[str] = field(default_factory=list)
    status_hint: Status | None = None  # set only when there is no evaluable code
    renamed_from: str | None = None
    added_imports: list[str] = field(default_factory=list)

    @property
    def has_code(self) -> bool:
        return self.code is not None and self.status_hint is None


# ---------------------------------------------------------------------------------------------
def _target(task: str | Task | None, function_name: str | None, n_args: int | None) -> tuple[str, int | None]:
    if function_name is None:
        if task is None:
            raise ValueError("give a task or a function_name")
        t = get_task(task)
        function_name = t.function_name
        if n_args is None:
            n_args = signature_arity(t.signature)
    return function_name, n_args


def signature_arity(signature: str) -> int | None:
    """Number of positional parameters of a ``def ...:`` line (None if it cannot be read)."""
    try:
        tree = ast.parse(signature.strip() + "\n    pass\n")
    except SyntaxError:
        return None
    fn = tree.body[0] if tree.body else None
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    return len(fn.args.posonlyargs) + len(fn.args.args)


def _accepts(fn: ast.FunctionDef | ast.AsyncFunctionDef, n: int | None) -> bool:
    if n is None:
        return True
    a = fn.args
    total = len(a.posonlyargs) + len(a.args)
    required = total - len(a.defaults)
    kwonly_required = any(d is None for d in a.kw_defaults)
    if kwonly_required:
        return False
    return required <= n and (n <= total or a.vararg is not None)


def _parse(src: str) -> ast.Module | None:
    try:
        return ast.parse(src)
    except (SyntaxError, ValueError):
        return None


def _top_functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _defines(tree: ast.Module, name: str) -> bool:
    return any(f.name == name for f in _top_functions(tree))


def _clean_block(src: str) -> tuple[str, ast.Module | None, list[str]]:
    """Dedent, then parse; on failure cut leading / trailing prose at top-level lines."""
    notes: list[str] = []
    src = textwrap.dedent(src.replace("\r\n", "\n").replace("\r", "\n")).strip("\n")
    tree = _parse(src)
    if tree is not None:
        return src + "\n", tree, notes
    if "\t" in src:
        expanded = src.expandtabs(4)
        tree = _parse(expanded)
        if tree is not None:
            return expanded + "\n", tree, ["expanded tabs"]
    lines = src.split("\n")
    # leading prose: start at the first line that looks like the start of code
    start = next((i for i, ln in enumerate(lines) if _CODE_START.match(ln)), None)
    if start is None:
        return src + "\n", None, notes
    if start > 0:
        lines = textwrap.dedent("\n".join(lines[start:])).split("\n")
        notes.append("dropped text before the code")
        tree = _parse("\n".join(lines))
        if tree is not None:
            return "\n".join(lines).strip("\n") + "\n", tree, notes
    # trailing prose: the longest prefix ending at a top-level line boundary that parses
    for i in range(len(lines) - 1, 0, -1):
        ln = lines[i]
        if not ln.strip() or ln[0] in " \t":
            continue
        head = "\n".join(lines[:i]).rstrip()
        tree = _parse(head)
        if tree is not None and _top_functions(tree):
            notes.append("dropped text after the code")
            return head + "\n", tree, notes
    return "\n".join(lines).strip("\n") + "\n", None, notes


def _bare_code(text: str) -> str | None:
    """Code written without fences: from the first code-looking line, same indent or deeper."""
    lines = text.split("\n")
    for i, ln in enumerate(lines):
        m = _CODE_START.match(ln)
        if not m:
            continue
        indent = len(m.group(1).expandtabs(4))
        if indent == 0:
            return "\n".join(lines[i:])
        kept = [ln]
        for nxt in lines[i + 1 :]:
            if nxt.strip() and len(nxt.expandtabs(4)) - len(nxt.expandtabs(4).lstrip()) < indent:
                break
            kept.append(nxt)
        return "\n".join(kept)
    return None


def _missing_imports(tree: ast.Module) -> list[str]:
    return sorted({KNOWN_IMPORTS[name] for name in _undefined(tree) if name in KNOWN_IMPORTS})


def _add_imports(src: str, tree: ast.Module, imports: list[str]) -> str:
    lines = src.split("\n")
    at = 0
    for node in tree.body:  # after a module docstring and __future__ imports
        is_doc = (
            node is tree.body[0]
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        )
        if is_doc or (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            at = node.end_lineno or at
        else:
            break
    return "\n".join(lines[:at] + imports + lines[at:])


def _is_demo(node: ast.stmt, name: str) -> bool:
    """``if __name__ == "__main__":`` blocks and top-level calls of the target or print."""
    if isinstance(node, ast.If):
        t = node.test
        return (
            isinstance(t, ast.Compare)
            and isinstance(t.left, ast.Name)
            and t.left.id == "__name__"
        )
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        f = node.value.func
        return isinstance(f, ast.Name) and f.id in (name, "print")
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Call):
        f = node.value.func
        return isinstance(f, ast.Name) and f.id == name
    return False


def _drop_demo(src: str, tree: ast.Module, name: str) -> tuple[str, bool]:
    spans = [(n.lineno, n.end_lineno or n.lineno) for n in tree.body if _is_demo(n, name)]
    if not spans:
        return src, False
    lines = src.split("\n")
    for lo, hi in sorted(spans, reverse=True):
        del lines[lo - 1 : hi]
    return "\n".join(lines).rstrip("\n") + "\n", True


def _undefined(tree: ast.Module) -> set[str]:
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return used - bound_names(tree, include_declarations=True) - set(dir(builtins))


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _merge_helpers(
    code: str, tree: ast.Module, cleaned: list[tuple[str, ast.Module | None, list[str]]], choice: int
) -> tuple[str, list[int]] | None:
    """Prepend other blocks that define names the chosen code uses but does not define."""
    missing = _undefined(tree) - set(KNOWN_IMPORTS)
    if not missing:
        return None
    parts: list[str] = []
    used: list[int] = []
    for i, (other, other_tree, _) in enumerate(cleaned):
        if i == choice or other_tree is None or other.strip() == code.strip():
            continue
        provided = _top_level_names(other_tree) & missing
        if provided:
            parts.append(other.rstrip("\n"))
            used.append(i + 1)
            missing -= provided
    if not parts:
        return None
    return "\n\n".join(parts + [code.rstrip("\n")]) + "\n", used


# ---------------------------------------------------------------------------------------------
def _clean_idea(text: str) -> str:
    text = re.sub(r"[*_`]{1,3}", "", text)
    text = re.sub(r"^[\s>#\-\d.)]+", "", text)
    text = " ".join(text.split()).strip(" :-")
    if len(text) > 300:
        text = text[:297].rstrip() + "..."
    return text


def _first_sentence(text: str) -> str:
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    return m.group(1) if m else text


def _docstring_idea(code: str | None, name: str) -> str:
    tree = _parse(code) if code else None
    if tree is None:
        return ""
    for fn in _top_functions(tree):
        if fn.name == name:
            doc = ast.get_docstring(fn) or ""
            first = doc.strip().split("\n\n")[0]
            return _clean_idea(_first_sentence(" ".join(first.split())))
    return ""


def extract_idea(prose: str, code: str | None = None, function_name: str = "") -> str:
    """The one-line idea: ``Idea:`` line, ``{...}`` text, first prose sentence, docstring."""
    for source in (prose, code or ""):
        for m in _IDEA_LINE.finditer(source):
            rest = m.group(1).strip()
            if source is code:
                rest = rest.lstrip("# ")
            if not _clean_idea(rest):  # "Idea:" alone on its line: take the next line
                after = source[m.end() :].lstrip("\n").split("\n", 1)[0]
                rest = after if not after.lstrip().startswith("```") else ""
            if _clean_idea(rest):
                return _clean_idea(rest)
    m = _BRACES.search(prose)
    if m and re.search(r"[A-Za-z]{3,}\s+[A-Za-z]", m.group(1)):
        return _clean_idea(m.group(1))
    for raw in prose.split("\n"):
        line = _clean_idea(raw)
        header = raw.rstrip().rstrip("*_` ").endswith(":")
        if len(line) < 8:
            continue
        if _BOILERPLATE.match(line) and (header or len(line) < 40):
            continue
        if header and len(line.split()) <= 3:
            continue
        return _clean_idea(_first_sentence(line))
    return _docstring_idea(code, function_name)


# ---------------------------------------------------------------------------------------------
def parse_answer(
    text: str | None,
    task: str | Task | None = None,
    *,
    function_name: str | None = None,
    n_args: int | None = None,
) -> ParsedAnswer:
    """Extract the idea and the code of ``task``'s function from a model's answer.

    Give ``task`` (its ``function_name`` and the arity of its ``signature`` are used) or
    ``function_name`` (and optionally ``n_args``, the number of positional parameters).
    """
    name, arity = _target(task, function_name, n_args)
    notes: list[str] = []
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    if _THINK.search(text):
        text = _THINK.sub("", text)
        notes.append("ignored <think> block")
    elif "</think>" in text:  # opening tag in the chat template: drop everything before
        text = text.split("</think>", 1)[1]
        notes.append("ignored reasoning before </think>")

    matches = list(_FENCE.finditer(text))
    fences = [(m.group(1).lower(), m.group(2), m.span()) for m in matches]
    if matches and not matches[-1].group(0).rstrip().endswith("```"):
        notes.append("unclosed code fence (truncated answer?)")
    prose_parts, last = [], 0
    for _, _, (lo, hi) in fences:
        prose_parts.append(text[last:lo])
        last = hi
    prose_parts.append(text[last:])
    prose = "\n".join(prose_parts)

    # candidates in preference order: python fences, other fences, bare code in the prose
    blocks = [b for lang, b, _ in fences if lang in _PY_LANGS] + [
        b for lang, b, _ in fences if lang not in _PY_LANGS
    ]
    bare = _bare_code(prose if fences else text)
    if bare is not None:
        blocks.append(bare)
        if not fences:
            prose = text.replace(bare, "\n")
    blocks = [b for b in blocks if b.strip()]
    if not blocks:
        notes.append("no code found")
        return ParsedAnswer(None, extract_idea(prose, None, name), notes, Status.MISSING_FUNCTION)

    cleaned = [_clean_block(b) for b in blocks]
    n_fenced = sum(1 for lang, b, _ in fences if b.strip())
    choice: int | None = None
    rename_from: str | None = None
    for i, (_, tree, _) in enumerate(cleaned):  # 1. defines the target function
        if tree is not None and _defines(tree, name):
            choice = i
            break
    if choice is None:  # 2. exactly one function of the right arity under another name
        for i, (_, tree, _) in enumerate(cleaned):
            if tree is None:
                continue
            fits = [f for f in _top_functions(tree) if _accepts(f, arity)]
            if len(fits) == 1:
                choice, rename_from = i, fits[0].name
                break
    if choice is None:  # 3. first parseable block: the function is missing
        parseable = [i for i, (_, tree, _) in enumerate(cleaned) if tree is not None]
        if parseable:
            code, _, block_notes = cleaned[parseable[0]]
            notes += block_notes + [f"no function `{name}` defined"]
            idea = extract_idea(prose, code, name)
            return ParsedAnswer(code, idea, notes, Status.MISSING_FUNCTION)
        code, _, block_notes = cleaned[0]  # 4. nothing parses
        notes += block_notes + ["code does not parse"]
        return ParsedAnswer(code, extract_idea(prose, code, name), notes, Status.SYNTAX_ERROR)

    code, tree, block_notes = cleaned[choice]
    assert tree is not None
    notes += block_notes
    if choice >= n_fenced and n_fenced:
        notes.append("code taken from outside the fences")
    elif choice >= n_fenced:
        notes.append("code without fences")
    elif n_fenced > 1:
        notes.append(f"picked code block {choice + 1} of {n_fenced}")
    if rename_from is not None:
        code = _rename(code, rename_from, name)
        notes.append(f"renamed function `{rename_from}` to `{name}`")
        tree = _parse(code) or tree
    merged = _merge_helpers(code, tree, cleaned, choice)
    if merged is not None:
        code, used = merged
        tree = _parse(code) or tree
        notes.append("merged helper definitions from code block(s) " + ", ".join(map(str, used)))
    code, dropped = _drop_demo(code, tree, name)
    if dropped:
        notes.append("removed demo / __main__ code")
        tree = _parse(code) or tree
    added = _missing_imports(tree)
    if added:
        code = _add_imports(code, tree, added)
        notes.append("added missing import(s): " + "; ".join(added))
    if choice >= n_fenced:  # bare code: the prose is every line that is not code
        code_lines = {ln.strip() for ln in code.split("\n") if ln.strip()}
        prose = "\n".join(ln for ln in text.split("\n") if ln.strip() not in code_lines)
    idea = extract_idea(prose, code, name)
    if not idea:
        notes.append("no idea found")
    return ParsedAnswer(code, idea, notes, None, rename_from, added)


__all__ = ["KNOWN_IMPORTS", "ParsedAnswer", "extract_idea", "parse_answer", "signature_arity"]
