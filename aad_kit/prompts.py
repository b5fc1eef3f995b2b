"""Prompt builders: one per search operator, sharing one answer format.

The prompt a model sees during search is also the prompt ``x`` of every DPO preference
pair, so training matches use. Keep all prompt text here.

Answer format (asked of every model, parsed by :mod:`aad_kit.search.parsing`): one ```python
block with the complete function, whose docstring begins with one sentence stating the idea,
and nothing after the block. Why this and not an ``Idea:`` line first (the kit's earlier
format, EoH's order): with the idea line first, Qwen2.5-Coder-0.5B ended its turn after the
idea in 12 of 16 answers (ASP, i1), and both Qwen coders wrote more valid programs with the
code-first format (0.5B 1 -> 3 of 16, 1.5B 5 -> 8 of 16; ``benchmarks/RESULTS.md``). Parents
are shown with an ``Idea:`` line and their code without its docstring (the idea would be
there twice, and copied docstrings are tokens a small model then repeats).

Operators (after Evolution of Heuristics, Liu et al. 2024):

====  =======  ====================================================================
name  parents  what the model is asked to do
====  =======  ====================================================================
i1    0        design a new algorithm from the task description and the template
e1    2+       design an algorithm whose idea differs from all the parents' ideas
e2    2+       find the idea the parents share, and build a new algorithm on it
m1    1        rework the parent into a different, hopefully better, algorithm
m2    1        keep the parent's structure but change its parameters / score formula
====  =======  ====================================================================

Every builder is a pure function of the task and the parents' code and ideas, so the same
parents always give the same prompt text. The modules the answer format allows are generated
from the sandbox's import allow-list (:data:`aad_kit.sandbox.config.ALLOWED_IMPORTS_ORDERED`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from aad_kit.code import strip_docstring, with_docstring
from aad_kit.sandbox.config import ALLOWED_IMPORTS_ORDERED
from aad_kit.tasks import Task, get_task

SYSTEM_PROMPT = (
    "You are an expert in algorithm design. You write short, correct, efficient Python "
    "functions and explain the idea behind each in one sentence."
)



def _join(names: Sequence[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def allowed_imports_text(modules: Sequence[str] = ALLOWED_IMPORTS_ORDERED) -> str:
    """The answer format's import sentence, naming exactly ``modules`` (default: the sandbox's
    allow-list, :data:`aad_kit.sandbox.config.ALLOWED_IMPORTS_ORDERED`, in its order).

    Third-party modules (numpy) come first, then the standard library's.
    """
    stdlib = [m for m in modules if m in sys.stdlib_module_names]
    other = [m for m in modules if m not in sys.stdlib_module_names]
    parts = ([_join(other)] if other else []) + (
        [f"the Python standard library's {_join(stdlib)}"] if stdlib else []
    )
    return f"Use only {' and '.join(parts)}."


# The modules it names are generated from the sandbox's import allow-list (one source of
# truth; ``tests/test_prompts.py`` checks they agree), so a program that follows the prompt
# passes the sandbox's import check.
ANSWER_FORMAT = (
    "Answer with one ```python code block holding the complete function {signature_name} "
    "and the imports it needs, and nothing after the block. Begin the function's docstring "
    "with one sentence that states your idea.\n"
    f"{allowed_imports_text()} Do not read or write files, print, or use the network."
)

OPERATORS: tuple[str, ...] = ("i1", "e1", "e2", "m1", "m2")
# Minimum number of parents each operator takes (e1/e2 accept more than two).
MIN_PARENTS: dict[str, int] = {"i1": 0, "e1": 2, "e2": 2, "m1": 1, "m2": 1}
MAX_PARENTS: dict[str, int | None] = {"i1": 0, "e1": None, "e2": None, "m1": 1, "m2": 1}


def _task_block(task: Task) -> str:
    return (
        f"{task.description.strip()}\n\n"
        f"The function must keep this signature:\n{task.signature}"
    )


def answer_format(task: Task) -> str:
    return ANSWER_FORMAT.format(signature_name=f"`{task.function_name}`")


def _parent_fields(parent: Any) -> tuple[str, str]:
    """``(idea, code)`` of a parent given as a record, a mapping or an ``(idea, code)`` pair."""
    if isinstance(parent, Mapping):
        idea, code = parent.get("idea"), parent.get("code")
    elif isinstance(parent, tuple) and len(parent) == 2:
        idea, code = parent
    else:
        idea, code = getattr(parent, "idea", None), getattr(parent, "code", None)
    if not code or not isinstance(code, str):
        raise ValueError(f"a parent needs non-empty code, got {parent!r:.200}")
    idea = " ".join(str(idea or "").split()) or "(no description given)"
    return idea, code.strip()


def _parent_block(parent: Any, label: str) -> str:
    idea, code = _parent_fields(parent)
    return f"{label}\nIdea: {idea}\n```python\n{strip_docstring(code).strip()}\n```"


def _parents_block(parents: Sequence[Any]) -> str:
    return "\n\n".join(
        _parent_block(p, f"Algorithm {i} of {len(parents)}:") for i, p in enumerate(parents, 1)
    )


def _check_parents(op: str, parents: Sequence[Any]) -> None:
    lo, hi = MIN_PARENTS[op], MAX_PARENTS[op]
    if len(parents) < lo or (hi is not None and len(parents) > hi):
        want = f"exactly {lo}" if hi == lo else f"at least {lo}"
        raise ValueError(f"operator {op} takes {want} parent(s), got {len(parents)}")


def i1_prompt(task: str | Task) -> str:
    """Operator i1: design a new algorithm from the task description alone."""
    t = get_task(task)
    return (
        f"{_task_block(t)}\n\n"
        f"Here is a simple starting point:\n```python\n{t.template_program.strip()}\n```\n\n"
        f"Design a new, better algorithm for this task.\n\n{answer_format(t)}"
    )


def e1_prompt(task: str | Task, parents: Sequence[Any]) -> str:
    """Operator e1 (exploration): an algorithm unlike every one of the given parents."""
    t = get_task(task)
    _check_parents("e1", parents)
    return (
        f"{_task_block(t)}\n\n"
        f"Here are {len(parents)} algorithms already written for this task:\n\n"
        f"{_parents_block(parents)}\n\n"
        "Design a new algorithm for this task whose idea is clearly different from all of "
        "the algorithms above: do not just tune or combine them, try another approach.\n\n"
        f"{answer_format(t)}"
    )


def e2_prompt(task: str | Task, parents: Sequence[Any]) -> str:
    """Operator e2 (exploration): a new algorithm built on the idea the parents share."""
    t = get_task(task)
    _check_parents("e2", parents)
    return (
        f"{_task_block(t)}\n\n"
        f"Here are {len(parents)} algorithms already written for this task:\n\n"
        f"{_parents_block(parents)}\n\n"
        "First work out the core idea these algorithms have in common. Then design a new "
        "algorithm that builds on that shared idea but is not a copy of any of them, and "
        "that should perform better.\n\n"
        f"{answer_format(t)}"
    )


def m1_prompt(task: str | Task, parent: Any) -> str:
    """Operator m1 (modification): rework one parent into a different, better algorithm."""
    t = get_task(task)
    return (
        f"{_task_block(t)}\n\n"
        f"Here is an algorithm already written for this task:\n\n"
        f"{_parent_block(parent, 'Algorithm:')}\n\n"
        "Modify this algorithm into a new version with a different form that should "
        "perform better: change how it decides, not only its constants.\n\n"
        f"{answer_format(t)}"
    )


def m2_prompt(task: str | Task, parent: Any) -> str:
    """Operator m2 (modification): same structure, different parameters / score formula."""
    t = get_task(task)
    return (
        f"{_task_block(t)}\n\n"
        f"Here is an algorithm already written for this task:\n\n"
        f"{_parent_block(parent, 'Algorithm:')}\n\n"
        "Identify the main parameters of this algorithm (constants, weights, thresholds, "
        "the terms of its scoring formula). Keep its overall structure and write a new "
        "version with different parameter values or a changed scoring formula that should "
        "perform better.\n\n"
        f"{answer_format(t)}"
    )


def build_prompt(operator: str, task: str | Task, parents: Sequence[Any] = ()) -> str:
    """The prompt of ``operator`` (one of :data:`OPERATORS`) for ``parents``."""
    if operator not in OPERATORS:
        raise ValueError(f"unknown operator {operator!r}; choose one of: {', '.join(OPERATORS)}")
    _check_parents(operator, parents)
    if operator == "i1":
        return i1_prompt(task)
    if operator == "e1":
        return e1_prompt(task, parents)
    if operator == "e2":
        return e2_prompt(task, parents)
    if operator == "m1":
        return m1_prompt(task, parents[0])
    return m2_prompt(task, parents[0])


def as_messages(user_prompt: str) -> list[dict[str, str]]:
    """Chat-format messages (for models with a chat template)."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_prompt},
    ]


