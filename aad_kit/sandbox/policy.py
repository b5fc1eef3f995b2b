"""Static check of candidate source, run in the parent before anything executes.

This is the first (and cheapest) of the sandbox's layers; it turns the common ways generated
code goes wrong or misbehaves into a named status with a message a model can act on:

- ``SYNTAX_ERROR``: the source does not parse (line and column given);
- ``MISSING_FUNCTION``: the task's function is not defined at module top level;
- ``FORBIDDEN_IMPORT``: an import outside the allow-list, a relative import, a private or
  blocked submodule (``numpy.testing``, ``numpy._core``);
- ``FORBIDDEN_CALL``: a blocked builtin (``open``, ``eval``, ``__import__`` ...), a
  double-underscore name or attribute outside a small safe set (``().__class__.__bases__``), an
  interpreter-internals attribute (``gi_frame``, ``f_globals``), a file/OS entry point of numpy
  (``np.load``, ``arr.tofile``), a private attribute of an imported module (``random._os``) or
  an assignment to an imported module's attribute (``np.sum = ...``).

The same name lists drive the runtime guard (:mod:`aad_kit.sandbox.guard`), which catches what
static analysis cannot see (``getattr(x, "__cl" + "ass__")``, ``statistics.sys``). Neither is a
security boundary on its own: the worker's process-level limits are (see
:mod:`aad_kit.sandbox.worker`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass

from aad_kit.code import bound_names
from aad_kit.result import Status
from aad_kit.sandbox.config import DEFAULT_ALLOWED_IMPORTS

# Builtins a candidate may not use: file access, dynamic code, interpreter introspection,
# interactive helpers (``help``/``input`` would read stdin).
BLOCKED_BUILTINS: frozenset[str] = frozenset(
    {
        "open",
        "exec",
        "eval",
        "compile",
        "__import__",
        "input",
        "breakpoint",
        "globals",
        "locals",
        "vars",
        "exit",
        "quit",
        "help",
        "copyright",
        "credits",
        "license",
    }
)

# Double-underscore attributes that are harmless and common in ordinary code
# (``super().__init__()``, ``type(x).__name__``, explicit operator calls).
SAFE_DUNDER_ATTRS: frozenset[str] = frozenset(
    {
        "__init__",
        "__class__",  # the same as type(x); what would make it dangerous (__bases__,
        # __subclasses__, __globals__ ...) stays blocked
        "__name__",
        "__qualname__",
        "__doc__",
        "__post_init__",
        "__len__",
        "__iter__",
        "__next__",
        "__contains__",
        "__getitem__",
        "__setitem__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__eq__",
        "__ne__",
        "__hash__",
        "__repr__",
        "__str__",
        "__add__",
        "__sub__",
        "__mul__",
    }
)
# Double-underscore *names* a candidate may read (``if __name__ == "__main__":``).
SAFE_DUNDER_NAMES: frozenset[str] = frozenset({"__name__", "__doc__"})
# ... and assign in a class body. Not ``__annotations__``/``__dataclass_fields__``/
# ``__abstractmethods__``: stdlib code trusts those to hold identifiers.
CLASS_BODY_DUNDERS: frozenset[str] = SAFE_DUNDER_ATTRS | frozenset(
    {"__slots__", "__match_args__", "__module__"}
)

# Attribute names blocked on any object: frame/code walking (the classic way from a generator
# or traceback back to the worker's globals), reflection helpers that bypass the getattr guard
# or evaluate strings, and numpy's file / foreign-memory entry points that exist as methods.
FRAME_ATTRS: frozenset[str] = frozenset(
    {
        "f_back",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_code",
        "f_trace",
        "tb_frame",
        "tb_next",
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "ag_frame",
        "ag_code",
        "ag_await",
        "co_code",
    }
)
BLOCKED_ATTRS: frozenset[str] = FRAME_ATTRS | frozenset(
    {
        # getattr-by-string and string evaluation in the standard library
        "attrgetter",
        "methodcaller",
        "update_wrapper",  # functools.update_wrapper(w, f, assigned=("__globals__",))
        "wraps",
        "get_type_hints",
        "ForwardRef",
        "singledispatch",
        "singledispatchmethod",
        "Formatter",
        # numpy: files and foreign memory (names distinctive enough to block everywhere)
        "tofile",
        "fromfile",
        "dump",
        "memmap",
        "open_memmap",
        "DataSource",
        "genfromtxt",
        "loadtxt",
        "savetxt",
        "savez",
        "savez_compressed",
        "fromregex",
        "ctypes",
        "ctypeslib",
        "f2py",
        "distutils",
    }
)
# Blocked only on numpy modules (too common as ordinary attribute names to block everywhere:
# a bin packing heuristic may well have ``bin.load``). ``lib`` and ``testing`` are whole
# sub-packages with file access and test runners.
NUMPY_BLOCKED_ATTRS: frozenset[str] = frozenset({"save", "load", "lib", "testing", "test"})

# Methods a candidate may not define: numpy trusts them to describe real memory (a raw
# address), which would give the candidate arbitrary reads and writes in its own process.
BLOCKED_DEFINITIONS: frozenset[str] = frozenset({"__array_interface__", "__array_struct__"})

_IMPORT_CATCHERS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def attribute_problem(name: str, module: str | None = None) -> str | None:
    """Why reading attribute ``name`` is forbidden (None if it is fine).

    ``module`` is the dotted name of the module the attribute is read from, when known.
    """
    if is_dunder(name) and name not in SAFE_DUNDER_ATTRS:
        return (
            f"the double-underscore attribute `{name}` is not allowed (it reaches interpreter "
            "internals); use isinstance()/type()/len() and ordinary attributes instead"
        )
    if name in FRAME_ATTRS:
        return f"the attribute `{name}` (frame/code introspection) is not allowed"
    if name in BLOCKED_ATTRS:
        return (
            f"the attribute `{name}` is not allowed in the sandbox (file access, raw memory, or "
            "attribute access / evaluation by string); compute the result directly"
        )
    if module is not None:
        top = module.split(".")[0]
        if name.startswith("_"):
            return (
                f"the private attribute `{module}.{name}` is not allowed; use the module's "
                "public API"
            )
        if top == "numpy" and name in NUMPY_BLOCKED_ATTRS:
            return (
                f"`{module}.{name}` is not allowed in the sandbox (numpy file I/O, test runner "
                "and `numpy.lib` are blocked); keep everything in memory"
            )
    return None


def module_problem(dotted: str, allowed: Iterable[str]) -> str | None:
    """Why importing module ``dotted`` is forbidden (None if it is fine)."""
    if dotted == "__future__":
        return None
    allowed = frozenset(allowed)
    parts = dotted.split(".")
    if parts[0] not in allowed:
        return (
            f"module '{parts[0]}' is not allowed in the sandbox; allowed modules: "
            f"{', '.join(sorted(allowed))}"
        )
    for i, part in enumerate(parts[1:], start=1):
        problem = attribute_problem(part, ".".join(parts[:i]))
        if problem is not None:
            return f"module '{dotted}' is not allowed: {problem}"
    return None


@dataclass(frozen=True)
class PolicyViolation:
    status: Status
    message: str
    line: int | None = None


class _Checker(ast.NodeVisitor):
    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed
        self.problems: list[PolicyViolation] = []
        self.module_aliases: dict[str, str] = {}  # local name -> dotted module name
        self.bound: set[str] = set()
        self._class_depth = 0
        self._tolerant_import_depth = 0  # inside ``try: ... except ImportError``

    # -- helpers ---------------------------------------------------------------------------
    def add(self, status: Status, node: ast.AST, message: str) -> None:
        line = getattr(node, "lineno", None)
        where = f"line {line}: " if line else ""
        self.problems.append(PolicyViolation(status, where + message, line))

    def module_of(self, node: ast.AST) -> str | None:
        """Dotted module name an expression refers to, if it is an imported module alias."""
        if isinstance(node, ast.Name):
            return self.module_aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.module_of(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def check_attr(self, node: ast.AST, name: str, owner: ast.AST | None) -> None:
        module = self.module_of(owner) if owner is not None else None
        problem = attribute_problem(name, module)
        if problem:
            self.add(Status.FORBIDDEN_CALL, node, problem)

    # -- imports ---------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            problem = module_problem(alias.name, self.allowed)
            if problem and not (
                self._tolerant_import_depth and alias.name.split(".")[0] not in self.allowed
            ):
                self.add(Status.FORBIDDEN_IMPORT, node, f"`import {alias.name}`: {problem}")
            if alias.asname:
                self.module_aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.module_aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:
            self.add(
                Status.FORBIDDEN_IMPORT,
                node,
                "relative imports are not allowed; the program is a single module",
            )
            return
        if module == "__future__":
            return
        problem = module_problem(module, self.allowed)
        if problem:
            if not (self._tolerant_import_depth and module.split(".")[0] not in self.allowed):
                self.add(Status.FORBIDDEN_IMPORT, node, f"`from {module} import ...`: {problem}")
            return
        for alias in node.names:
            if alias.name == "*":
                continue
            problem = attribute_problem(alias.name, module)
            if problem:
                self.add(Status.FORBIDDEN_CALL, node, f"`from {module} import {alias.name}`: {problem}")
            # ``from numpy import random`` binds a (sub)module: track it conservatively
            self.module_aliases[alias.asname or alias.name] = f"{module}.{alias.name}"

    def visit_Try(self, node: ast.Try) -> None:
        tolerant = any(_catches_import_error(h) for h in node.handlers)
        self._tolerant_import_depth += tolerant
        for stmt in node.body:
            self.visit(stmt)
        self._tolerant_import_depth -= tolerant
        for part in (node.handlers, node.orelse, node.finalbody):
            for stmt in part:
                self.visit(stmt)

    visit_TryStar = visit_Try

    # -- names and attributes --------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if is_dunder(name):
            in_class_store = self._class_depth and isinstance(node.ctx, ast.Store)
            if name not in SAFE_DUNDER_NAMES and not (in_class_store and name in CLASS_BODY_DUNDERS):
                self.add(
                    Status.FORBIDDEN_CALL,
                    node,
                    f"the name `{name}` is not allowed (double-underscore names reach "
                    "interpreter internals)",
                )
        elif name in BLOCKED_BUILTINS and isinstance(node.ctx, ast.Load) and name not in self.bound:
            self.add(
                Status.FORBIDDEN_CALL,
                node,
                f"`{name}` is not available in the sandbox (no files, no dynamic code, no "
                "introspection, no interaction); compute the answer directly",
            )

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.check_attr(node, node.attr, node.value)
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            module = self.module_of(node.value)
            if module is not None:
                self.add(
                    Status.FORBIDDEN_CALL,
                    node,
                    f"assigning to `{module}.{node.attr}` modifies a shared module; define your "
                    "own function or variable instead",
                )
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Name)
            and func.id in {"getattr", "hasattr", "setattr", "delattr"}
            and func.id not in self.bound
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            self.check_attr(node, node.args[1].value, node.args[0])
            if func.id in {"setattr", "delattr"} and self.module_of(node.args[0]) is not None:
                self.add(
                    Status.FORBIDDEN_CALL,
                    node,
                    f"{func.id}() on an imported module is not allowed; define your own "
                    "function or variable instead",
                )
        self.generic_visit(node)

    def visit_MatchClass(self, node: ast.MatchClass) -> None:  # ``case C(attr=...)`` reads attrs
        for attr in node.kwd_attrs:
            self.check_attr(node, attr, None)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for dec in node.decorator_list:
            self.visit(dec)
        for base in node.bases:
            self.visit(base)
        for kw in node.keywords:
            self.visit(kw)
        self._class_depth += 1
        for stmt in node.body:
            self.visit(stmt)
        self._class_depth -= 1

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        # defining dunder methods (``__lt__``) is ordinary; only *using* dunders is checked
        if node.name in BLOCKED_DEFINITIONS:
            self.add(
                Status.FORBIDDEN_CALL,
                node,
                f"defining `{node.name}` is not allowed (it hands numpy a raw memory address)",
            )
        self._class_depth, saved = 0, self._class_depth
        self.generic_visit(node)
        self._class_depth = saved

    visit_AsyncFunctionDef = visit_FunctionDef


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in _IMPORT_CATCHERS for t in types)


def _bound_names(tree: ast.AST) -> set[str]:
    """Every name the module binds anywhere (a shadowed builtin is then not the builtin)."""
    return bound_names(tree) - {"__import__"}


def _defines(tree: ast.Module, function_name: str) -> bool:
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == function_name:
                return True
        elif isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == function_name for t in node.targets):
                return True
        elif isinstance(node, ast.AnnAssign):
            if isinstance(node.target, ast.Name) and node.target.id == function_name:
                return True
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name) == function_name for a in node.names):
                return True
    return False


def check_code(
    code: str,
    function_name: str,
    *,
    allowed_imports: Iterable[str] = DEFAULT_ALLOWED_IMPORTS,
    enforce_policy: bool = True,
    signature: str | None = None,
) -> PolicyViolation | None:
    """The first problem found in ``code`` (by line), or None if it may run.

    With ``enforce_policy=False`` only syntax and the presence of ``function_name`` are checked.
    """
    if not isinstance(code, str):
        return PolicyViolation(Status.SYNTAX_ERROR, f"code must be a str, not {type(code).__name__}")
    try:
        tree = ast.parse(code, filename="<candidate>")
    except SyntaxError as e:
        text = (e.text or "").rstrip("\n")
        where = f"line {e.lineno}" + (f", column {e.offset}" if e.offset else "")
        shown = f": {text.strip()}" if text.strip() else ""
        return PolicyViolation(
            Status.SYNTAX_ERROR, f"SyntaxError: {e.msg} ({where}){shown}", e.lineno
        )
    except (ValueError, MemoryError, RecursionError) as e:  # null bytes, absurd nesting
        return PolicyViolation(Status.SYNTAX_ERROR, f"the source cannot be parsed: {e}")

    if not _defines(tree, function_name):
        expected = f" `{signature.strip()}`" if signature else ""
        return PolicyViolation(
            Status.MISSING_FUNCTION,
            f"the program must define the function `{function_name}` at module top level"
            f"{expected}; keep its name and signature",
        )
    if not enforce_policy:
        return None

    checker = _Checker(frozenset(allowed_imports))
    checker.bound = _bound_names(tree)
    checker.visit(tree)
    if not checker.problems:
        return None
    problems = sorted(checker.problems, key=lambda p: p.line or 0)
    first = problems[0]
    message = first.message
    if len(problems) > 1:
        others = "; ".join(p.message for p in problems[1:4])
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        message += f"\nAlso: {others}{more}"
    return PolicyViolation(first.status, message, first.line)


__all__ = [
    "BLOCKED_ATTRS",
    "BLOCKED_DEFINITIONS",
    "CLASS_BODY_DUNDERS",
    "BLOCKED_BUILTINS",
    "FRAME_ATTRS",
    "NUMPY_BLOCKED_ATTRS",
    "SAFE_DUNDER_ATTRS",
    "SAFE_DUNDER_NAMES",
    "PolicyViolation",
    "attribute_problem",
    "check_code",
    "is_dunder",
    "module_problem",
]
