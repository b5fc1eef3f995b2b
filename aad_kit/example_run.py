"""Check a finished run in as an example: its report, executed notebooks, tables and key figures.

Why: the notebooks in ``notebooks/`` carry no outputs, so nothing showed what the kit produces
before a user spent an hour running it (issue 15). ``aad-kit example-run RUN_DIR`` copies the
readable part of a real run into ``docs/example-run/`` and writes a README there saying what
ran, where and when. The heavy artifacts (adapter and checkpoints, pair datasets, databases)
stay behind; their sizes are listed so a reader knows what a run leaves on disk.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from aad_kit.run_archive import mb, tree_size
from aad_kit.run_layout import STAGE_ORDER, RunLayout
from aad_kit.run_report import KEY_FIGURES
from aad_kit.static_widgets import freeze_notebook_file

DEFAULT_DEST = Path("docs") / "example-run"
MARKER = "<!-- written by aad-kit example-run -->"


def _copied_files(layout: RunLayout) -> list[Path]:
    """The run's one-file artifacts worth reading: manifest, report, the answers behind the table
    and the config that records which models wrote them (without it they cannot be re-used)."""
    from aad_kit.evaluation.storage import ANSWERS_JSONL, CONFIG_JSON, SAMPLES_CSV, SUMMARY_CSV

    return [layout.manifest_path, layout.report_md, layout.report_html,
            *(layout.root / name for name in (SUMMARY_CSV, SAMPLES_CSV, ANSWERS_JSONL, CONFIG_JSON))]


def _readme(layout: RunLayout, left_out: dict[str, int]) -> str:
    m = layout.read_manifest()
    stages = m.get("stages") or {}
    params = m.get("params") or {}
    flags = "".join(f" -p {k}={v}" for k, v in params.items())
    lines = [
        MARKER,
        f"# Example run: `{layout.root.name}`",
        "",
        f"One real run of `aad-kit run --profile {m.get('profile')}{flags}`, executed headless and "
        "checked in as it came out: the [report](report.md) ([HTML](report.html), self-contained), "
        "the six executed notebooks in `notebooks/`, the tables and the report's figures. "
        "Nothing here was edited by hand.",
        "",
        f"- started {m.get('created_at')}; kit {m.get('aad_kit_version')} at commit `{m.get('git_commit')}`; "
        f"evaluator version {m.get('evaluator_version')}",
        f"- machine: {m.get('platform', '?')}; Python {(str(m.get('python') or '?').split() or ['?'])[0]}",
        "",
        "| stage | wall time |",
        "|---|---|",
    ]
    total = 0.0
    for name in STAGE_ORDER:
        wall = (stages.get(name) or {}).get("wall_s")
        if isinstance(wall, (int, float)):
            total += wall
            lines.append(f"| [{name}](notebooks/{name}.ipynb) | {wall / 60:.1f} min |")
        else:
            lines.append(f"| {name} | not run |")
    lines.append(f"| total | {total / 60:.0f} min |")
    lines += [
        "",
        "Regenerate (the run takes the times above on a machine like this one):",
        "",
        "```bash",
        f"aad-kit run --profile {m.get('profile')}{flags} --run-dir runs/example",
        "aad-kit example-run runs/example",
        "```",
    ]
    if left_out:
        lines += ["", "Left out of this copy (they stay in the run directory): "
                  + ", ".join(f"`{k}` ({mb(v)})" for k, v in left_out.items()) + "."]
    return "\n".join(lines) + "\n"


def export_example(run_dir: str | os.PathLike[str], dest: str | os.PathLike[str] = DEFAULT_DEST,
                   *, partial: bool = False) -> Path:
    """Copy the readable part of ``run_dir`` into ``dest`` (replacing an earlier example there)."""
    layout = RunLayout.of(run_dir)
    if not layout.manifest_path.is_file():
        raise FileNotFoundError(f"{layout.root} is not a run directory (no manifest.json)")
    missing = [s for s in STAGE_ORDER if not layout.done_marker(s).exists()]
    if missing and not partial:
        raise ValueError(f"{layout.root} is unfinished (not done: {', '.join(missing)}); "
                         "finish it, or pass --partial to check in what there is")
    out = Path(dest)
    if out.exists():
        readme = out / "README.md"
        ours = readme.is_file() and readme.read_text(encoding="utf-8").startswith(MARKER)
        if any(out.iterdir()) and not ours:
            raise FileExistsError(f"{out} holds files not written by aad-kit example-run; "
                                  "choose another destination")
        shutil.rmtree(out)
    (out / "notebooks").mkdir(parents=True)
    for path in _copied_files(layout):
        if path.is_file():
            shutil.copy2(path, out / path.name)
    for nb in sorted((layout.root / "notebooks").glob("*.ipynb")):
        shutil.copy2(nb, out / "notebooks" / nb.name)
        freeze_notebook_file(out / "notebooks" / nb.name)  # runs made before the pipeline froze them
    if layout.tables.is_dir():
        shutil.copytree(layout.tables, out / "tables")
    (out / "figures").mkdir()
    for fig in KEY_FIGURES:
        if layout.figure(fig).is_file():
            shutil.copy2(layout.figure(fig), out / "figures" / f"{fig}.png")
    copied = {p.name for p in out.iterdir()}
    left_out = {p.name: tree_size(p) for p in sorted(layout.root.iterdir())
                if p.name not in copied and p.name not in ("stages",) and not p.name.startswith(".")}
    (out / "README.md").write_text(_readme(layout, left_out), encoding="utf-8")
    return out


def example_run_cli(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="aad-kit example-run", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a finished run directory (aad-kit run --run-dir ...)")
    parser.add_argument("--to", default=str(DEFAULT_DEST), help=f"destination (default: {DEFAULT_DEST})")
    parser.add_argument("--partial", action="store_true", help="allow a run whose stages are not all done")
    args = parser.parse_args(argv)
    out = export_example(args.run_dir, args.to, partial=args.partial)
    files = [p for p in out.rglob("*") if p.is_file()]
    print(f"[aad-kit] example run written to {out}: {len(files)} files, "
          f"{mb(sum(p.stat().st_size for p in files))}; see {out / 'README.md'}")
    return 0


__all__ = ["DEFAULT_DEST", "example_run_cli", "export_example"]
