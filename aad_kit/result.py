"""The named outcome of evaluating one candidate program, and the result record.

Every evaluation ends in exactly one of these. Only ``OK`` carries a score: an invalid
candidate gets ``score=None`` (never 0, which can look optimal on some metrics).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from aad_kit import EVALUATOR_VERSION


class Status(str, Enum):
    OK = "ok"
    SYNTAX_ERROR = "syntax_error"  # source does not parse
    MISSING_FUNCTION = "missing_function"  # the required function is not defined
    FORBIDDEN_IMPORT = "forbidden_import"  # imports a module outside the allow-list
    FORBIDDEN_CALL = "forbidden_call"  # uses a blocked builtin/attribute (open, eval, __dunder__ ...)
    RUNTIME_ERROR = "runtime_error"  # raised, or exited, while running
    TIMEOUT = "timeout"  # exceeded wall-clock or CPU budget
    MEMORY_LIMIT = "memory_limit"  # exceeded the memory cap
    INVALID_OUTPUT = "invalid_output"  # wrong type, NaN/inf, illegal move
    SANDBOX_ERROR = "sandbox_error"  # our infrastructure failed; not the candidate's fault

    def __str__(self) -> str:  # so f-strings and pandas show "timeout", not "Status.TIMEOUT"
        return self.value

    @property
    def is_valid(self) -> bool:
        return self is Status.OK


@dataclass(frozen=True)
class EvalResult:
    """Outcome of scoring one candidate on one (task, setting).

    ``score`` is higher-is-better and only set when ``status`` is OK; ``metric`` is the raw
    value in the task's natural unit (set size, excess bins %, tour length).
    """

    task: str
    setting: str
    code_hash: str
    status: Status
    score: float | None = None
    metric: float | None = None
    message: str = ""
    runtime_s: float = 0.0
    stdout: str = ""  # captured candidate output, capped
    details: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    evaluator_version: str = EVALUATOR_VERSION

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        d = dict(d)
        d["status"] = Status(d["status"])
        return cls(**d)
