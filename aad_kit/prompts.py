"""Prompt builders: one per search operator, sharing one answer format.

The prompt a model sees during search is also the prompt ``x`` of every DPO preference
pair, so training matches use. Keep all prompt text here.

Answer format (asked of every model, parsed by the search stage): one line starting with
``Idea:`` describing the algorithm, then the complete function in a ```python block.
"""

from __future__ import annotations

from aad_kit.tasks import Task, get_task

SYSTEM_PROMPT = (
    "You are an expert in algorithm design. You write short, correct, efficient Python "
    "functions and explain the idea behind each in one sentence."
)

ANSWER_FORMAT = (
    "Answer in exactly this format:\n"
    "Idea: <one sentence describing your algorithm>\n"
    "```python\n"
    "<the complete Python function {signature_name}, with any imports it needs>\n"
    "```\n"
    "Use only numpy and the Python standard library's math, random, itertools, heapq and "
    "collections. Do not read or write files, print, or use the network."
)


def _task_block(task: Task) -> str:
    return (
        f"{task.description.strip()}\n\n"
        f"The function must keep this signature:\n{task.signature}"
    )


def answer_format(task: Task) -> str:
    return ANSWER_FORMAT.format(signature_name=f"`{task.function_name}`")


def i1_prompt(task: str | Task) -> str:
    """Operator i1: design a new algorithm from the task description alone."""
    t = get_task(task)
    return (
        f"{_task_block(t)}\n\n"
        f"Here is a simple starting point:\n```python\n{t.template_program.strip()}\n```\n\n"
        f"Design a new, better algorithm for this task.\n\n{answer_format(t)}"
    )


def as_messages(user_prompt: str) -> list[dict[str, str]]:
    """Chat-format messages (for models with a chat template)."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_prompt},
    ]
