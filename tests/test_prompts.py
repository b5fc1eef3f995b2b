"""Prompt builders: every operator shows the parents' code and ideas and the answer format."""

from __future__ import annotations

import re

import pytest

from aad_kit import prompts
from aad_kit.db import AlgorithmDB
from aad_kit.search.parsing import parse_answer
from aad_kit.tasks import TASK_NAMES, get_task

P1 = ("prefer vectors with many twos", "def priority(el, n, w):\n    return float(el.count(2))\n")
P2 = {"idea": "penalise leading zeros", "code": "def priority(el, n, w):\n    return -float(el[0] == 0)\n"}
P3 = ("", "def priority(el, n, w):\n    return 0.5\n")


@pytest.mark.parametrize("task", TASK_NAMES)
@pytest.mark.parametrize("op", prompts.OPERATORS)
def test_every_operator_has_task_format_and_parents(task, op):
    t = get_task(task)
    parents = {"i1": [], "e1": [P1, P2], "e2": [P1, P2, P3], "m1": [P1], "m2": [P2]}[op]
    text = prompts.build_prompt(op, task, parents)
    assert t.description.strip() in text and t.signature in text
    assert prompts.answer_format(t) in text and "```python" in text
    assert ("Idea:" in text) == bool(parents)  # parents carry their idea line; i1 has none
    assert f"`{t.function_name}`" in text
    for p in parents:
        idea, code = (p["idea"], p["code"]) if isinstance(p, dict) else p
        assert code.strip() in text
        if idea:
            assert f"Idea: {idea}" in text
    if not parents:
        assert t.template_program.strip() in text
    if op in ("e1", "e2"):
        assert f"Algorithm {len(parents)} of {len(parents)}" in text
    assert text == prompts.build_prompt(op, task, parents)  # deterministic


def test_operators_ask_different_things():
    texts = {op: prompts.build_prompt(op, "admissible_set", {"i1": [], "e1": [P1, P2], "e2": [P1, P2], "m1": [P1], "m2": [P1]}[op])
             for op in prompts.OPERATORS}
    assert len(set(texts.values())) == len(texts)
    assert "different from all" in texts["e1"]
    assert "in common" in texts["e2"]
    assert "different form" in texts["m1"]
    assert "parameter" in texts["m2"]


def test_empty_idea_is_marked():
    text = prompts.m1_prompt("admissible_set", P3)
    assert "Idea: (no description given)" in text


def test_parent_counts_checked():
    with pytest.raises(ValueError):
        prompts.build_prompt("e1", "admissible_set", [P1])
    with pytest.raises(ValueError):
        prompts.build_prompt("m2", "admissible_set", [P1, P2])
    with pytest.raises(ValueError):
        prompts.build_prompt("x9", "admissible_set")
    with pytest.raises(ValueError):
        prompts.m1_prompt("admissible_set", ("idea", ""))


def test_db_records_are_accepted_as_parents(tmp_path):
    with AlgorithmDB(tmp_path / "a.sqlite") as db:
        aid = db.add_algorithm(run_id="r", task="admissible_set", setting="n12_w7", operator="i1",
                               status="ok", sample_index=0, code=P1[1], idea=P1[0], score=1.0)
        rec = db.get(aid)
    text = prompts.e2_prompt("admissible_set", [rec, P2])
    assert P1[1].strip() in text and P1[0] in text


def _modules_named_in(text: str) -> list[str]:
    """The modules the answer format's "Use only ..." sentence names, read from the text."""
    match = re.search(r"Use only (.+?)\. ", text)
    assert match, text
    names = re.split(r", | and ", match.group(1).replace("the Python standard library's ", ""))
    assert all(re.fullmatch(r"[a-z_][a-z0-9_]*", n) for n in names), names
    return names


def test_prompt_names_exactly_the_sandbox_allow_list():
    """One source of truth: the answer format lists what the sandbox lets a candidate import."""
    from aad_kit.sandbox import DEFAULT_ALLOWED_IMPORTS, check_code
    from aad_kit.sandbox.config import ALLOWED_IMPORTS_ORDERED

    text = prompts.answer_format(get_task("admissible_set"))
    assert text.startswith("Answer with one ```python code block holding the complete function "
                           "`priority` and the imports it needs")
    named = _modules_named_in(text)
    assert len(named) == len(set(named))
    assert set(named) == set(DEFAULT_ALLOWED_IMPORTS) == set(ALLOWED_IMPORTS_ORDERED)
    assert named[0] == "numpy" and "the Python standard library's math" in text
    assert "scipy" not in named and "scipy" not in text  # not allowed: see sandbox/config.py
    for module in named:  # every module the prompt offers passes the sandbox's import check
        code = f"import {module}\n\ndef priority(el, n, w):\n    return 0.0\n"
        assert check_code(code, "priority") is None, module
    bad = "import scipy\n\ndef priority(el, n, w):\n    return 0.0\n"
    assert check_code(bad, "priority") is not None
    for task in TASK_NAMES:  # every operator's prompt carries the same list
        assert _modules_named_in(prompts.i1_prompt(task)) == named


def test_allowed_imports_text_follows_the_list():
    assert prompts.allowed_imports_text(("numpy", "math", "heapq", "collections")) == (
        "Use only numpy and the Python standard library's math, heapq and collections.")
    assert prompts.allowed_imports_text(("math",)) == "Use only the Python standard library's math."
    assert prompts.allowed_imports_text(("numpy",)) == "Use only numpy."


def test_legacy_api_kept():
    assert prompts.SYSTEM_PROMPT and "{signature_name}" in prompts.ANSWER_FORMAT
    msgs = prompts.as_messages(prompts.i1_prompt("bin_packing"))
    assert [m["role"] for m in msgs] == ["system", "user"]


def test_an_answer_in_the_requested_format_parses():
    t = get_task("tsp_construct")
    answer = f"Idea: nearest neighbour.\n```python\n{t.template_program.strip()}\n```"
    p = parse_answer(answer, t)
    assert p.has_code and p.idea == "nearest neighbour." and p.notes == []
    code = "def select_next_node(current_node, destination_node, unvisited_nodes, distance_matrix):\n" \
           '    """Go to the nearest node. Ties: lowest index."""\n' \
           "    return int(unvisited_nodes[distance_matrix[current_node][unvisited_nodes].argmin()])\n"
    p = parse_answer(f"```python\n{code}```", t)  # the format asked for: idea in the docstring
    assert p.has_code and p.idea == "Go to the nearest node." and p.notes == []


def test_parents_are_shown_without_their_docstring():
    doc = ('def priority(el, n, w):\n    """Count twos, a long docstring the model would copy."""\n'
           "    return float(el.count(2))\n")
    text = prompts.m1_prompt("admissible_set", ("count twos", doc))
    assert "Idea: count twos" in text and "return float(el.count(2))" in text
    assert "a long docstring" not in text


def test_format_answer_round_trips_through_the_parser():
    from aad_kit.prompts import format_answer
    from aad_kit.search.parsing import parse_answer
    from aad_kit.tasks import get_task

    task = get_task("tsp_construct")
    code = task.heuristics()["nearest_neighbour"].code
    from aad_kit.code import strip_docstring

    bare = strip_docstring(code)
    assert '"""' in code and '"""' not in bare
    answer = format_answer("  go to the\nnearest node ", bare)
    assert answer.startswith("```python\n") and answer.endswith("\n```")
    parsed = parse_answer(answer, task)
    assert parsed.idea == "go to the nearest node"
    assert parsed.code is not None and "def select_next_node" in parsed.code
    assert format_answer(None, bare) == f"```python\n{bare.strip()}\n```"
