"""Static snapshots of the widgets in an executed notebook, for readers without a kernel.

Why: a widget output is only a reference to a model that lives in the kernel; an executed
notebook opened later, exported with nbconvert or shown on a code host, renders that cell
empty (the candidate browser of stage 2 showed nothing; issue 15). The notebook does keep the
models' final state in its metadata, so :func:`freeze_widgets` turns each widget output into
the HTML of that state: the browser's current page with its controls drawn as text. Re-running
the cell in JupyterLab gives the live widget back.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

VIEW = "application/vnd.jupyter.widget-view+json"
STATE = "application/vnd.jupyter.widget-state+json"
MODEL_PREFIX = "IPY_MODEL_"
NOTE = ("<div style='font-size:11px;color:#666'>static snapshot of an interactive widget at the end "
        "of the run; run the cell in JupyterLab for the live one</div>")


def _model_id(ref: Any) -> str:
    return str(ref)[len(MODEL_PREFIX):] if str(ref).startswith(MODEL_PREFIX) else str(ref)


def render_model(model_id: str, models: dict[str, Any], depth: int = 0) -> str:
    """HTML for one widget model and its children, from the saved state."""
    entry = models.get(_model_id(model_id))
    if entry is None or depth > 20:
        return ""
    name, st = entry.get("model_name", ""), entry.get("state", {})
    label = html.escape(str(st.get("description") or ""))
    if name in ("VBoxModel", "HBoxModel", "BoxModel", "GridBoxModel"):
        inner = "".join(render_model(c, models, depth + 1) for c in st.get("children", []))
        direction = "row" if name == "HBoxModel" else "column"
        return f"<div style='display:flex;flex-direction:{direction};gap:12px'>{inner}</div>"
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"<div>{st.get('value', '')}</div>"  # the kit's views: HTML it escaped itself
    if name in ("IntSliderModel", "FloatSliderModel"):
        return (f"<div><b>{label}</b> {html.escape(str(st.get('value')))} "
                f"(of {html.escape(str(st.get('min')))}..{html.escape(str(st.get('max')))})</div>")
    if name in ("CheckboxModel", "ToggleButtonModel"):
        return f"<div>{'☑' if st.get('value') else '☐'} {label}</div>"
    if name in ("DropdownModel", "SelectModel", "RadioButtonsModel", "ToggleButtonsModel"):
        options, index = st.get("_options_labels") or [], st.get("index")
        chosen = options[index] if isinstance(index, int) and 0 <= index < len(options) else ""
        return f"<div><b>{label}</b> {html.escape(str(chosen))}</div>"
    if name in ("LabelModel", "TextModel", "TextareaModel"):
        return f"<div><b>{label}</b> {html.escape(str(st.get('value', '')))}</div>"
    if name in ("FloatProgressModel", "IntProgressModel"):
        return f"<div><b>{label}</b> {html.escape(str(st.get('value')))} / {html.escape(str(st.get('max')))}</div>"
    return ""


def freeze_widgets(nb: Any) -> int:
    """Replace every widget output of ``nb`` (an nbformat notebook) whose model state was saved
    by an HTML snapshot of that state; returns how many were replaced. Idempotent."""
    models = ((nb.metadata.get("widgets") or {}).get(STATE) or {}).get("state") or {}
    frozen = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = out.get("data") or {}
            view = data.get(VIEW)
            if not view or view.get("model_id") not in models:
                continue
            body = render_model(view["model_id"], models)
            if not body:
                continue
            data["text/html"] = f"<div class='aad-kit-widget-snapshot'>{NOTE}{body}</div>"
            del data[VIEW]
            frozen += 1
    return frozen


def freeze_notebook_file(path: str | Path) -> int:
    """:func:`freeze_widgets` on a notebook file, rewritten in place when anything changed."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    n = freeze_widgets(nb)
    if n:
        nbformat.write(nb, str(path))
    return n


__all__ = ["freeze_notebook_file", "freeze_widgets", "render_model"]
