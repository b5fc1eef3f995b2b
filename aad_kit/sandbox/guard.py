"""The runtime half of the policy: the namespace a candidate's code executes in.

Static analysis cannot see ``getattr(x, "__cl" + "ass__")`` or that ``statistics.sys`` is the
``sys`` module. So the candidate runs with

- a restricted copy of the builtins: the blocked ones raise :class:`ForbiddenCall`;
  ``getattr``/``hasattr``/``setattr``/``delattr`` check the attribute name first;
  ``__import__`` only admits allow-listed modules (:class:`ForbiddenImport` otherwise);
- *module proxies* instead of real modules: ``import numpy as np`` binds a read-only
  :class:`SandboxedModule` that hands out the real functions and classes but refuses private
  names, blocked entry points (``np.load``) and any module outside the allow-list
  (``statistics.sys``, ``enum.bltns``), and cannot be assigned to (``np.sum = ...``).
  Attributes are cached on the proxy, so after the first access a lookup costs what a normal
  module attribute costs.

This is a Python-level filter, not a security boundary: it keeps honest-but-sloppy and
casually hostile code from reaching the OS, and it names what went wrong. The process-level
limits in the worker are what contain code that gets past it.
"""

from __future__ import annotations

import builtins
import keyword
import sys
import types
from collections.abc import Iterable
from typing import Any

from aad_kit.sandbox.policy import (
    BLOCKED_BUILTINS,
    attribute_problem,
    is_dunder,
    module_problem,
)


class ForbiddenImport(ImportError):
    """The candidate imported (or reached) a module outside the allow-list."""


class ForbiddenCall(Exception):
    """The candidate used a blocked builtin or attribute.

    Deliberately not an AttributeError: ``from m import x`` falls back to ``sys.modules`` on an
    AttributeError, which would hand out the real module.
    """


_REAL: dict[int, types.ModuleType] = {}  # id(proxy) -> real module (kept off the proxy itself)


class SandboxedModule(types.ModuleType):
    """Read-only view of an allow-listed module (see module docstring). No public methods."""

    def __getattr__(self, name: str) -> Any:
        real = _REAL[id(self)]
        guard: Guard = _GUARDS[id(self)]
        name = _plain_str(name)
        if name == "__all__":
            return guard.public_names(real)
        problem = attribute_problem(name, real.__name__)
        if problem is None and name.startswith("_"):
            problem = f"the private attribute `{real.__name__}.{name}` is not allowed"
        if problem:
            raise ForbiddenCall(problem)
        try:
            value = getattr(real, name)
        except AttributeError:
            value = sys.modules.get(f"{real.__name__}.{name}")
            if value is None:
                raise AttributeError(f"module '{real.__name__}' has no attribute '{name}'") from None
        value = guard.wrap(value, f"{real.__name__}.{name}")
        self.__dict__[name] = value
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise ForbiddenCall(
            f"assigning to `{self.__name__}.{name}` is not allowed; define your own function or "
            "variable instead"
        )

    def __delattr__(self, name: str) -> None:
        raise ForbiddenCall(f"deleting `{self.__name__}.{name}` is not allowed")

    def __dir__(self) -> list[str]:
        return list(_GUARDS[id(self)].public_names(_REAL[id(self)]))

    def __repr__(self) -> str:
        return f"<module '{self.__name__}' (sandboxed)>"


_GUARDS: dict[int, Guard] = {}


def _plain_str(name: Any) -> str:
    """``name`` as an exact ``str`` (a str subclass could lie in ``startswith``/``__eq__``)."""
    if type(name) is str:
        return name
    if isinstance(name, str):
        return str.__str__(name)
    raise TypeError(f"attribute name must be string, not '{type(name).__name__}'")


