"""Answer parsing: realistic messy outputs of small models."""

from __future__ import annotations

import ast

import pytest

from aad_kit.result import Status
from aad_kit.search.parsing import extract_idea, parse_answer, signature_arity
from aad_kit.tasks import get_task

ASP = "admissible_set"  # priority(el, n, w)
TSP = "tsp_construct"  # select_next_node(current_node, destination_node, unvisited_nodes, distance_matrix)


def defines(code: str, name: str) -> bool:
    tree = ast.parse(code)
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body)


def run_fn(code: str, name: str, *args):
    ns: dict = {}
    exec(compile(code, "<test>", "exec"), ns)
    return ns[name](*args)


def test_clean_answer():
    text = (
        "Idea: prefer vectors with many twos.\n"
        "```python\nimport numpy as np\n\n\ndef priority(el, n, w):\n"
        "    return float(np.sum(np.array(el) == 2))\n```"
    )
    p = parse_answer(text, ASP)
    assert p.status_hint is None and p.has_code and p.notes == []
    assert p.idea == "prefer vectors with many twos."
    assert run_fn(p.code, "priority", (2, 2, 0), 3, 2) == 2.0


@pytest.mark.parametrize(
    "text, idea",
    [
        ("**Idea:** count zeros first\n```python\ndef priority(el, n, w):\n    return 0.0\n```", "count zeros first"),
        ("- Idea: rank by entropy.\n```python\ndef priority(el, n, w):\n    return 0.0\n```", "rank by entropy."),
        ("### Idea:\nUse the position of the first two.\n```python\ndef priority(el, n, w):\n    return 0.0\n```", "Use the position of the first two."),
        ("IDEA: Balanced blocks win\n\n```python\ndef priority(el, n, w):\n    return 0.0\n```", "Balanced blocks win"),
        ("{The new algorithm scores a vector by the spread of its non-zero entries.}\n```python\ndef priority(el, n, w):\n    return 0.0\n```",
         "The new algorithm scores a vector by the spread of its non-zero entries."),
        ("Sure! Here is my solution:\n\nThis heuristic favours symmetric vectors. It is fast.\n```python\ndef priority(el, n, w):\n    return 0.0\n```",
         "This heuristic favours symmetric vectors."),
        ("```python\ndef priority(el, n, w):\n    # Idea: alternate ones and twos\n    return 0.0\n```", "alternate ones and twos"),
        ('```python\ndef priority(el, n, w):\n    """Score by the number of twos.\n\n    More text."""\n    return 0.0\n```', "Score by the number of twos."),
    ],
)
def test_idea_variants(text, idea):
    p = parse_answer(text, ASP)
    assert p.has_code
    assert p.idea == idea


def test_idea_is_one_line_and_capped():
    long = "word " * 200
    p = parse_answer(f"Idea: {long}\n```python\ndef priority(el, n, w):\n    return 0.0\n```", ASP)
    assert "\n" not in p.idea and len(p.idea) <= 300


def test_bare_code_with_prose_before_and_after():
    text = (
        "Sure! Here is the code:\n\n"
        "import math\n"
        "def priority(el, n, w):\n"
        "    total = 0.0\n"
        "    for i, x in enumerate(el):\n"
        "        total += x * math.sqrt(i + 1)\n"
        "    return total\n\n"
        "This function weights each entry by the square root of its position. It is O(n).\n"
    )
    p = parse_answer(text, ASP)
    assert p.has_code and "This function" not in p.code
    assert "dropped text after the code" in p.notes
    assert p.idea == "This function weights each entry by the square root of its position."
    assert run_fn(p.code, "priority", (1, 0, 0), 3, 1) == 1.0


def test_indented_bare_code():
    text = "Here it is:\n    def priority(el, n, w):\n        return 3.0\nDone, enjoy."
    p = parse_answer(text, ASP)
    assert p.has_code and run_fn(p.code, "priority", (), 0, 0) == 3.0


def test_several_fences_pick_the_one_defining_the_function():
    text = (
        "Example input:\n```text\nel = (0, 1, 2)\n```\n"
        "```python\ndef something_else(a):\n    return a\n```\n"
        "```python\ndef priority(el, n, w):\n    return 7.0\n```\n"
    )
    p = parse_answer(text, ASP)
    assert p.has_code and run_fn(p.code, "priority", (), 0, 0) == 7.0
    assert any("picked code block" in n for n in p.notes)


