"""The Python-level layers of the sandbox: the static check and the runtime guard.

Everything here runs in-process and starts no worker: the static check only parses, and the
guard tests execute code whose escapes the guard blocks.
"""

from __future__ import annotations

import builtins
import sys
import types
import warnings

import pytest

from aad_kit.result import Status
from aad_kit.sandbox import DEFAULT_ALLOWED_IMPORTS, check_code
from aad_kit.sandbox.guard import (
    _REAL,
    ForbiddenCall,
    ForbiddenImport,
    Guard,
    SandboxedModule,
    candidate_namespace,
)


def status_of(code: str, **kwargs) -> Status | None:
    v = check_code(code, "f", **kwargs)
    return None if v is None else v.status


def wrap(body: str, header: str = "") -> str:
    """A program defining ``f`` whose body is ``body``."""
    inner = "\n".join("    " + line for line in body.strip().splitlines())
    return f"{header}\n\ndef f(x):\n{inner}\n    return 1.0\n"


# ---- syntax and the function ---------------------------------------------------------------


def test_syntax_error_names_the_line():
    v = check_code("def f(x):\n    return (1 +\n", "f")
    assert v is not None and v.status is Status.SYNTAX_ERROR
    assert "line 2" in v.message and v.line == 2


def test_null_bytes_are_a_syntax_error():
    assert status_of("def f(x):\n    return 1\x00\n") is Status.SYNTAX_ERROR


def test_missing_function():
    v = check_code("def g(x):\n    return 1.0\n", "f", signature="def f(x: float) -> float:")
    assert v is not None and v.status is Status.MISSING_FUNCTION
    assert "`f`" in v.message and "def f(x: float) -> float:" in v.message
    # a method of the same name does not count; an assignment does
    assert status_of("class A:\n    def f(self):\n        return 1\n") is Status.MISSING_FUNCTION
    assert status_of("f = lambda x: 1.0\n") is None


def test_policy_off_still_checks_syntax_and_function():
    assert status_of("import os\ndef f(x):\n    return 1.0\n", enforce_policy=False) is None
    assert status_of("def f(x):\n  return (\n", enforce_policy=False) is Status.SYNTAX_ERROR
    assert status_of("import os\n", enforce_policy=False) is Status.MISSING_FUNCTION


# ---- imports ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "import os",
        "import subprocess",
        "import socket",
        "import sys",
        "import ctypes",
        "import importlib",
        "import builtins",
        "import pickle",
        "import os.path",
        "from os import path",
        "from subprocess import run",
        "import numpy.testing",
        "from numpy.lib import stride_tricks",
        "import numpy._core",
        "from numpy import ctypeslib",
        "from . import helper",
    ],
)
def test_forbidden_imports(header):
    v = check_code(wrap("pass", header), "f")
    assert v is not None, header
    assert v.status in (Status.FORBIDDEN_IMPORT, Status.FORBIDDEN_CALL), header
    if header.startswith("import ") and "." not in header:
        assert v.status is Status.FORBIDDEN_IMPORT
        assert header.split()[1] in v.message  # names the module
        assert "allowed modules" in v.message  # and says what is allowed


def test_forbidden_import_inside_function_is_caught():
    assert status_of("def f(x):\n    import os\n    return 1.0\n") is Status.FORBIDDEN_IMPORT


def test_optional_import_with_fallback_is_tolerated_statically():
    code = "try:\n    import scipy\nexcept ImportError:\n    scipy = None\n\ndef f(x):\n    return 1.0\n"
    assert status_of(code) is None
    # ... but not without a handler for ImportError
    code = "try:\n    import scipy\nexcept ValueError:\n    pass\n\ndef f(x):\n    return 1.0\n"
    assert status_of(code) is Status.FORBIDDEN_IMPORT


def test_allow_list_is_configurable():
    assert status_of(wrap("pass", "import math"), allowed_imports={"numpy"}) is Status.FORBIDDEN_IMPORT
    assert status_of(wrap("pass", "import os"), allowed_imports={"os"}) is None


