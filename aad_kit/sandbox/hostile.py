"""A catalogue of hostile candidate programs and the status each must end with.

Used by the hostile-candidate tests and by the scoring notebook, so the behaviour a reader
sees demonstrated is exactly the behaviour the tests enforce. Every program is rendered for
a concrete task: it defines the task's function name, and where the hostile act is not
itself fatal it then delegates to the task's template program, so e.g. a candidate that
prints 100 MB still produces a valid, scored answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aad_kit.result import Status
from aad_kit.tasks import Task, get_task


@dataclass(frozen=True)
class HostileCandidate:
    name: str
    what: str  # the attack, in words
    expected: Status  # with the default policy on
    preamble: str  # module-level code placed before the function
    body: str  # function body (indented by 4 spaces when rendered)

    def render(self, task: str | Task) -> str:
        t = get_task(task)
        baseline = re.sub(
            rf"def\s+{t.function_name}\s*\(", "def _baseline(", t.template_program, count=1
        )
        body = "\n".join("    " + line for line in self.body.strip().splitlines())
        return (
            f"{baseline.rstrip()}\n\n{self.preamble.strip()}\n\n"
            f"def {t.function_name}(*args, **kwargs):\n{body}\n"
        )


HOSTILE: tuple[HostileCandidate, ...] = (
    HostileCandidate("infinite_loop", "never returns", Status.TIMEOUT, "", "while True:\n    pass"),
    HostileCandidate(
        "allocate_50gb", "allocates 50 GB", Status.MEMORY_LIMIT, "",
        "block = bytearray(50 * 10**9)\nreturn _baseline(*args, **kwargs)",
    ),
    HostileCandidate(
        "fork_bomb", "forks without end", Status.FORBIDDEN_IMPORT, "import os",
        "while True:\n    os.fork()",
    ),
    HostileCandidate(
        "write_outside_tmp", "writes a file outside its temp dir", Status.FORBIDDEN_CALL, "",
        "with open('/tmp/aad_kit_hostile_was_here.txt', 'w') as f:\n    f.write('x')\n"
        "return _baseline(*args, **kwargs)",
    ),
    HostileCandidate(
        "network_socket", "opens a network socket", Status.FORBIDDEN_IMPORT, "import socket",
        "socket.create_connection(('127.0.0.1', 80), timeout=1)\nreturn _baseline(*args, **kwargs)",
    ),
    HostileCandidate(
        "read_secret", "reads os.environ for an API key", Status.FORBIDDEN_IMPORT, "import os",
        "key = os.environ.get('OPENAI_API_KEY', '')\nreturn _baseline(*args, **kwargs)",
    ),
    HostileCandidate(
        "print_100mb", "prints 100 MB, then answers", Status.OK,
        "_printed = []",
        "if not _printed:\n    _printed.append(1)\n    print('x' * 100_000_000)\n"
        "return _baseline(*args, **kwargs)",
    ),
    HostileCandidate(
        "system_exit", "raises SystemExit(3)", Status.RUNTIME_ERROR, "", "raise SystemExit(3)"
    ),
    HostileCandidate(
        "exit_builtin", "calls exit(3)", Status.FORBIDDEN_CALL, "", "exit(3)"
    ),
    HostileCandidate(
        "base_exception", "raises a BaseException subclass", Status.RUNTIME_ERROR,
        "class Escape(BaseException):\n    pass", "raise Escape('not an Exception')",
    ),
    HostileCandidate(
        "return_nan", "returns NaN", Status.INVALID_OUTPUT, "", "return float('nan')"
    ),
    HostileCandidate(
        "wrong_type", "returns a string", Status.INVALID_OUTPUT, "", "return 'best'"
    ),
    HostileCandidate(
        "patch_numpy", "monkeypatches numpy functions the evaluator may use",
        Status.FORBIDDEN_CALL, "",
        "np.mean = lambda *a, **k: 0.0\nnp.sum = lambda *a, **k: 0.0\n"
        "return _baseline(*args, **kwargs)",
    ),
    HostileCandidate(
        "dunder_escape", "walks __subclasses__ to reach os", Status.FORBIDDEN_CALL, "",
        "classes = ().__class__.__bases__[0].__subclasses__()\nreturn _baseline(*args, **kwargs)",
    ),
    HostileCandidate(
        "dynamic_import", "imports os through __import__", Status.FORBIDDEN_CALL, "",
        "os = __import__('os')\nos.system('true')\nreturn _baseline(*args, **kwargs)",
    ),
    HostileCandidate(
        "syntax_error", "is not valid Python", Status.SYNTAX_ERROR, "", "return (1 +"
    ),
)


def hostile_candidates() -> tuple[HostileCandidate, ...]:
    return HOSTILE
