"""Move a run directory between machines: ``aad-kit pack`` / ``aad-kit unpack``.

Why: a run directory lives on the machine that made it (``runs/`` is not versioned), yet work on
it often continues elsewhere: an ablation on another day's machine, stage 6 read on a laptop
after training on a GPU box, a run handed to a colleague to audit. Everything a later stage, an
ablation branch or a reader needs is small (databases, pairs, logs, tables, answers); what is
large is model state: the Trainer checkpoints (adapter + optimizer, only needed to resume a
training midway) and the adapter's weights. The archive leaves the checkpoints out always and
the adapter unless asked, and says so: ``PACKED.json`` inside lists every path left out, its
size and why, and :func:`unpack` names each stage output that is therefore missing.

SQLite databases are copied with SQLite's backup API, so a pack taken while a stage writes is
still a consistent database. Unpacking accepts plain files and directories only, no absolute
path and no ``..`` (and applies tarfile's ``data`` filter where Python has it): an archive is
data, not instructions.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from aad_kit.run_layout import STAGE_ORDER, RunLayout

PACKED_JSON = "PACKED.json"
CHECKPOINTS_WHY = "Trainer checkpoints (adapter + optimizer state): only needed to resume a training midway"
ADAPTER_WHY = "the adapter's weights (pack with --with-adapter to keep them)"
SQLITE_SUFFIXES = (".sqlite", ".db")


@dataclass(frozen=True)
class PackReport:
    archive: Path
    files: int
    bytes_packed: int
    left_out: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class UnpackReport:
    run_dir: Path
    files: int
    left_out: list[dict[str, Any]]
    missing_outputs: list[tuple[str, str, str]]  # (stage, key, path)


def _excluded(rel: PurePosixPath, with_adapter: bool) -> str | None:
    """Why ``rel`` (a path inside the run, or inside one of its ablation branches) stays out."""
    parts = rel.parts
    for i, part in enumerate(parts[:-1]):
        if part != "dpo":
            continue
        nxt = parts[i + 1]
        if nxt == "checkpoints":
            return CHECKPOINTS_WHY
        if nxt == "adapter" and not with_adapter:
            return ADAPTER_WHY
    return None


def _walk(root: Path, with_adapter: bool) -> Iterator[tuple[Path, PurePosixPath, str | None]]:
    """Every file of the run with its relative path and, when it stays out, why (top-most
    excluded directory only, with the size of everything under it)."""
    stack = [root]
    while stack:
        d = stack.pop()
        for p in sorted(d.iterdir()):
            rel = PurePosixPath(p.relative_to(root).as_posix())
            if p.name.startswith(".") or p.name.endswith(".partial") or p.is_symlink():
                continue  # locks, half-made ablation branches, links out of the run
            if p.name.endswith(("-wal", "-shm", "-journal")):
                continue  # folded into the database by the backup copy
            why = _excluded(rel / "x", with_adapter) if p.is_dir() else _excluded(rel, with_adapter)
            if why is not None:
                yield p, rel, why
            elif p.is_dir():
                stack.append(p)
            elif p.is_file():
                yield p, rel, None


def tree_size(path: Path) -> int:
    """Bytes of a file, or of every file under a directory."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def pack(run_dir: str | Path, archive: str | Path | None = None, *, with_adapter: bool = False) -> PackReport:
    """Write ``run_dir`` to a ``.tar.gz`` (default: ``<run_dir>.tar.gz`` beside it)."""
    from aad_kit.manifest import git_commit, now_iso

    layout = RunLayout.of(run_dir)
    if not layout.manifest_path.is_file():
        raise FileNotFoundError(f"{layout.root} is not a run directory (no manifest.json)")
    out = Path(archive) if archive else layout.root.with_name(layout.root.name + ".tar.gz")
    out = out.expanduser().resolve()
    if out.is_relative_to(layout.root):
        raise ValueError(f"the archive {out} would be inside the run it packs")
    left_out: list[dict[str, Any]] = []
    n_files = n_bytes = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".partial")
    with tempfile.TemporaryDirectory() as scratch, tarfile.open(tmp_out, "w:gz") as tar:
        for path, rel, why in _walk(layout.root, with_adapter):
            if why is not None:
                left_out.append({"path": str(rel), "bytes": tree_size(path), "why": why})
                continue
            source = path
            if path.suffix in SQLITE_SUFFIXES:
                source = Path(scratch) / f"{n_files}{path.suffix}"
                copy_sqlite(path, source)
            tar.add(source, arcname=str(rel), recursive=False)
            n_files += 1
            n_bytes += source.stat().st_size
        meta = {"run": layout.root.name, "packed_at": now_iso(), "kit_commit": git_commit(),
                "files": n_files, "bytes": n_bytes, "with_adapter": with_adapter, "left_out": left_out}
        data = (json.dumps(meta, indent=2) + "\n").encode("utf-8")
        info = tarfile.TarInfo(PACKED_JSON)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tmp_out.replace(out)  # an archive appears whole or not at all
    return PackReport(out, n_files, n_bytes, left_out)