# ---- names and attributes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, header",
    [
        ("open('/tmp/x', 'w')", ""),
        ("eval('1 + 1')", ""),
        ("exec('y = 1')", ""),
        ("compile('1', 'x', 'eval')", ""),
        ("__import__('os')", ""),
        ("globals()", ""),
        ("locals()", ""),
        ("vars(x)", ""),
        ("breakpoint()", ""),
        ("input()", ""),
        ("exit(3)", ""),
        ("quit()", ""),
        ("help(x)", ""),
        ("().__class__.__bases__[0].__subclasses__()", ""),
        ("x.__dict__", ""),
        ("getattr((), '__subclasses__')", ""),
        ("type(x).__mro__", ""),
        ("f.__globals__", ""),
        ("f.__code__", ""),
        ("y = __builtins__", ""),
        ("g = (i for i in [1])\nfr = g.gi_frame", ""),
        ("e = Exception()\nt = e.__traceback__", ""),
        ("np.load('data.npy')", "import numpy as np"),
        ("np.save('out.npy', np.zeros(3))", "import numpy as np"),
        ("numpy.lib.stride_tricks", "import numpy"),
        ("np.zeros(3).tofile('out.bin')", "import numpy as np"),
        ("np.zeros(3).dump('out.pkl')", "import numpy as np"),
        ("np.fromfile('/etc/passwd')", "import numpy as np"),
        ("np.zeros(3).ctypes", "import numpy as np"),
        ("np.testing", "import numpy as np"),
        ("r = random._os", "import random"),
        ("operator.attrgetter('a')", "import operator"),
        ("typing.get_type_hints(f)", "import typing"),
        ("string.Formatter()", "import string"),
        ("np.sum = len", "import numpy as np"),
        ("np.random.seed = len", "import numpy as np"),
        ("setattr(np, 'sum', len)", "import numpy as np"),
        ("del math.pi", "import math"),
        ("pass", "from numpy import load"),
        ("pass", "from numpy import save as keep"),
        ("match x:\n    case object(__dict__=c):\n        pass", ""),
        ("w = functools.update_wrapper(x, f)", "import functools"),
        ("pass", "from functools import wraps"),
        ("class A:\n    __annotations__ = {'a': int}", ""),
        ("class A:\n    def __array_interface__(self):\n        return {}", ""),
    ],
)
def test_forbidden_calls(body, header):
    v = check_code(wrap(body, header), "f")
    assert v is not None and v.status is Status.FORBIDDEN_CALL, (body, v)
    assert "line" in v.message


def test_blocked_builtin_message_says_what_to_do():
    v = check_code(wrap("open('x')"), "f")
    assert v is not None and "`open` is not available" in v.message


def test_several_problems_are_all_reported():
    v = check_code(wrap("open('x')\neval('1')", "import os"), "f")
    assert v is not None and v.status is Status.FORBIDDEN_IMPORT  # the first, by line
    assert "Also:" in v.message and "open" in v.message and "eval" in v.message


LEGIT = [
    # typical LLM heuristics and the idioms they use
    """
from __future__ import annotations
import numpy as np
import numpy.typing as npt
from typing import List, Optional

def f(x: float) -> float:
    a: npt.NDArray[np.float64] = np.array([x, x * 2.0])
    return float(np.linalg.norm(a) + np.sum(a) + np.random.default_rng(0).random())
""",
    """
import heapq, itertools, functools, math, bisect, statistics
from collections import defaultdict, deque, Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

@dataclass(order=True)
class Item:
    weight: float
    tags: list = field(default_factory=list)

    def __post_init__(self):
        self.load = 0.0

class Bin:
    __slots__ = ("load", "capacity")

    def __init__(self, capacity):
        self.load = 0.0
        self.capacity = capacity

    def __lt__(self, other):
        return self.load < other.load

    def __repr__(self):
        return f"{type(self).__name__}({self.load}) {self.__class__.__name__}"

class Big(Bin):
    def __init__(self):
        super().__init__(100)

@functools.lru_cache(maxsize=None)
def g(n):
    return math.comb(n, 2)

def f(x):
    heap = [Bin(10), Big()]
    heapq.heapify(heap)
    b = heapq.heappop(heap)
    b.load += x
    counts = Counter(itertools.repeat("a", 3))
    i = bisect.bisect_left([1, 2, 3], x)
    input = float(x)          # shadows the builtin: fine
    vars_ = {"a": 1}
    s = sorted([Item(2.0), Item(1.0)])
    return float(b.load + g(5) + counts["a"] + i + input + statistics.mean([1, 2]) + len(s))

if __name__ == "__main__":
    print(f(1.0))
""",
    """
import random
from math import *

def helper(values, key=lambda v: v):
    return max(values, key=key)

def f(x):
    random.seed(1)
    return sqrt(x) + helper([random.random(), 0.5]) + pi
""",
]


