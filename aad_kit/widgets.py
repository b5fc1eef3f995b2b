"""Interactive browsers for JupyterLab (they also execute headless under papermill).

Views are ``widgets.HTML`` whose value is rewritten, never ``widgets.Output`` (nor
``interact``, which makes one): under papermill, nbclient mirrors each Output widget and
sends its state back to the kernel on the shell channel in the middle of a cell, and now and
then the reply it is waiting for on that same channel never wakes it, so the run waits
forever (stage 1 stalled this way in CI; issue 11's notes). ``tests/test_notebooks_static``
keeps Output widgets out of the notebooks and this package.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import pandas as pd


def _fmt(value: object) -> str:
    return "—" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def prompt_browser(task_names: list[str], prompt_for) -> widgets.Widget:
    """A task chooser above the prompt text ``prompt_for(task)`` returns."""
    chooser = widgets.Dropdown(options=list(task_names), description="task")
    view = widgets.HTML()

    def render(_: object = None) -> None:
        text = html.escape(prompt_for(chooser.value))
        view.value = f"<pre style='font-size:11px; white-space:pre-wrap'>{text}</pre>"

    chooser.observe(render, names="value")
    render()
    return widgets.VBox([chooser, view])


def candidate_browser(df: pd.DataFrame) -> widgets.Widget:
    """Page through algorithms: code, idea, score, status, operator and parents.

    ``df`` is :meth:`aad_kit.db.AlgorithmDB.to_dataframe` output (any row order).
    """
    rows = df.sort_values(["sample_index", "id"], na_position="first").reset_index(drop=True)
    if rows.empty:
        return widgets.HTML("<i>no algorithms in the database</i>")
    only_valid = widgets.Checkbox(value=False, description="valid only")
    slider = widgets.IntSlider(min=0, max=len(rows) - 1, description="#", continuous_update=False)
    view = widgets.HTML()

    def current() -> pd.DataFrame:
        return rows[rows["status"] == "ok"] if only_valid.value else rows

    def render(_: object = None) -> None:
        sub = current()
        slider.max = max(0, len(sub) - 1)
        if sub.empty:
            view.value = "<i>nothing to show</i>"
            return
        r = sub.iloc[min(slider.value, len(sub) - 1)]
        head = (
            f"<b>id {r['id']}</b> · sample {_fmt(r['sample_index'])} · operator <b>{r['operator']}</b>"
            f" · parents {html.escape(_fmt(r['parent_ids']))} · generation {r['generation']}<br>"
            f"status <b>{r['status']}</b> · score {_fmt(r['score'])} · metric {_fmt(r['metric'])}"
        )
        idea = html.escape(_fmt(r["idea"]))
        code = html.escape(_fmt(r["code"]) if r["code"] else _fmt(r["raw_response"]))
        error = f"<br><span style='color:#c62828'>{html.escape(_fmt(r['error']))[:500]}</span>" if r["error"] else ""
        view.value = f"{head}<br><i>{idea}</i>{error}<pre style='font-size:11px'>{code}</pre>"

    slider.observe(render, names="value")
    only_valid.observe(render, names="value")
    render()
    return widgets.VBox([widgets.HBox([slider, only_valid]), view])