def copy_sqlite(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite database (its WAL included), via SQLite's backup API."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        b.close()
        a.close()


def _missing_outputs(layout: RunLayout, left_out: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """Stage outputs (recorded paths) that lie in what the archive left out."""
    gone = [PurePosixPath(e["path"]) for e in left_out]
    missing = []
    for stage in STAGE_ORDER:
        for key, value in layout.outputs(stage).items():
            if not isinstance(value, str) or key.startswith("why_"):
                continue
            rel = PurePosixPath(value)
            if any(rel == g or g in rel.parents for g in gone):
                missing.append((stage, key, value))
    return missing


def unpack(archive: str | Path, run_dir: str | Path | None = None) -> UnpackReport:
    """Extract an archive made by :func:`pack` into ``run_dir`` (default: ``runs/<run name>``).

    Refuses a destination that exists and is not empty (an unpack never mixes two runs)."""
    src = Path(archive).expanduser()
    with tarfile.open(src, "r:gz") as tar:
        try:
            meta = json.load(tar.extractfile(PACKED_JSON))  # type: ignore[arg-type]
        except KeyError:
            raise ValueError(f"{src} was not made by aad-kit pack (no {PACKED_JSON})") from None
        dest = Path(run_dir) if run_dir else Path("runs") / str(meta.get("run") or src.name.split(".")[0])
        dest = dest.expanduser().resolve()
        if dest.exists() and any(dest.iterdir()):
            raise FileExistsError(f"{dest} exists and is not empty; unpack into a new directory")
        members = [m for m in tar.getmembers() if m.name != PACKED_JSON]
        for m in members:
            name = PurePosixPath(m.name)
            if not (m.isfile() or m.isdir()) or name.is_absolute() or ".." in name.parts:
                raise ValueError(f"{src}: refusing member {m.name!r} (only plain files inside the run)")
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12: also sanitises modes
                tar.extractall(tmp, members=members, filter="data")
            else:  # pragma: no cover - older Pythons; members were checked above
                tar.extractall(tmp, members=members)
        except (tarfile.TarError, OSError):
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if dest.exists():
        dest.rmdir()
    tmp.rename(dest)
    layout = RunLayout(dest)
    left_out = list(meta.get("left_out") or [])
    return UnpackReport(dest, len(members), left_out, _missing_outputs(layout, left_out))


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def pack_cli(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="aad-kit pack", description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", help="a run directory (finished or not)")
    ap.add_argument("-o", "--output", help="archive path (default: RUN_DIR.tar.gz)")
    ap.add_argument("--with-adapter", action="store_true", help="keep the trained adapter's weights")
    args = ap.parse_args(argv)
    try:
        rep = pack(args.run_dir, args.output, with_adapter=args.with_adapter)
    except (FileNotFoundError, ValueError) as err:
        print(f"aad-kit pack: {err}")
        return 2
    print(f"[aad-kit] packed {rep.files} files ({mb(rep.bytes_packed)}) into {rep.archive} "
          f"({mb(rep.archive.stat().st_size)})")
    for e in rep.left_out:
        print(f"  left out {e['path']} ({mb(e['bytes'])}): {e['why']}")
    return 0


def unpack_cli(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="aad-kit unpack", description="restore a run packed by aad-kit pack")
    ap.add_argument("archive")
    ap.add_argument("--to", help="run directory to create (default: runs/<run name>)")
    args = ap.parse_args(argv)
    try:
        rep = unpack(args.archive, args.to)
    except (FileExistsError, ValueError, tarfile.TarError) as err:
        print(f"aad-kit unpack: {err}")
        return 2
    print(f"[aad-kit] {rep.files} files restored into {rep.run_dir}")
    for e in rep.left_out:
        print(f"  not in the archive: {e['path']} ({mb(e['bytes'])}): {e['why']}")
    for stage, key, path in rep.missing_outputs:
        print(f"  {stage} recorded '{key}' at {path}, which is not here: re-run that stage "
              f"(delete stages/{stage}.done) if you need it")
    return 0


__all__ = ["PACKED_JSON", "PackReport", "UnpackReport", "copy_sqlite", "mb", "pack", "pack_cli", "tree_size",
           "unpack", "unpack_cli"]