__all__ = [
    "ANSWER_FORMAT",
    "MAX_PARENTS",
    "MIN_PARENTS",
    "OPERATORS",
    "SYSTEM_PROMPT",
    "allowed_imports_text",
    "answer_format",
    "as_messages",
    "build_prompt",
    "e1_prompt",
    "e2_prompt",
    "i1_prompt",
    "m1_prompt",
    "m2_prompt",
]


def format_answer(idea: str | None, code: str, function_name: str | None = None) -> str:
    """An algorithm written as a model answer in :data:`ANSWER_FORMAT`: the fenced code, its
    function's docstring starting with the idea (added when the code has no docstring).

    The inverse of :func:`aad_kit.search.parsing.parse_answer`. DAR's chosen/rejected answers
    are built with it, so DPO trains the model on exactly the format the prompt asks for.
    ``function_name``: the task's function (default: the first function defined in ``code``).
    """
    import re

    idea_line = " ".join((idea or "").split())
    if function_name is None:
        m = re.search(r"^(?:async\s+)?def\s+(\w+)", code, re.M)
        function_name = m.group(1) if m else ""
    if idea_line and function_name:
        code = with_docstring(code.strip(), function_name, idea_line)
    return f"```python\n{code.strip()}\n```"


def _drop_leading_comments(code: str) -> str:
    """``code`` without the comment lines above its first statement (the provenance header
    of a shipped heuristic: ``# name: ...``, ``# source: ...``)."""
    lines = code.strip().split("\n")
    while lines and (lines[0].lstrip().startswith("#") or not lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines).strip() or code.strip()


