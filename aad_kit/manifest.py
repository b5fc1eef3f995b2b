"""Run manifests: what produced a result (code, evaluator, packages, machine).

Every run directory and every database run stores one, so any number the kit reports can be
traced back to the evaluator version, the package versions and the git commit behind it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from aad_kit import EVALUATOR_VERSION, __version__

TRACKED_PACKAGES = (
    "numpy", "pandas", "torch", "transformers", "trl", "peft", "datasets", "accelerate",
    "papermill", "matplotlib",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(repo: Path | None = None) -> str | None:
    """The checked-out commit (with ``+dirty`` if tracked code has changes), or None outside git.

    Changes under ``data/`` do not count: a teacher build rewrites its shipped export after
    every batch, and the kit's code, which this names, is unchanged by that."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no", "--", ".",
             ":(exclude)data"],
            capture_output=True, text=True, timeout=5,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def base_manifest(**extra: Any) -> dict[str, Any]:
    return {
        "aad_kit_version": __version__,
        "evaluator_version": EVALUATOR_VERSION,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "created_at": now_iso(),
        **extra,
    }