class Guard:
    """Builds the restricted builtins and module proxies for one allow-list."""

    def __init__(self, allowed_imports: Iterable[str]) -> None:
        self.allowed = frozenset(allowed_imports)
        self._proxies: dict[int, SandboxedModule] = {}
        self._public: dict[int, list[str]] = {}

    # -- modules ---------------------------------------------------------------------------
    def wrap(self, value: Any, where: str) -> Any:
        if not isinstance(value, types.ModuleType):
            return value
        if isinstance(value, SandboxedModule):
            return value
        problem = module_problem(value.__name__, self.allowed)
        if problem:
            raise ForbiddenImport(f"`{where}` is the module '{value.__name__}': {problem}")
        proxy = self._proxies.get(id(value))
        if proxy is None:
            proxy = SandboxedModule(value.__name__, getattr(value, "__doc__", None))
            _REAL[id(proxy)] = value
            _GUARDS[id(proxy)] = self
            self._proxies[id(value)] = proxy
        return proxy

    def public_names(self, real: types.ModuleType) -> list[str]:
        names = self._public.get(id(real))
        if names is None:
            candidates = getattr(real, "__all__", None)
            if candidates is None:
                candidates = [n for n in vars(real) if not n.startswith("_")]
            names = []
            for n in candidates:
                if not isinstance(n, str) or n.startswith("_"):
                    continue
                if attribute_problem(n, real.__name__) is not None:
                    continue
                value = getattr(real, n, None)
                if (
                    isinstance(value, types.ModuleType)
                    and module_problem(value.__name__, self.allowed) is not None
                ):
                    continue
                names.append(n)
            self._public[id(real)] = names
        return list(names)

    def import_(
        self,
        name: str,
        globals: Any = None,
        locals: Any = None,
        fromlist: Any = (),
        level: int = 0,
    ) -> Any:
        name = _plain_str(name)
        if level != 0:
            raise ForbiddenImport("relative imports are not allowed; the program is a single module")
        if name == "__future__":
            return builtins.__import__(name, None, None, fromlist, 0)
        if (
            _is_c_level_import(fromlist)
            and name.partition(".")[0] in self.allowed
            and name in sys.modules  # already loaded by the package itself: nothing new runs
        ):
            # numpy's C code imports its own submodules lazily (``ndarray.min(axis=...)`` ->
            # ``numpy._core._methods``) through PyImport_Import, which looks ``__import__`` up
            # in the *calling frame's* builtins, i.e. ours. Its fromlist is a list, which
            # bytecode imports never pass (see _is_c_level_import), and the module is consumed
            # in C. Refusing it would reject ordinary numpy code.
            return builtins.__import__(name, globals, locals, fromlist, 0)
        problem = module_problem(name, self.allowed)
        if problem:
            raise ForbiddenImport(problem)
        names = tuple(_plain_str(n) for n in (fromlist or ()))
        for item in names:
            if item == "*":
                continue
            problem = attribute_problem(item, name)
            if problem is None and item.startswith("_"):
                problem = f"the private name `{name}.{item}` is not allowed"
            if problem:
                raise ForbiddenCall(f"`from {name} import {item}`: {problem}")
        module = builtins.__import__(name, None, None, names, 0)
        return self.wrap(module, name)

    # -- builtins --------------------------------------------------------------------------
    def getattr_(self, obj: Any, name: Any, *default: Any) -> Any:
        name = self._check_attr(obj, name)
        return getattr(obj, name, *default)

    def hasattr_(self, obj: Any, name: Any) -> bool:
        name = self._check_attr(obj, name)
        return hasattr(obj, name)

    def setattr_(self, obj: Any, name: Any, value: Any) -> None:
        name = self._check_attr(obj, name)
        setattr(obj, name, value)

    def delattr_(self, obj: Any, name: Any) -> None:
        name = self._check_attr(obj, name)
        delattr(obj, name)

    def _check_attr(self, obj: Any, name: Any) -> str:
        name = _plain_str(name)
        module = obj.__name__ if isinstance(obj, SandboxedModule) else None
        problem = attribute_problem(name, module)
        if problem:
            raise ForbiddenCall(problem)
        return name

    def builtins(self) -> dict[str, Any]:
        restricted = dict(vars(builtins))
        for name in BLOCKED_BUILTINS:
            restricted[name] = _blocked(name)
        restricted["__import__"] = self.import_
        restricted["getattr"] = self.getattr_
        restricted["hasattr"] = self.hasattr_
        restricted["setattr"] = self.setattr_
        restricted["delattr"] = self.delattr_
        # drop dunder entries a candidate has no business with (loader/spec of builtins)
        for name in list(restricted):
            if is_dunder(name) and name not in {"__build_class__", "__debug__", "__import__", "__name__"}:
                del restricted[name]
        return restricted


def _is_c_level_import(fromlist: Any) -> bool:
    """True for the call CPython's ``PyImport_Import`` makes from C.

    It passes a *list* as fromlist (``[]`` on 3.11+, ``['__doc__']`` before); bytecode
    ``import`` statements pass ``None`` or a tuple, and candidate code cannot call
    ``__import__`` itself.
    """
    if type(fromlist) is not list:
        return False
    return len(fromlist) == 0 or (len(fromlist) == 1 and fromlist[0] == "__doc__")


def _blocked(name: str) -> Any:
    def blocked(*args: Any, **kwargs: Any) -> Any:
        raise ForbiddenCall(
            f"`{name}` is not available in the sandbox (no files, no dynamic code, no "
            "introspection, no interaction)"
        )

    blocked.__name__ = blocked.__qualname__ = name
    return blocked


def _field_setattr(self: Any, name: str, value: Any) -> None:
    if name == "name" and value is not None:
        if type(value) is not str or not value.isidentifier() or keyword.iskeyword(value):
            raise ForbiddenCall(f"a dataclass field name must be an identifier, not {value!r}")
    object.__setattr__(self, name, value)


def harden_stdlib() -> None:
    """Close the code-injection path in an allow-listed stdlib module (idempotent).

    ``dataclasses`` generates ``__init__``/``__eq__``/... by ``exec`` of source text built from
    field names. A field name is whatever string ended up in ``Field.name`` (an annotation key
    of a class built with ``type(name, bases, ns)``, or a Field mutated after the fact), so
    ``"a, __import__('os').system(...)"`` would run unchecked. Every field name is assigned
    through ``Field.name``; this makes that assignment accept identifiers only.
    """
    import dataclasses

    if dataclasses.Field.__setattr__ is not _field_setattr:
        dataclasses.Field.__setattr__ = _field_setattr  # type: ignore[method-assign,assignment]


def candidate_namespace(allowed_imports: Iterable[str], enforce_policy: bool = True) -> dict[str, Any]:
    """Fresh globals for executing a candidate module."""
    if not enforce_policy:
        return {"__name__": "candidate", "__builtins__": builtins}
    harden_stdlib()
    return {"__name__": "candidate", "__builtins__": Guard(allowed_imports).builtins()}


__all__ = [
    "ForbiddenCall",
    "ForbiddenImport",
    "Guard",
    "SandboxedModule",
    "candidate_namespace",
    "harden_stdlib",
]
