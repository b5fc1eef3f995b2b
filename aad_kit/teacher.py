"""Teacher databases: algorithm databases made by the kit's own search with a larger model,
shipped in ``data/teacher/`` so a run can train on them without hours of sampling.

Why: the paper's data comes from searches with a larger model (Llama-3.1-8B) and trains a
smaller one; on 2 CPU cores a teacher needs hours for 1,000 samples, so the database is made
once (resumable, over several sittings), versioned, and loaded by stage 2.

Layout of ``data/teacher/<name>/``:

* ``algorithms.jsonl.gz``: every record of every run (one JSON object per line: the
  :class:`~aad_kit.db.AlgorithmRecord` fields, ids as in the working database);
* ``scores.jsonl.gz`` (optional): the sandbox results of its valid programs on the task's
  other settings (:func:`score_settings`), which stage 4 needs for the held-out pairs; stage 2
  seeds a run's evaluation cache with them (:func:`seed_eval_cache`) so a run does not spend
  minutes re-scoring the same programs;
* ``manifest.json``: the spec, each run's search config, status and sample count, the model's
  info (sha256, provenance), the evaluator version, the kit commit, and the command that
  regenerates or extends it.

The working database (SQLite, resumable) lives in ``<cache>/teacher/<name>.sqlite``; on a fresh
clone :func:`build` first imports the shipped records into it, so ``aad-kit teacher build NAME``
*extends* the shipped database rather than starting over. Records are exported after every
search batch, so an interrupted build loses at most one batch.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aad_kit.config_io import config_from_dict
from aad_kit.db import AlgorithmDB, AlgorithmRecord
from aad_kit.manifest import base_manifest, now_iso

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "teacher"
RECORDS_FILE = "algorithms.jsonl.gz"
MANIFEST_FILE = "manifest.json"
SCORES_FILE = "scores.jsonl.gz"  # sandbox results on other settings (an export of a ResultCache)
REFERENCE_FILE = "reference_answers.jsonl"  # the teacher's own answers (a replay file)


@dataclass(frozen=True)
class TeacherSpec:
    """What a teacher database is made of: one task setting, one model, independent runs."""

    name: str
    task: str
    setting: str
    model: str  # a registered model name (aad_kit.models)
    seeds: tuple[int, ...] = (0, 1)  # one independent search run per seed
    budget_per_run: int = 512
    population_size: int = 16
    batch_size: int = 16  # prompts per call = sequences decoded together (llama.cpp: 16 is the
    # measured sweet spot for the 1.5B model on 2 cores: 24.4 tok/s vs 16.8 at 8, 25.1 at 32)
    max_new_tokens: int = 1024
    temperature: float = 0.8
    seed_heuristics: tuple[str, ...] = ("trivial",)  # the template only: no published programs
    description: str = ""
    path: str | None = None  # an export outside data/teacher (a user's own database); None: shipped

    @classmethod
    def from_export(cls, directory: str | os.PathLike[str]) -> TeacherSpec:
        """The spec of an exported database directory (``algorithms.jsonl.gz`` + manifest),
        e.g. one built elsewhere with ``teacher.build(spec, root=...)``."""
        d = Path(directory)
        man_path = d / MANIFEST_FILE
        if not man_path.is_file() or not (d / RECORDS_FILE).is_file():
            raise FileNotFoundError(f"{d} is not a teacher database export (needs {RECORDS_FILE} and {MANIFEST_FILE})")
        raw = json.loads(man_path.read_text(encoding="utf-8")).get("spec") or {}
        return config_from_dict(cls, raw, exclude={"path"}, path=str(d.resolve()))

    def run_id(self, seed: int) -> str:
        return f"teacher-{self.name}-seed{seed}"

    def search_config(self, seed: int, budget: int | None = None) -> Any:
        from aad_kit.search.eoh import SearchConfig

        return SearchConfig(
            task=self.task, setting=self.setting, budget=budget or self.budget_per_run,
            population_size=self.population_size, batch_size=self.batch_size,
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, seed=seed,
            seed_heuristics=self.seed_heuristics,
        )  # fmt: skip


TEACHERS: dict[str, TeacherSpec] = {
    spec.name: spec
    for spec in (
        TeacherSpec(
            name="admissible_set-n15_w10-qwen2.5-coder-1.5b",
            task="admissible_set",
            setting="n15_w10",
            model="qwen2.5-coder-1.5b",
            description="EoH search on the paper's training task (ASP n=15, w=10) with the "
            "strongest packaged model, seeded with the template only",
        ),
    )
}


def get_teacher(name: str) -> TeacherSpec:
    """A registered (shipped) teacher database by name, or an export directory by path."""
    if name in TEACHERS:
        return TEACHERS[name]
    if os.sep in name or Path(name).is_dir():
        return TeacherSpec.from_export(name)
    raise KeyError(f"unknown teacher database {name!r}; known: {', '.join(TEACHERS)} "
                   f"(or the path of an exported database directory)")


def teacher_for(task: str) -> TeacherSpec | None:
    """The shipped teacher database of ``task`` (None if there is none)."""
    for spec in TEACHERS.values():
        if spec.task == task:
            return spec
    return None


def data_dir(spec: TeacherSpec, root: Path | None = None) -> Path:
    if spec.path and root is None:
        return Path(spec.path)
    return (root or DATA_DIR) / spec.name


def work_db_path(spec: TeacherSpec) -> Path:
    from aad_kit.models import cache_root

    return cache_root() / "teacher" / f"{spec.name}.sqlite"


# ---------------------------------------------------------------------------- read


def _work_db(spec: TeacherSpec, root: Path | None) -> Path:
    """The working database of a build: the cache's, or beside an export under ``root``."""
    return work_db_path(spec) if root is None else data_dir(spec, root) / "work.sqlite"


