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


def _widget_notebook():
    from aad_kit.static_widgets import STATE, VIEW

    def model(name, **state):
        return {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}

    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {STATE: {"version_major": 2, "version_minor": 0, "state": {
        "box": model("VBoxModel", children=["IPY_MODEL_row", "IPY_MODEL_view"]),
        "row": model("HBoxModel", children=["IPY_MODEL_slider", "IPY_MODEL_check"]),
        "slider": model("IntSliderModel", description="#", value=3, min=0, max=144),
        "check": model("CheckboxModel", description="valid only", value=True),
        "view": model("HTMLModel", value="<b>id 4</b> · operator <b>e1</b>"),
        "pick": model("DropdownModel", description="task", index=1, _options_labels=["a", "tsp"]),
    }}}
    cell = nbformat.v4.new_code_cell("display(w)")
    view = {"model_id": "box", "version_major": 2, "version_minor": 0}
    cell.outputs = [nbformat.v4.new_output("display_data", data={VIEW: view, "text/plain": "VBox(...)"}),
                    nbformat.v4.new_output("display_data", data={VIEW: dict(view, model_id="pick")}),
                    nbformat.v4.new_output("display_data", data={VIEW: dict(view, model_id="gone")})]
    nb.cells = [cell]
    return nb


def test_freeze_widgets_draws_the_saved_state():
    from aad_kit.static_widgets import VIEW, freeze_widgets

    nb = _widget_notebook()
    assert freeze_widgets(nb) == 2
    first, second, unsaved = (o["data"] for o in nb.cells[0].outputs)
    assert VIEW not in first and first["text/plain"] == "VBox(...)"
    snap = first["text/html"]
    assert "<b>id 4</b> · operator <b>e1</b>" in snap  # the view's page, as the run left it
    assert "<b>#</b> 3 (of 0..144)" in snap and "☑ valid only" in snap and "static snapshot" in snap
    assert "<b>task</b> tsp" in second["text/html"]
    assert VIEW in unsaved and "text/html" not in unsaved  # no saved state: left alone
    assert freeze_widgets(nb) == 0  # idempotent


def test_every_stage_that_evaluates_takes_the_executor_parameter():
    """``-p executor=ray`` must reach every sandbox a stage opens, not just some of them."""
    from aad_kit.sandbox.config import EXECUTORS

    evaluating = 0
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        opens = [src for src in code if "Sandbox(" in src]
        if not opens:
            continue
        evaluating += 1
        params = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        declared = re.search(r'^executor: str = "(\w+)"', params, re.M)
        assert declared and declared.group(1) == "local" and declared.group(1) in EXECUTORS, path.name
        for src in opens:
            assert src.count("Sandbox(profiles.sandbox_config(profile, executor=executor") == src.count(
                "Sandbox("), (path.name, src[:200])
    assert evaluating == 5  # stages 1, 2, 3, 4 and 6 score programs