def test_helper_in_another_fence_is_merged():
    text = (
        "```python\ndef helper(x):\n    return 2 * x\n```\nNow the main function:\n"
        "```python\ndef priority(el, n, w):\n    return helper(1.5)\n```"
    )
    p = parse_answer(text, ASP)
    assert p.has_code and run_fn(p.code, "priority", (), 0, 0) == 3.0
    assert any("merged helper" in n for n in p.notes)


def test_wrong_name_is_renamed_with_recursion_and_missing_import():
    text = (
        "Idea: count zeros\n```\ndef my_priority(el, n, w):\n"
        "    if not el:\n        return 0.0\n"
        "    return float(np.count_nonzero(np.array(el) == 0)) + 0 * my_priority((), n, w)\n```\n"
        "Hope this helps!"
    )
    p = parse_answer(text, ASP)
    assert p.has_code and p.renamed_from == "my_priority"
    assert defines(p.code, "priority") and "my_priority" not in p.code
    assert p.added_imports == ["import numpy as np"]
    assert any("renamed" in n for n in p.notes)
    assert run_fn(p.code, "priority", (0, 1, 0), 3, 1) == 2.0


def test_rename_only_with_right_arity():
    # helper takes 1 argument, main takes 3 under a wrong name: the 3-argument one is renamed
    text = "```python\ndef helper(x):\n    return x\n\ndef score(el, n, w):\n    return helper(1.0)\n```"
    p = parse_answer(text, ASP)
    assert p.renamed_from == "score" and defines(p.code, "helper") and defines(p.code, "priority")
    # two candidates with the right arity: ambiguous, not renamed
    text = "```python\ndef a(el, n, w):\n    return 1.0\n\ndef b(el, n, w):\n    return 2.0\n```"
    p = parse_answer(text, ASP)
    assert p.status_hint is Status.MISSING_FUNCTION and p.renamed_from is None
    # right name never needs the arity; wrong arity under another name is not renamed
    text = "```python\ndef choose(current, unvisited):\n    return 0\n```"
    p = parse_answer(text, TSP)
    assert p.status_hint is Status.MISSING_FUNCTION


def test_rename_tsp_with_defaults_allowed():
    text = (
        "```python\nimport numpy as np\ndef next_node(current_node, destination_node, unvisited_nodes, "
        "distance_matrix, alpha=0.5):\n    d = distance_matrix[current_node, unvisited_nodes]\n"
        "    return int(unvisited_nodes[np.argmin(d)])\n```"
    )
    p = parse_answer(text, TSP)
    assert p.has_code and p.renamed_from == "next_node" and defines(p.code, "select_next_node")


def test_missing_imports_added():
    text = (
        "```python\ndef priority(el: tuple, n: int, w: int) -> float:\n"
        "    c = Counter(el)\n    d = defaultdict(int)\n"
        "    return float(math.log(1 + c[2]) + np.sum(el) + sqrt(4) + len(d))\n```"
    )
    p = parse_answer(text, ASP)
    assert set(p.added_imports) == {
        "from collections import Counter",
        "from collections import defaultdict",
        "import math",
        "import numpy as np",
        "from math import sqrt",
    }
    assert run_fn(p.code, "priority", (2, 2, 0), 3, 2) == pytest.approx(__import__("math").log(3) + 4 + 2)


def test_no_import_added_for_local_names():
    text = "```python\ndef priority(el, n, w):\n    math = 3\n    np = [1]\n    return float(math + np[0])\n```"
    p = parse_answer(text, ASP)
    assert p.added_imports == [] and run_fn(p.code, "priority", (), 0, 0) == 4.0


def test_import_goes_after_future_import():
    text = "```python\nfrom __future__ import annotations\ndef priority(el, n, w):\n    return float(np.sum(el))\n```"
    p = parse_answer(text, ASP)
    lines = p.code.splitlines()
    assert lines[0].startswith("from __future__") and lines[1] == "import numpy as np"


def test_trailing_prose_inside_fence():
    text = "```python\ndef priority(el, n, w):\n    return 1.0\nThis is a simple function that returns 1.\n```"
    p = parse_answer(text, ASP)
    assert p.has_code and "simple function" not in p.code
    assert p.idea == ""  # nothing outside the fence, no docstring