def load_records(spec: TeacherSpec | str, root: Path | None = None) -> list[dict[str, Any]]:
    """The shipped records of a teacher database (dicts with the AlgorithmRecord fields)."""
    spec = get_teacher(spec) if isinstance(spec, str) else spec
    path = data_dir(spec, root) / RECORDS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no teacher database at {path}; build it with: aad-kit teacher build {spec.name}"
        )
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_manifest(spec: TeacherSpec | str, root: Path | None = None) -> dict[str, Any]:
    spec = get_teacher(spec) if isinstance(spec, str) else spec
    return json.loads((data_dir(spec, root) / MANIFEST_FILE).read_text(encoding="utf-8"))


_RECORD_FIELDS = (
    "operator", "generation", "sample_index", "model_id", "prompt", "raw_response", "code",
    "code_hash", "idea", "score", "metric", "status", "error", "eval_time_s", "notes",
    "finish_reason", "completion_tokens", "created_at",
)  # fmt: skip


# what an export keeps of each session's manifest: enough to say who ran it, when, on what
_SESSION_FIELDS = ("created_at", "git_commit", "aad_kit_version", "evaluator_version", "platform")


def import_into(db: AlgorithmDB, records: Sequence[dict[str, Any]],
                runs: Sequence[dict[str, Any]] = (),
                manifest: dict[str, Any] | None = None) -> dict[int, int]:
    """Copy exported records into ``db`` (run by run), remapping ids so ``parent_ids`` and
    ``duplicate_of`` still point at the right rows; runs already present are skipped.

    ``runs``: the export manifest's run entries. A run with one keeps its config, status,
    dates and the sessions that made it (``history``), and every record keeps its
    ``created_at``, so a database grown over several machines stays auditable.
    ``manifest`` is merged into the run's first-session manifest (where it came from).
    Returns ``{old id: new id}`` of the rows written."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(records, key=lambda r: int(r["id"])):
        by_run.setdefault(str(r["run_id"]), []).append(r)
    entries = {str(e["run_id"]): e for e in runs}
    id_map: dict[int, int] = {}
    existing = {info.run_id for info in db.runs()}
    for run_id, recs in by_run.items():
        if run_id in existing:
            continue
        entry = entries.get(run_id, {})
        config = entry.get("config") or {"task": recs[0]["task"], "setting": recs[0]["setting"],
                                         "imported": True}
        history = list(entry.get("history") or [])
        first = {**(history[0] if history else base_manifest(imported_from="teacher")), **(manifest or {})}
        db.restore_run(run_id, config, first, resumes=history[1:], status=entry.get("status", "running"),
                       created_at=entry.get("created_at"), updated_at=entry.get("updated_at"))
        for r in recs:
            new = db.add_algorithm(
                run_id=run_id, task=r["task"], setting=r["setting"],
                parent_ids=[id_map[p] for p in r.get("parent_ids") or [] if p in id_map],
                duplicate_of=id_map.get(r["duplicate_of"]) if r.get("duplicate_of") is not None else None,
                **{k: r.get(k) for k in _RECORD_FIELDS},
            )  # fmt: skip
            id_map[int(r["id"])] = new
    return id_map


def import_teacher_db(db: AlgorithmDB, spec: TeacherSpec | str, root: Path | None = None) -> list[str]:
    """Stage 2's entry point: the shipped teacher database's runs copied into a run's
    database (once; a resumed stage finds them there). Returns the teacher run ids."""
    spec = get_teacher(spec) if isinstance(spec, str) else spec
    man = load_manifest(spec, root)
    import_into(db, load_records(spec, root), man.get("runs", []),
                manifest={"imported_from": spec.path or f"data/teacher/{spec.name}", "teacher_manifest": man})
    return [r["run_id"] for r in man.get("runs", [])]


# ---------------------------------------------------------------------------- write


def export(spec: TeacherSpec, db: AlgorithmDB, root: Path | None = None,
           model_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the records and manifest of ``spec``'s runs from ``db`` into ``data/teacher``."""
    out = data_dir(spec, root)
    out.mkdir(parents=True, exist_ok=True)
    run_ids = [spec.run_id(s) for s in spec.seeds]
    runs = [db.get_run(r) for r in run_ids]
    runs = [r for r in runs if r is not None]
    records: list[AlgorithmRecord] = []
    for info in runs:
        records.extend(db.records(info.run_id))
    tmp = out / (RECORDS_FILE + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=9) as f:
        for r in records:
            f.write(json.dumps(r.to_dict(), ensure_ascii=False, sort_keys=True) + "\n")
    os.replace(tmp, out / RECORDS_FILE)
    samples = [r for r in records if r.sample_index is not None and r.sample_index >= 0]
    valid = [r for r in samples if r.ok and r.duplicate_of is None]
    first_manifest = runs[0].manifest if runs else {}
    old_path = out / MANIFEST_FILE
    old = json.loads(old_path.read_text(encoding="utf-8")) if old_path.is_file() else {}
    manifest = {
        "name": spec.name,
        "spec": {k: v for k, v in asdict(spec).items() if k != "path"},
        "task": spec.task,
        "setting": spec.setting,
        "model": model_info or first_manifest.get("model"),
        "runs": [
            {"run_id": i.run_id, "status": i.status, "config": i.config,
             "samples": sum(1 for r in samples if r.run_id == i.run_id),
             "created_at": i.created_at, "updated_at": i.updated_at,
             "sessions": len(i.sessions),
             "kit_commits": sorted({m.get("git_commit") or "" for m in i.sessions} - {""}),
             # one entry per session that ran it (kept across fresh machines by import_into)
             "history": [{k: m.get(k) for k in _SESSION_FIELDS} for m in i.sessions]}
            for i in runs
        ],  # fmt: skip
        "n_records": len(records),
        "n_samples": len(samples),
        "n_valid_distinct": len(valid),
        "best_score": max((r.score for r in valid), default=None),
        "updated_at": now_iso(),
        "regenerate": f"aad-kit teacher build {spec.name}",
        **{k: v for k, v in base_manifest().items() if k in
           ("aad_kit_version", "evaluator_version", "git_commit", "python", "platform", "packages")},
        # the reference answers and scores are made by other commands; an export must not drop them
        **({k: old[k] for k in ("reference", "scores") if k in old}),
    }
    tmpm = out / (MANIFEST_FILE + ".tmp")
    tmpm.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmpm, out / MANIFEST_FILE)
    return manifest