@pytest.mark.parametrize("code", LEGIT)
def test_legitimate_programs_pass(code):
    assert check_code(code, "f") is None


def test_default_allow_list():
    assert {"numpy", "math", "random", "heapq", "collections"} <= DEFAULT_ALLOWED_IMPORTS
    assert not {"os", "sys", "subprocess", "socket", "ctypes", "importlib"} & DEFAULT_ALLOWED_IMPORTS


# ---- runtime guard (in-process: the escapes it blocks never run) ---------------------------


def run_guarded(code: str, allowed=DEFAULT_ALLOWED_IMPORTS) -> dict:
    ns = candidate_namespace(allowed, enforce_policy=True)
    exec(compile(code, "<candidate>", "exec", dont_inherit=True), ns)
    return ns


def test_guard_allows_ordinary_code():
    ns = run_guarded(
        "import numpy as np\nimport numpy.linalg as la\nfrom numpy.random import default_rng\n"
        "from collections import namedtuple\nfrom typing import NamedTuple\n"
        "from dataclasses import dataclass\n"
        "P = namedtuple('P', 'a b')\n"
        "class Q(NamedTuple):\n    a: int\n"
        "@dataclass\nclass D:\n    a: float = 1.0\n"
        "r = float(np.sum([1, 2]) + la.norm([3, 4]) + default_rng(0).random() * 0)\n"
        "r += P(1, 2).a + Q(1).a + D().a\n"
        "h = hasattr(np, 'sum') and getattr(np, 'pi') > 3\n"
    )
    assert ns["r"] == 3 + 5 + 1 + 1 + 1.0
    assert ns["h"] is True


def test_module_proxies_hand_out_real_objects_and_cache_them():
    import numpy

    ns = run_guarded("import numpy as np\nimport numpy as np2\na = np.sum\nb = np.sum\n")
    assert isinstance(ns["np"], SandboxedModule) and ns["np"] is ns["np2"]
    assert ns["a"] is numpy.sum and ns["b"] is numpy.sum
    assert "sum" in vars(ns["np"])  # cached on the proxy: later lookups cost a dict hit


@pytest.mark.parametrize(
    "code, exc",
    [
        ("import statistics\ns = statistics.sys", ForbiddenImport),
        ("import enum\nb = enum.bltns", ForbiddenImport),
        ("import dataclasses\ni = dataclasses.inspect", ForbiddenImport),
        ("import typing\ns = typing.sys", ForbiddenImport),
        ("import random\no = random._os", ForbiddenCall),
        ("import numpy as np\nl = np.load", ForbiddenCall),
        ("import numpy as np\nl = np.lib", ForbiddenCall),
        ("import numpy as np\nl = getattr(np, 'lo' + 'ad')", ForbiddenCall),
        ("from numpy import testing", ForbiddenCall),
        ("import numpy.testing", ForbiddenImport),
        ("import numpy as np\nnp.sum = len", ForbiddenCall),
        ("import numpy as np\nsetattr(np, 'su' + 'm', len)", ForbiddenCall),
        ("c = getattr((), '__cla' + 'ss__')\nb = getattr(c, '__ba' + 'ses__')", ForbiddenCall),
        ("s = getattr(object, '__subcl' + 'asses__')", ForbiddenCall),
        ("g = (i for i in [1])\nfr = getattr(g, 'gi_' + 'frame')", ForbiddenCall),
        ("class S(str):\n    def startswith(self, *a):\n        return False\n"
         "c = getattr((), S('__bases__'))", ForbiddenCall),
        ("o = __import__('os')", ForbiddenImport),
        ("o = __import__('importlib')", ForbiddenImport),
        ("f = open('/etc/passwd')", ForbiddenCall),
        ("e = eval('1')", ForbiddenCall),
        ("exit(3)", ForbiddenCall),
        # dataclasses builds source from field names: only identifiers get that far
        ("import dataclasses\n"
         "X = type('X', (), {'__annot' + 'ations__': {'a,__import__(\"os\")': int}, 'a': 1})\n"
         "X = dataclasses.dataclass(init=False, repr=False)(X)", ForbiddenCall),
        ("import dataclasses\n@dataclasses.dataclass\nclass B:\n    a: int = 0\n"
         "dataclasses.fields(B)[0].name = 'a,__import__(\"os\")'", ForbiddenCall),
    ],
)
def test_runtime_guard_blocks_dynamic_escapes(code, exc):
    with pytest.raises(exc):
        run_guarded(code)


