"""One page per run: what it did and what it found (``report.md`` and ``report.html``).

Why: the result of a run was spread over six executed notebooks. The pipeline rewrites this
page after every stage from what the stages recorded (the manifest, the tables and figures
under the run directory), so it also shows how far an unfinished run got. The HTML embeds
its figures, so it is one self-contained file that reads offline.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from aad_kit.run_layout import STAGE_ORDER, RunLayout

KEY_FIGURES = ("headline", "teacher_best_so_far", "dar_fitness_subsets", "dpo_training_curves",
               "generalisation_diff_mean_score", "generalisation_search_best_so_far", "ablation")


def _csv_rows(path: Path, limit: int = 40) -> tuple[list[str], list[list[str]]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return (rows[0], rows[1:limit + 1]) if rows else ([], [])


def _fmt(cell: str) -> str:
    try:
        x = float(cell)
    except ValueError:
        return cell
    if x != x:  # NaN
        return "–"
    return f"{x:.4g}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    if not header:
        return ""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def build_markdown(layout: RunLayout) -> str:
    """The report as markdown (figures linked relative to the run directory)."""
    m = layout.read_manifest()
    stages = m.get("stages") or {}
    lines = [f"# aad-kit run `{layout.root.name}`", ""]
    lines.append(f"Profile **{m.get('profile', '?')}**; kit {m.get('aad_kit_version')} at commit "
                 f"`{m.get('git_commit')}`; evaluator version {m.get('evaluator_version')}; "
                 f"started {m.get('created_at', '?')}.")
    if m.get("params"):
        lines.append(f"Parameters: `{json.dumps(m['params'])}`.")
    lines += ["", "## Stages", "", "| stage | wall time | status |", "|---|---|---|"]
    for name in STAGE_ORDER:
        st = stages.get(name) or {}
        done = layout.done_marker(name).exists()
        wall = f"{st['wall_s']:.0f} s" if isinstance(st.get("wall_s"), (int, float)) else "–"
        lines.append(f"| [{name}](notebooks/{name}.ipynb) | {wall} | {'done' if done else 'not run'} |")
    o2 = (stages.get("02_candidate_generation") or {}).get("outputs") or {}
    o5 = (stages.get("05_dpo_training") or {}).get("outputs") or {}
    o6 = (stages.get("06_generalisation") or {}).get("outputs") or {}
    if o2 or o5:
        lines += ["", "## Models and data", ""]
        if o2:
            lines.append(f"- student: `{o2.get('student_model')}`; teacher database: "
                         f"`{o2.get('teacher_db')}` ({len(o2.get('teacher_runs') or [])} run(s)); training task "
                         f"{o2.get('train_task')} / {o2.get('train_setting')}")
        o4 = (stages.get("04_dar_sampling") or {}).get("outputs") or {}
        if o4:
            lines.append(f"- pairs: {o4.get('n_pairs')} ({o4.get('strategy')}); held-out pairs on "
                         f"{o4.get('heldout_settings')}")
        if o5:
            lines.append(f"- DPO: {o5.get('steps')} steps on {o5.get('pairs')} pairs; adapter sha256 "
                         f"`{str(o5.get('adapter_sha256'))[:16]}…`")
        for label, spec in (o6.get("models") or {}).items():
            lines.append(f"- `{label}`: `{spec}`")
    primary = o6.get("primary") or {}
    if primary.get("text"):
        lines += ["", "## Result", "", primary["text"]]
    for name, title in (("headline", "Headline table"), ("power", "Power"), ("copy_audit", "Copy audit"),
                        ("ablation", "Pair strategies by the tuned model (aad-kit ablate)")):
        path = layout.table(name)
        if path.is_file():
            lines += ["", f"### {title}", "", _md_table(*_csv_rows(path))]
    figs = [f for f in KEY_FIGURES if layout.figure(f).is_file()]
    if figs:
        lines += ["", "## Figures", ""]
        lines += [f"![{f}](figures/{f}.png)" for f in figs]
    lines += ["", "Every artifact: `manifest.json` and the executed notebooks in `notebooks/`.", ""]
    return "\n".join(lines)


def _inline(md: str, root: Path) -> str:
    """Minimal markdown -> HTML for the report's own constructs, figures embedded."""
    import re

    out, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{_span(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        m = re.match(r"!\[(.*?)\]\((.*?)\)", line)
        if m:
            img = root / m.group(2)
            data = base64.b64encode(img.read_bytes()).decode() if img.is_file() else ""
            out.append(f'<figure><img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{html.escape(m.group(1))}</figcaption></figure>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_span(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            out.append(f"<li>{_span(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{_span(line)}</p>")
    if in_table:
        out.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}"
             "img{max-width:100%}figure{margin:1em 0}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>aad-kit run</title><style>{style}</style>" \
           f"</head><body>{''.join(out)}</body></html>"


def _span(text: str) -> str:
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    t = re.sub(r"\[(.+?)\]\((.+?)\)", r'<a href="\2">\1</a>', t)
    return t


def write_report(run_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md`` and ``report.html`` into the run directory; returns their paths."""
    layout = RunLayout.of(run_dir)
    md = build_markdown(layout)
    paths = {"md": layout.report_md, "html": layout.report_html}
    paths["md"].write_text(md, encoding="utf-8")
    paths["html"].write_text(_inline(md, layout.root), encoding="utf-8")
    return paths


def summary(layout: RunLayout) -> dict[str, Any]:
    """The run's headline numbers (for the README and tests)."""
    o6 = layout.outputs("06_generalisation")
    return {"primary": o6.get("primary"), "models": o6.get("models")}


__all__ = ["build_markdown", "summary", "write_report"]