def build(spec: TeacherSpec | str, *, seeds: Sequence[int] | None = None, budget: int | None = None,
          root: Path | None = None, sampler: Any = None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume / extend) the teacher searches of ``spec`` and export after every batch.

    ``seeds``/``budget`` override the spec's (a larger budget extends a run only if it was
    started with it: the run's config is compared on resume, so grow a database with new
    seeds). ``sampler``: a ready sampler (tests); default: the spec's model on the default
    engine.
    """
    from aad_kit.llm import make_sampler
    from aad_kit.sandbox import default_sandbox
    from aad_kit.search.eoh import run_search

    spec = get_teacher(spec) if isinstance(spec, str) else spec
    if seeds is not None or budget is not None:
        spec = TeacherSpec(**{**asdict(spec), "seeds": tuple(seeds or spec.seeds),
                              "budget_per_run": budget or spec.budget_per_run})
    db_path = _work_db(spec, root)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    sampler = sampler or make_sampler(spec.model, batch_size=spec.batch_size, progress=progress)
    info = sampler.info()
    with AlgorithmDB(db_path) as db:
        shipped = data_dir(spec, root) / RECORDS_FILE
        if shipped.is_file():
            import_into(db, load_records(spec, root), load_manifest(spec, root).get("runs", []))
        t0 = time.perf_counter()
        for seed in spec.seeds:
            done = db.get_run(spec.run_id(seed))
            if done is not None and done.status == "finished":
                continue  # resuming it would only add a session that sampled nothing

            def _export(_run: str, _n: int) -> None:
                export(spec, db, root, info)

            res = run_search(spec.search_config(seed), sampler, db, default_sandbox(),
                             run_id=spec.run_id(seed), progress=progress, on_batch=_export)
            if progress:
                print(f"[aad-kit teacher] {res.summary()}", file=sys.stderr, flush=True)
        manifest = export(spec, db, root, info)
        manifest["build_seconds_this_call"] = round(time.perf_counter() - t0, 1)
    return manifest


# ---------------------------------------------------------------------------- scores on other settings

# Outcomes left out of the shipped scores (a run re-evaluates those programs itself): a memory
# cap and a sandbox failure depend on the machine's load. Timeouts are shipped because
# re-measuring one costs the whole time limit; the README says on which machines the shipped
# ones were reproduced.
SCORES_LEFT_OUT = ("memory_limit", "sandbox_error")


def score_settings(spec: TeacherSpec | str, settings: Sequence[str] | None = None, *, profile: str = "quick",
                   root: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Score the database's valid programs on ``settings`` (default: the task's other
    settings that ``profile`` evaluates) in the sandbox, as stage 4 does for the held-out
    pairs, and ship the results as :data:`SCORES_FILE`. Resumable: the working cache lives
    beside the working database. Returns the manifest's ``scores`` entry."""
    from aad_kit import profiles
    from aad_kit.code import code_hash
    from aad_kit.preference.heldout import rescored_records
    from aad_kit.sandbox import Sandbox

    spec = get_teacher(spec) if isinstance(spec, str) else spec
    settings = list(settings or [s for s in profiles.settings_for(profile, spec.task) if s != spec.setting])
    records = load_records(spec, root)
    work = _work_db(spec, root).with_suffix(".scores.sqlite")
    work.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    counts: dict[str, dict[str, int]] = {}
    programs: set[tuple[str, str]] = set()  # (setting, code hash): only this database's programs
    with Sandbox(profiles.sandbox_config(profile, cache_path=str(work))) as sandbox:
        for setting in settings:
            rows = rescored_records(records, setting, sandbox)
            c = counts.setdefault(setting, {})
            for r in rows:
                c[r["status"]] = c.get(r["status"], 0) + 1
                programs.add((setting, code_hash(r["code"])))
            if progress:
                print(f"[aad-kit teacher] scores on {setting}: {len(rows)} programs {c}", file=sys.stderr, flush=True)
        n = sandbox.cache.export_rows(data_dir(spec, root) / SCORES_FILE,
                                      keep=lambda r: (r.setting, r.code_hash) in programs
                                      and r.status.value not in SCORES_LEFT_OUT)
    entry = {"file": SCORES_FILE, "settings": settings, "results": n, "status_counts": counts,
             "sandbox_profile": profile, "left_out": list(SCORES_LEFT_OUT),
             "seconds": round(time.perf_counter() - t0, 1), "created_at": now_iso(),
             "machine": _machine(), "regenerate": f"aad-kit teacher scores {spec.name} --settings "
                                                  + " ".join(settings) + f" --profile {profile}",
             **{k: v for k, v in base_manifest().items() if k in ("evaluator_version", "git_commit")}}
    man_path = data_dir(spec, root) / MANIFEST_FILE
    man = json.loads(man_path.read_text(encoding="utf-8"))
    man["scores"] = entry
    man_path.write_text(json.dumps(man, indent=2, default=str) + "\n", encoding="utf-8")
    return entry