def test_forbidden_import_is_an_import_error():
    ns = run_guarded("try:\n    import os\nexcept ImportError:\n    os = None\n")
    assert ns["os"] is None


def test_star_import_skips_blocked_names():
    ns = run_guarded("from numpy import *\n")
    assert "sum" in ns and "load" not in ns and "save" not in ns and "lib" not in ns
    assert "testing" not in ns and "ctypeslib" not in ns


def test_policy_off_namespace_uses_real_builtins():
    ns = candidate_namespace(DEFAULT_ALLOWED_IMPORTS, enforce_policy=False)
    assert ns["__builtins__"] is builtins


def test_nothing_outside_the_allow_list_is_reachable_through_module_attributes():
    """Walk every public attribute chain (3 levels) from the allow-listed modules through the
    guard: any module it reaches must be allow-listed, and no file/process/eval entry point may
    be reachable (from modules, or from the classes and functions they expose)."""
    import os

    dangerous = {
        id(o)
        for o in (builtins.open, builtins.eval, builtins.exec, builtins.compile, builtins.__import__,
                  os.system, os.popen, os.fork, os.open, os.remove, os.execv, sys.exit)
    }
    guard = Guard(DEFAULT_ALLOWED_IMPORTS)
    seen: set[int] = set()
    problems: list[str] = []
    blocked: set[str] = set()

    def check_plain(value, path):
        if isinstance(value, types.ModuleType) and not isinstance(value, SandboxedModule):
            problems.append(f"{path} is the raw module {value.__name__}")
        if id(value) in dangerous:
            problems.append(f"{path} is a dangerous callable")

    def walk(proxy, path, depth):
        if depth > 3 or id(proxy) in seen:
            return
        seen.add(id(proxy))
        for name in dir(_REAL[id(proxy)]):  # every name of the real module, private ones too
            try:
                value = guard.getattr_(proxy, name)
            except (ForbiddenCall, ForbiddenImport):
                blocked.add(f"{path}.{name}")
                continue
            except AttributeError:
                continue
            except Exception:  # noqa: BLE001 - some lazy attributes fail to import; not reachable
                continue
            p = f"{path}.{name}"
            check_plain(value, p)
            if isinstance(value, SandboxedModule):
                walk(value, p, depth + 1)
            elif isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
                for attr in dir(value):
                    if attr.startswith("_"):
                        continue
                    try:
                        inner = getattr(value, attr)
                    except Exception:  # noqa: BLE001
                        continue
                    check_plain(inner, f"{p}.{attr}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(DEFAULT_ALLOWED_IMPORTS):
            walk(guard.import_(name), name, 0)
    assert not problems, problems[:20]
    assert len(seen) > 30  # the walk did go somewhere
    tails = {".".join(b.split(".")[-2:]) for b in blocked}  # a module is walked once, first path
    assert tails >= {"statistics.sys", "random._os", "numpy.load", "enum.bltns"}


def test_a_global_declaration_does_not_make_a_blocked_builtin_a_user_name():
    """`global open` binds nothing, so `open` is still the builtin and still blocked."""
    from aad_kit.result import Status
    from aad_kit.sandbox.policy import check_code

    code = "def f(x):\n    global open\n    return open('/etc/passwd').read()\n"
    violation = check_code(code, "f")
    assert violation is not None and violation.status is Status.FORBIDDEN_CALL
    shadowed = "def f(x):\n    open = lambda p: p\n    return open(x)\n"
    assert check_code(shadowed, "f") is None  # a real binding shadows the builtin