def funsearch_prompt(task: str | Task, programs: Sequence[Any] = ()) -> str:
    """FunSearch's prompt: ``programs`` (ordered worse to better) shown as versions
    ``<function>_v0 .. <function>_v{k-1}``, and a request for ``<function>_v{k}``.

    Each program is shown as stored (its docstring states its idea, as the answer format
    asks), with every use of the task's function name renamed to its version (recursive
    calls included). Programs are records, mappings, ``(idea, code)`` pairs or code strings.
    With no programs the task's template program is shown as ``_v0``. A pure function: the
    same programs always give the same text. The answer's ``_v{k}`` function is renamed back
    to the task's function when it is parsed (:mod:`aad_kit.search.funsearch`).
    """
    from aad_kit.code import rename_identifier

    t = get_task(task)
    fn = t.function_name
    codes = [c if isinstance(c, str) else _parent_fields(c)[1] for c in programs]
    codes = [_drop_leading_comments(c) for c in codes if c and c.strip()]
    codes = codes or [t.template_program.strip()]
    k = len(codes)
    blocks = "\n\n".join(
        f"```python\n{rename_identifier(code, fn, f'{fn}_v{i}').strip()}\n```"
        for i, code in enumerate(codes)
    )
    versions = f"`{fn}_v0`" if k == 1 else f"`{fn}_v0` to `{fn}_v{k - 1}`"
    order = (
        "" if k == 1 else
        f" Each version is an improvement on the one before it: `{fn}_v{k - 1}` is the best so far."
    )
    want = f"`{fn}_v{k}`"
    fmt = answer_format(t)
    fmt = fmt.replace(f"`{fn}`", want) if f"`{fn}`" in fmt else f"{fmt}\nName the function {want}."
    return (
        f"{_task_block(t)}\n\n"
        f"Here {'is' if k == 1 else 'are'} {k} version{'s' if k > 1 else ''} of `{fn}` "
        f"written for this task, named {versions}.{order}\n\n"
        f"{blocks}\n\n"
        f"Write {want}, an improved version of `{fn}_v{k - 1}` that should score higher. "
        f"Name it {want} and keep the parameters of the signature above.\n\n"
        f"{fmt}"
    )


__all__.append("funsearch_prompt")