def seed_eval_cache(spec: TeacherSpec | str, cache_path: str | Path, root: Path | None = None) -> int:
    """Copy the shipped scores (if any) into a run's evaluation cache; returns the results
    added. Only a lookup with the same task, setting, evaluator version, sandbox limits and
    code hash is served from them, so a run with other limits simply scores anew."""
    from aad_kit.sandbox import ResultCache

    spec = get_teacher(spec) if isinstance(spec, str) else spec
    path = data_dir(spec, root) / SCORES_FILE
    if not path.is_file():
        return 0
    cache = ResultCache(cache_path)
    try:
        return cache.import_rows(path)
    finally:
        cache.close()


# ---------------------------------------------------------------------------- reference answers


def reference_path(spec: TeacherSpec | str, root: Path | None = None) -> Path:
    spec = get_teacher(spec) if isinstance(spec, str) else spec
    return data_dir(spec, root) / REFERENCE_FILE


def task_match(task: str) -> str:
    """The text a replay record matches in ``task``'s i1 prompt (its description's start)."""
    from aad_kit.tasks import get_task

    return " ".join(get_task(task).description.split())[:80]


def make_reference(spec: TeacherSpec | str, tasks: Sequence[str], n: int, *, seeds: Sequence[int] = (0, 1, 2),
                   temperature: float = 0.8, top_p: float = 0.95, max_new_tokens: int = 1024,
                   root: Path | None = None, sampler: Any = None, progress: bool = True) -> Path:
    """The teacher's answers to the fixed task prompt (i1) of each task, ``n`` per seed,
    sampled once with the evaluation's settings and shipped as a replay file, so the
    evaluation's teacher row costs no teacher sampling. Appends per task; existing tasks kept."""
    from aad_kit.llm import GenerationConfig, make_sampler
    from aad_kit.prompts import i1_prompt

    spec = get_teacher(spec) if isinstance(spec, str) else spec
    path = reference_path(spec, root)
    existing = []
    if path.is_file():
        existing = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    sampler = sampler or make_sampler(spec.model, batch_size=spec.batch_size, progress=progress)
    info = sampler.info()
    out = [r for r in existing if r.get("task") not in set(tasks)]
    timing: dict[str, dict[str, float]] = {}
    for task in tasks:
        for seed in seeds:
            cfg = GenerationConfig(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
            t0 = time.perf_counter()
            comps = sampler.sample([i1_prompt(task)], n, cfg)[0]
            dt = time.perf_counter() - t0
            t = timing.setdefault(task, {"seconds": 0.0, "answers": 0, "completion_tokens": 0})
            t["seconds"] = round(t["seconds"] + dt, 2)
            t["answers"] += len(comps)
            t["completion_tokens"] += sum(c.completion_tokens or 0 for c in comps)
            if progress:
                print(f"[aad-kit teacher] reference {task} seed {seed}: {n} answers in "
                      f"{dt:.0f} s", file=sys.stderr, flush=True)
            out += [{"text": c.text, "match": task_match(task), "task": task, "seed": seed, "sample": j,
                     "finish_reason": c.finish_reason, "completion_tokens": c.completion_tokens}
                    for j, c in enumerate(comps)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out), encoding="utf-8")
    os.replace(tmp, path)
    man_path = data_dir(spec, root) / MANIFEST_FILE
    man = json.loads(man_path.read_text(encoding="utf-8")) if man_path.is_file() else {"name": spec.name}
    counts = {t: sum(r.get("task") == t for r in out) for t in sorted({r.get("task") for r in out})}
    man["reference"] = {
        "file": REFERENCE_FILE, "answers_per_task": counts, "seeds": list(seeds),
        "samples_per_seed": n, "prompt": "aad_kit.prompts.i1_prompt(task)",
        "sampling": {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens},
        "model": info, "created_at": now_iso(),
        "timing": {**(man.get("reference") or {}).get("timing", {}), **timing},
        "machine": _machine(),
        "regenerate": (f"aad-kit teacher reference {spec.name} --tasks {' '.join(sorted(counts))} --n {n}"
                       f" --seeds {' '.join(map(str, seeds))} --max-new-tokens {max_new_tokens}"),
    }
    man_path.write_text(json.dumps(man, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _machine() -> dict[str, Any]:
    """The CPU a timing was taken on (speed differs between machines)."""
    import platform

    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "machine": platform.machine()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
        name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "")
        flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
        info["cpu"] = name
        info["simd"] = sorted(f for f in flags if f.startswith(("avx", "amx")))
    except OSError:
        pass
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        pass
    return info


def reference_spec(spec: TeacherSpec | str, tasks: Sequence[str], needed: int, root: Path | None = None) -> str | None:
    """``replay:<file>`` for the evaluation's teacher row when the shipped reference holds at
    least ``needed`` answers for every task in ``tasks`` (else None: too few would repeat)."""
    path = reference_path(spec, root)
    if not path.is_file():
        return None
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if any(sum(r.get("task") == t for r in recs) < needed for t in tasks):
        return None
    return f"replay:{path}"


# ---------------------------------------------------------------------------- CLI


def teacher_cli(argv: Sequence[str] | None = None) -> int:
    """``aad-kit teacher list | build NAME [--seeds 0 1] [--budget N] | scores NAME | show NAME``."""
    ap = argparse.ArgumentParser(prog="aad-kit teacher", description="shipped teacher databases")
    sub = ap.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="registered teacher databases and what is shipped")
    b = sub.add_parser("build", help="run or extend a teacher database (resumable)")
    b.add_argument("name", choices=list(TEACHERS))
    b.add_argument("--seeds", type=int, nargs="+", default=None, help="search runs (seeds)")
    b.add_argument("--budget", type=int, default=None, help="LLM samples per run")
    b.add_argument("--quiet", action="store_true")
    s = sub.add_parser("show", help="print a teacher database's manifest")
    s.add_argument("name", choices=list(TEACHERS))
    sc = sub.add_parser("scores", help="score the database's programs on other settings (ships "
                                       "the results stage 4's held-out pairs need; resumable)")
    sc.add_argument("name", choices=list(TEACHERS))
    sc.add_argument("--settings", nargs="+", default=None,
                    help="default: the task's settings the profile evaluates, but the training one")
    sc.add_argument("--profile", default="quick", help="whose sandbox limits to score with")
    sc.add_argument("--quiet", action="store_true")
    r = sub.add_parser("reference", help="sample the teacher's reference answers (i1 prompt)")
    r.add_argument("name", choices=list(TEACHERS))
    r.add_argument("--tasks", nargs="+", required=True)
    r.add_argument("--n", type=int, required=True, help="answers per seed and task")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--max-new-tokens", type=int, default=1024)
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.action == "list":
        for spec in TEACHERS.values():
            path = data_dir(spec) / MANIFEST_FILE
            state = "not built"
            if path.is_file():
                m = json.loads(path.read_text(encoding="utf-8"))
                state = (f"{m['n_samples']} samples, {m['n_valid_distinct']} valid distinct, "
                         f"best {m['best_score']}, updated {m['updated_at']}")
            print(f"{spec.name}: {spec.description}\n  task {spec.task}/{spec.setting}, model "
                  f"{spec.model}, runs {list(spec.seeds)} x {spec.budget_per_run}; {state}")
        return 0
    if args.action == "show":
        print(json.dumps(load_manifest(args.name), indent=2))
        return 0
    if args.action == "scores":
        e = score_settings(args.name, args.settings, profile=args.profile, progress=not args.quiet)
        print(f"{e['results']} results on {e['settings']} -> {data_dir(get_teacher(args.name)) / SCORES_FILE}")
        return 0
    if args.action == "reference":
        path = make_reference(args.name, args.tasks, args.n, seeds=args.seeds,
                              max_new_tokens=args.max_new_tokens)
        print(path)
        return 0
    m = build(args.name, seeds=args.seeds, budget=args.budget, progress=not args.quiet)
    print(f"{m['name']}: {m['n_samples']} samples, {m['n_valid_distinct']} valid distinct, "
          f"best {m['best_score']} -> {data_dir(get_teacher(args.name))}")
    return 0


__all__ = [
    "DATA_DIR", "TEACHERS", "TeacherSpec", "build", "data_dir", "export", "get_teacher",
    "import_teacher_db", "make_reference", "reference_path", "reference_spec", "task_match",
    "SCORES_FILE", "SCORES_LEFT_OUT", "score_settings", "seed_eval_cache",
    "import_into", "load_manifest", "load_records", "teacher_cli", "teacher_for", "work_db_path",
]