def test_truncated_answer_is_a_syntax_error_not_shorter_code():
    text = (
        "Idea: weighted sum\n```python\nimport math\ndef priority(el, n, w):\n    s = 0\n"
        "    for i, x in enumerate(el):\n        s += x * math."
    )
    p = parse_answer(text, ASP)
    assert p.status_hint is Status.SYNTAX_ERROR and p.code is not None
    assert "def priority" in p.code  # the raw code is kept for the record
    assert any("unclosed" in n for n in p.notes)
    assert p.idea == "weighted sum"


def test_broken_middle_is_not_cut_into_valid_code():
    text = "```python\ndef priority(el, n, w):\n    a = (1 +\n    return a\n\nx = 1\n```"
    p = parse_answer(text, ASP)
    assert p.status_hint is Status.SYNTAX_ERROR


def test_prose_only_and_empty():
    p = parse_answer("I am sorry, I cannot help with this request.", ASP)
    assert p.code is None and p.status_hint is Status.MISSING_FUNCTION
    assert p.idea == "I am sorry, I cannot help with this request."
    assert "no code found" in p.notes
    for empty in ("", None, "   \n\n"):
        p = parse_answer(empty, ASP)
        assert p.code is None and p.status_hint is Status.MISSING_FUNCTION


def test_code_without_the_function():
    p = parse_answer("```python\nx = 1\nprint(x)\n```", ASP)
    assert p.status_hint is Status.MISSING_FUNCTION and p.code is not None


def test_main_block_and_demo_calls_removed():
    text = (
        "Idea: x\n```python\ndef priority(el, n, w):\n    return 0.0\n\n"
        "result = priority((1, 2, 0), 3, 2)\nprint(result)\n"
        "if __name__ == '__main__':\n    print(priority((1, 2, 0), 3, 2))\n```"
    )
    p = parse_answer(text, ASP)
    assert "print" not in p.code and "__main__" not in p.code and "result" not in p.code
    assert defines(p.code, "priority")


def test_think_block_ignored():
    text = "<think>Maybe def priority(a): pass ... Idea: wrong</think>\nIdea: think first.\n```python\ndef priority(el, n, w):\n    return 2.0\n```"
    p = parse_answer(text, ASP)
    assert p.idea == "think first." and run_fn(p.code, "priority", (), 0, 0) == 2.0
    # an opening tag swallowed by the chat template: only the closing one is present
    p = parse_answer("reasoning...\n</think>\nIdea: y\n```python\ndef priority(el, n, w):\n    return 1.0\n```", ASP)
    assert p.idea == "y" and p.has_code


def test_windows_newlines_tabs_and_language_tags():
    text = "Idea: tabs\r\n```Python3\r\ndef priority(el, n, w):\r\n\tx = 1\r\n\treturn float(x)\r\n```\r\n"
    p = parse_answer(text, ASP)
    assert p.has_code and run_fn(p.code, "priority", (), 0, 0) == 1.0
    text = "```py\ndef priority(el, n, w):\n    return 5.0\n```"
    assert run_fn(parse_answer(text, ASP).code, "priority", (), 0, 0) == 5.0


def test_uniformly_indented_fence_is_dedented():
    text = "```python\n    def priority(el, n, w):\n        return 4.0\n```"
    p = parse_answer(text, ASP)
    assert p.has_code and run_fn(p.code, "priority", (), 0, 0) == 4.0


def test_leading_prose_inside_fence():
    text = "```python\nHere is the function:\nimport math\ndef priority(el, n, w):\n    return math.pi\n```"
    p = parse_answer(text, ASP)
    assert p.has_code and "Here is" not in p.code


def test_bare_code_beside_a_non_code_fence():
    text = "Idea: q\ndef priority(el, n, w):\n    return 6.0\n\nExample output:\n```\n42\n```"
    p = parse_answer(text, ASP)
    assert p.has_code and run_fn(p.code, "priority", (), 0, 0) == 6.0


def test_function_name_override_and_arity():
    assert signature_arity(get_task(TSP).signature) == 4
    assert signature_arity("def f(a, b=1, *args, c):") == 2
    assert signature_arity("not a def") is None
    p = parse_answer("```python\ndef g(x):\n    return x\n```", function_name="f", n_args=1)
    assert p.renamed_from == "g" and defines(p.code, "f")
    with pytest.raises(ValueError):
        parse_answer("x")


def test_extract_idea_directly():
    assert extract_idea("Idea: a b c") == "a b c"
    assert extract_idea("Okay:\nHere is my answer:\n") == ""
