"""Notebook rules checked without running them: what a headless (papermill) run cannot survive."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from aad_kit import prompts, widgets

ROOT = Path(__file__).resolve().parents[1]
# An Output widget (also made by interact / interactive_output) is mirrored by nbclient, which
# sends its state to the kernel mid-cell; that stalled stage 1 in CI (aad_kit/widgets.py).
OUTPUT_WIDGET = re.compile(r"\bOutput\s*\(|\binteract(ive_output|_manual)?\s*\(|@interact\b")


def _code_cells():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                yield f"{path.name} cell {i}", cell.source


def test_the_rule_catches_what_it_is_for():
    for bad in ("box = widgets.Output()", "w = ipywidgets.Output ()", "interact(f, x=1)",
                "@interact\ndef f(x): ...", "interactive_output(f, {})"):
        assert OUTPUT_WIDGET.search(bad), bad
    for fine in ("widgets.HTML()", "MissingStageOutput(", "outputs = []", "interactive = True"):
        assert not OUTPUT_WIDGET.search(fine), fine


def test_no_notebook_or_module_makes_an_output_widget():
    sources = list(_code_cells()) + [
        (str(p.relative_to(ROOT)), p.read_text()) for p in sorted((ROOT / "aad_kit").rglob("*.py"))
    ]
    assert len(sources) > 40
    offenders = [where for where, src in sources if OUTPUT_WIDGET.search(src)]
    assert not offenders, f"Output widgets / interact (use widgets.HTML): {offenders}"


def test_prompt_browser_shows_the_chosen_tasks_prompt():
    box = widgets.prompt_browser(["bin_packing", "tsp_construct"], prompts.i1_prompt)
    chooser, view = box.children
    assert "def priority" in view.value and "select_next_node" not in view.value
    chooser.value = "tsp_construct"
    assert "select_next_node" in view.value
    assert "&lt;" in widgets.prompt_browser(["x"], lambda _: "a < b").children[1].value  # escaped
