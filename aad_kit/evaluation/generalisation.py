"""The generalisation study: does the tuned model write better algorithms than its base model,
on the setting it was trained on, on held-out settings of the same task, and on other tasks?

Design
------
Every model answers the same prompt, :func:`aad_kit.prompts.i1_prompt` (design a new algorithm
from the task description; the prompt the search starts from and the DPO pairs contain).

* **One sampling call per (model, task, seed).** ``samples_per_seed`` answers are drawn with
  ``GenerationConfig(seed=seed, ...)``. The prompt depends on the task, not on the setting,
  so the *same* answers are evaluated on every setting of that task in the grid: cheaper
  (one generation instead of one per setting) and a sharper comparison across settings (a
  difference between settings is then a difference in how the same programs fare, not
  sampling noise).
* **Each answer is parsed** with :func:`aad_kit.search.parsing.parse_answer`. An answer with
  no evaluable code is invalid with the parser's status (``missing_function`` or
  ``syntax_error``) on every setting and is not sent to the sandbox; every other answer is
  scored in the sandbox on each setting (``status``, ``score``, ``metric``).
* **Roles**: ``train`` is the (task, setting) the tuned model was trained on, ``held_out`` the
  other settings of that task, ``other_task`` settings of the other tasks.
* **Pairing**: both models get the same seeds and the same number of answers, so the
  ``(seed, sample)`` index pairs a base answer with a tuned answer. With a seeded local model
  the two share the random numbers of the sampler (common random numbers), and the
  comparison resamples those pairs jointly (:func:`compare_models`).

Files in the run directory
--------------------------
``generalisation_samples.csv``
    The long table: one row per (model, task, setting, seed, sample); see :data:`SAMPLE_COLUMNS`.
``generalisation_answers.jsonl``
    One record per answer (raw text, parsed code and idea, parser notes, tokens): written
    right after each sampling call, so an interrupted run never samples twice.
``generalisation_summary.csv``
    Metrics with bootstrap intervals per (model, task, setting): :func:`summarize`.
``generalisation_comparison.csv``
    Base vs tuned per setting: :func:`compare_models`.
``generalisation_config.json``
    The config and, per model, what determines its answers (spec, adapter / replay file
    sha256, sampling parameters) plus the sampler's ``info()``.
``generalisation_search.sqlite`` / ``generalisation_search_curves.csv``
    Only with the optional same-budget search comparison (:func:`run_search_comparison`).

Resume
------
A re-run with the same run directory skips every (model, task, seed) cell whose rows are
already in ``generalisation_samples.csv``. Finer: a cell that lacks some settings of the
current grid (settings were added) is evaluated on the missing settings only, re-using the
stored answers (no new sampling); a cell whose answers were stored but not yet evaluated
(interrupted run) is evaluated without sampling again. New seeds and new models are sampled.
If a model's sampling parameters or spec (or its adapter's / replay file's content) differ
from what the run directory recorded, :class:`ConfigMismatch` is raised rather than mixing
two different models' answers under one name (``overwrite=True`` drops that model's stored
rows and answers instead).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aad_kit.evaluation import stats
from aad_kit.llm.base import GenerationConfig, Sampler
from aad_kit.models import sha256_file
from aad_kit.tasks import TASK_NAMES, get_task

ROLES: tuple[str, ...] = ("train", "held_out", "other_task")

SAMPLES_CSV = "generalisation_samples.csv"
ANSWERS_JSONL = "generalisation_answers.jsonl"
SUMMARY_CSV = "generalisation_summary.csv"
COMPARISON_CSV = "generalisation_comparison.csv"
CONFIG_JSON = "generalisation_config.json"
SEARCH_DB = "generalisation_search.sqlite"
CURVES_CSV = "generalisation_search_curves.csv"

SAMPLE_COLUMNS: tuple[str, ...] = (
    "model",  # the model's name in the study ("base", "tuned", ...)
    "model_id",  # the sampler's model_id
    "task",
    "setting",
    "role",  # train | held_out | other_task
    "seed",  # GenerationConfig.seed of the sampling call
    "sample",  # index of the answer within its (model, task, seed) call: 0 .. N-1
    "status",  # aad_kit.result.Status value (parser's status when there was no code)
    "valid",  # status == "ok"
    "score",  # higher is better; NaN unless valid
    "metric",  # the task's natural unit; NaN unless valid
    "idea",  # the answer's one-line idea
    "code_hash",  # aad_kit.code.code_hash of the parsed code ("" without code)
    "eval_time",  # seconds the sandbox spent (0 for answers not evaluated)
    "cached",  # the sandbox answered from its cache
    "finish_reason",  # the sampler's: stop | length | error
    "completion_tokens",
    "message",  # the sandbox's (or the parser's) message, shortened
)
_KEY = ("model", "task", "seed")
_ROW_KEY = ("model", "task", "setting", "seed", "sample")
_STR_COLS = ("model", "model_id", "task", "setting", "role", "status", "idea", "code_hash",
             "finish_reason", "message")

# samples_per_seed and seeds per profile (the profile module owns model and settings scope).
class ConfigMismatch(ValueError):
    """The run directory holds answers of a model sampled differently than now asked."""


# =============================================================================== the grid
@dataclass(frozen=True)
class EvalCell:
    """One (task, setting) of the evaluation grid and its role."""

    task: str
    setting: str
    role: str


def _norm_pairs(value: Any, what: str) -> tuple[tuple[str, str], ...]:
    if isinstance(value, Mapping):
        pairs = []
        for k, v in value.items():
            if isinstance(v, str):
                pairs.append((str(k), v))
            else:
                pairs.extend((str(k), str(s)) for s in v)
        return tuple(pairs)
    out = []
    for item in value:
        if isinstance(item, str) or len(item) != 2:
            raise ValueError(f"{what}: expected (name, value) pairs, got {item!r}")
        out.append((str(item[0]), str(item[1])))
    return tuple(out)


def as_list(value: Any) -> list[Any]:
    """A list from a list/tuple, or from a string as a command line gives it
    (``"0,1"``, ``"[0, 1]"``, ``"n20 n50"``); None or ``""`` give ``[]``."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return list(json.loads(text))
            except ValueError:
                text = text.strip("[]")
        return [t.strip().strip("'\"") for t in re.split(r"[,\s]+", text) if t.strip().strip("'\"")]
    if isinstance(value, (int, float)):
        return [value]
    return list(value)


def _dedupe(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class GeneralisationConfig:
    """What the study samples and evaluates (stored in the run directory; see the module doc).

    ``models``: name -> :func:`aad_kit.llm.make_sampler` spec (a mapping or pairs), e.g.
    ``{"base": "smollm2-135m", "tuned": "smollm2-135m@adapter=runs/x/adapter"}``.
    ``other_settings``: ``{task: [setting, ...]}`` or ``(task, setting)`` pairs.
    ``top_k``: the per-seed top-k means to report. ``n_boot``, ``confidence`` and
    ``bootstrap_seed`` configure every bootstrap interval.
    """

    models: tuple[tuple[str, str], ...]
    train_task: str
    train_setting: str | None = None  # None: the task's default setting
    held_out_settings: tuple[str, ...] = ()
    other_settings: tuple[tuple[str, str], ...] = ()
    samples_per_seed: int = 8
    seeds: tuple[int, ...] = (0, 1, 2)
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 512
    top_k: tuple[int, ...] = (1, 3)
    n_boot: int = stats.DEFAULT_N_BOOT
    confidence: float = stats.DEFAULT_CONFIDENCE
    bootstrap_seed: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        models = _norm_pairs(self.models, "models")
        names = [n for n, _ in models]
        if not models or len(set(names)) != len(names) or not all(names):
            raise ValueError(f"models needs unique, non-empty names, got {names}")
        if not all(spec.strip() for _, spec in models):
            raise ValueError("every model needs a sampler spec")
        set_(self, "models", models)
        task = get_task(self.train_task)
        set_(self, "train_task", task.name)
        set_(self, "train_setting", task.setting(self.train_setting).name)
        held = []
        for s in _dedupe(self.held_out_settings):
            name = task.setting(s).name  # validates
            if name != self.train_setting:
                held.append(name)
        set_(self, "held_out_settings", tuple(held))
        others = []
        for t, s in _dedupe(_norm_pairs(self.other_settings, "other_settings")):
            ot = get_task(t)
            if ot.name == task.name:
                raise ValueError(f"other_settings names the training task {t!r}: put "
                                 f"{s!r} in held_out_settings")
            others.append((ot.name, ot.setting(s).name))
        set_(self, "other_settings", tuple(others))
        seeds = tuple(int(s) for s in self.seeds)
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be non-empty and distinct, got {self.seeds}")
        set_(self, "seeds", seeds)
        if int(self.samples_per_seed) < 1:
            raise ValueError("samples_per_seed must be >= 1")
        set_(self, "samples_per_seed", int(self.samples_per_seed))
        if int(self.max_new_tokens) < 1:
            raise ValueError("max_new_tokens must be >= 1")
        set_(self, "max_new_tokens", int(self.max_new_tokens))
        top_k = tuple(sorted({int(k) for k in self.top_k}))
        if any(k < 1 for k in top_k):
            raise ValueError("top_k values must be >= 1")
        set_(self, "top_k", top_k)
        if self.n_boot < 1 or not 0 < self.confidence < 1:
            raise ValueError("need n_boot >= 1 and 0 < confidence < 1")

    # ---------------------------------------------------------------- views
    @property
    def model_specs(self) -> dict[str, str]:
        return dict(self.models)

    @property
    def cells(self) -> list[EvalCell]:
        """The grid: the training setting, then held-out settings, then other tasks."""
        out = [EvalCell(self.train_task, self.train_setting, "train")]  # type: ignore[arg-type]
        out += [EvalCell(self.train_task, s, "held_out") for s in self.held_out_settings]
        out += [EvalCell(t, s, "other_task") for t, s in self.other_settings]
        return out

    @property
    def tasks(self) -> list[str]:
        """Tasks in grid order (the training task first)."""
        return list(dict.fromkeys(c.task for c in self.cells))

    def settings_of(self, task: str) -> list[str]:
        return [c.setting for c in self.cells if c.task == task]

    def role_of(self, task: str, setting: str) -> str:
        for c in self.cells:
            if c.task == task and c.setting == setting:
                return c.role
        raise KeyError(f"({task}, {setting}) is not in the grid")

    def generation_config(self, seed: int) -> GenerationConfig:
        return GenerationConfig(temperature=float(self.temperature), top_p=float(self.top_p),
                                max_new_tokens=self.max_new_tokens, seed=int(seed))

    def grid_frame(self) -> pd.DataFrame:
        """The grid as a table (with each setting's description and time budget)."""
        rows = []
        for c in self.cells:
            s = get_task(c.task).setting(c.setting)
            rows.append({"task": c.task, "setting": c.setting, "role": c.role,
                         "timeout_s": s.timeout_s, "description": s.description})
        return pd.DataFrame(rows)

    def sampling_params(self, model: str) -> dict[str, Any]:
        """What determines ``model``'s answers (compared on resume)."""
        return {"spec": self.model_specs[model], "samples_per_seed": self.samples_per_seed,
                "temperature": float(self.temperature), "top_p": float(self.top_p),
                "max_new_tokens": self.max_new_tokens}

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["models"] = dict(self.models)
        d["other_settings"] = [list(p) for p in self.other_settings]
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GeneralisationConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("held_out_settings", "seeds", "top_k"):
            if k in kw:
                kw[k] = tuple(kw[k])
        if "other_settings" in kw:
            kw["other_settings"] = tuple(tuple(p) for p in kw["other_settings"])
        return cls(**kw)

    # ---------------------------------------------------------------- from a profile
    @classmethod
    def from_profile(
        cls,
        profile: str,
        models: Mapping[str, str],
        *,
        samples_per_seed: int = 0,
        seeds: Sequence[int] | str = (),
        settings: Sequence[str] | str = (),
        max_new_tokens: int = 0,
        top_k: Sequence[int] | str = (),
        **kwargs: Any,
    ) -> GeneralisationConfig:
        """The profile's grid and sizes; any argument left at 0 / empty takes its default.

        The training (task, setting) is the profile's ``search_task`` / ``search_setting``
        (what stage 2 searched and DPO trained on). ``settings``: see :func:`parse_settings`
        (the training setting is always included). List arguments may also be strings as a
        command line passes them (``"0,1"``, ``"[0, 1]"``).
        """
        from aad_kit.profiles import get_profile

        p = get_profile(profile)
        train_task, train_setting, held, others = default_grid(profile)
        seeds = [int(x) for x in as_list(seeds)]
        settings = [str(x) for x in as_list(settings)]
        top = tuple(int(x) for x in as_list(top_k)) or (1, 3)
        if settings:
            held, others = [], []
            for t, s in parse_settings(settings, profile, train_task):
                if t == train_task:
                    held.append(s)
                else:
                    others.append((t, s))
        return cls(
            models=tuple(models.items()),
            train_task=train_task,
            train_setting=train_setting,
            held_out_settings=tuple(held),
            other_settings=tuple(others),
            samples_per_seed=samples_per_seed or p.eval_samples_per_seed,
            seeds=tuple(seeds) or tuple(p.eval_seeds),
            max_new_tokens=max_new_tokens or p.max_new_tokens,
            top_k=top,
            **kwargs,
        )


def default_grid(profile: str) -> tuple[str, str, list[str], list[tuple[str, str]]]:
    """``(train_task, train_setting, held_out_settings, other_task_settings)`` of a profile:
    its training task and setting, ``eval_held_out`` and ``eval_other``
    (:mod:`aad_kit.profiles`; the pre-registered grid of the main experiment)."""
    from aad_kit.profiles import get_profile

    p = get_profile(profile)
    task = get_task(p.search_task)
    train = task.setting(p.search_setting).name
    held = [task.setting(s).name for s in p.eval_held_out if task.setting(s).name != train]
    others = [(get_task(t).name, get_task(t).setting(s).name) for t, s in p.eval_other]
    return task.name, train, held, others


def parse_settings(entries: Sequence[str], profile: str, train_task: str) -> list[tuple[str, str]]:
    """``"task:setting"``, a bare setting name (of the training task, else of the one task
    that has it) or a bare task name (that task's settings under ``profile``)."""
    from aad_kit.profiles import settings_for

    out: list[tuple[str, str]] = []
    for raw in entries:
        entry = str(raw).strip()
        if not entry:
            continue
        if entry in TASK_NAMES:
            out += [(entry, s) for s in settings_for(profile, entry)]
            continue
        task_part, sep, setting = entry.rpartition(":")
        if sep:
            t = get_task(task_part)
            out.append((t.name, t.setting(setting).name))
            continue
        if entry in get_task(train_task).settings:
            out.append((get_task(train_task).name, entry))
            continue
        owners = [t for t in TASK_NAMES if entry in get_task(t).settings]
        if len(owners) != 1:
            raise KeyError(
                f"setting {entry!r} " + ("is ambiguous" if owners else "is unknown")
                + f"; write task:setting (tasks: {', '.join(TASK_NAMES)})"
            )
        out.append((owners[0], entry))
    return list(dict.fromkeys(out))


# =============================================================================== models
def with_adapter(base_spec: str, adapter_dir: str | os.PathLike[str]) -> str:
    """The spec of ``base_spec`` plus a LoRA adapter (local Hugging Face models only)."""
    spec = base_spec.strip()
    if spec.startswith(("replay:", "openai:")):
        raise ValueError(f"an adapter applies to a local model, not to {spec!r}; give the "
                         "tuned model's own spec instead")
    if "@adapter=" in spec:
        raise ValueError(f"{spec!r} already has an adapter")
    return f"{spec}@adapter={Path(adapter_dir).expanduser().resolve()}"


def is_adapter_dir(path: str | os.PathLike[str] | None) -> bool:
    return bool(path) and (Path(path) / "adapter_config.json").is_file()  # type: ignore[arg-type]


def resolve_models(
    profile: str,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    base_model: str = "",
    adapter_dir: str | os.PathLike[str] | None = None,
    tuned_model: str = "",
) -> tuple[dict[str, str], str]:
    """``({"base": spec, "tuned": spec}, explanation)``; ``tuned`` is left out when there is
    no tuned model (no ``tuned_model``, no ``adapter_dir``, no adapter from the run's DPO stage).

    ``base_model`` empty: the profile's model. ``tuned_model`` (a full spec) wins over an
    adapter. An explicitly given ``adapter_dir`` must be a PEFT adapter directory.
    """
    from aad_kit.profiles import get_profile

    base = base_model.strip() or get_profile(profile).model
    models = {"base": base}
    if tuned_model.strip():
        models["tuned"] = tuned_model.strip()
        return models, f"base: {base}; tuned: {models['tuned']} (given)"
    if adapter_dir:
        if not is_adapter_dir(adapter_dir):
            raise FileNotFoundError(f"{adapter_dir} is not a LoRA adapter directory "
                                    "(no adapter_config.json)")
        models["tuned"] = with_adapter(base, adapter_dir)
        return models, f"base: {base}; tuned: base + adapter {adapter_dir}"
    from aad_kit.training.dpo import run_adapter_dir

    default = run_adapter_dir(run_dir) if run_dir else None
    if default is not None and is_adapter_dir(default):
        models["tuned"] = with_adapter(base, default)
        return models, f"base: {base}; tuned: base + adapter {default} (from the run directory)"
    where = f"{default}" if default is not None else "<run_dir>/dpo/adapter (no run_dir given)"
    return models, (
        f"base: {base}. No tuned model: no tuned_model or adapter_dir was given and there is no "
        f"adapter at {where}. Only the base model is evaluated; the base-vs-tuned comparison is "
        "skipped. Run the DPO stage first, or pass adapter_dir / tuned_model."
    )


def _dir_sha256(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(q for q in path.iterdir() if q.is_file()):
        h.update(f"{p.name}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def spec_fingerprint(spec: str) -> dict[str, Any]:
    """The spec plus the sha256 of what it points at when that can change under one name
    (an adapter directory, a replay file)."""
    fp: dict[str, Any] = {"spec": spec}
    _, sep, adapter = spec.rpartition("@adapter=")
    if sep and Path(adapter).expanduser().is_dir():
        fp["adapter_sha256"] = _dir_sha256(Path(adapter).expanduser())
    if spec.startswith("replay:") and Path(spec[len("replay:"):]).expanduser().is_file():
        fp["replay_sha256"] = sha256_file(Path(spec[len("replay:"):]).expanduser())
    return fp


# =============================================================================== storage
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _clean_text(text: Any, limit: int = 300) -> str:
    s = _CONTROL.sub(" ", str(text or "")).strip()
    return s if len(s) <= limit else s[: limit - 3] + "..."


def empty_samples() -> pd.DataFrame:
    return _typed(pd.DataFrame(columns=list(SAMPLE_COLUMNS)))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reindex(columns=list(SAMPLE_COLUMNS))
    for col in ("score", "metric", "eval_time", "completion_tokens"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    for col in ("seed", "sample"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("int64")
    for col in ("valid", "cached"):
        df[col] = df[col].map(lambda v: str(v).strip().lower() in ("true", "1")).astype(bool)
    for col in _STR_COLS:
        df[col] = df[col].fillna("").astype(str)
    return df


def load_samples(run_dir: str | os.PathLike[str] | None) -> pd.DataFrame:
    """The stored long table (empty when there is none)."""
    path = Path(run_dir) / SAMPLES_CSV if run_dir else None
    if path is None or not path.is_file():
        return empty_samples()
    return _typed(pd.read_csv(path, dtype=str, keep_default_na=False))


def _write_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def load_answers(run_dir: str | os.PathLike[str] | None) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    """Stored answers per (model, task, seed), each list in sample order (complete cells only;
    a truncated last line from an interrupted write is ignored)."""
    path = Path(run_dir) / ANSWERS_JSONL if run_dir else None
    out: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    if path is None or not path.is_file():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            key = (rec["model"], rec["task"], int(rec["seed"]))
            out.setdefault(key, []).append(rec)
    for key, recs in list(out.items()):
        by_index = {int(r["sample"]): r for r in recs}  # a re-sampled cell: the last one wins
        out[key] = [by_index[i] for i in sorted(by_index)]
    return out


def _append_answers(run_dir: Path | None, records: Sequence[dict[str, Any]]) -> None:
    if run_dir is None:
        return
    with open(run_dir / ANSWERS_JSONL, "a", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _read_state(run_dir: Path | None) -> dict[str, Any]:
    if run_dir is None or not (run_dir / CONFIG_JSON).is_file():
        return {"models": {}, "model_info": {}}
    state = json.loads((run_dir / CONFIG_JSON).read_text(encoding="utf-8"))
    state.setdefault("models", {})
    state.setdefault("model_info", {})
    return state


def _write_state(run_dir: Path | None, state: dict[str, Any]) -> None:
    if run_dir is None:
        return
    tmp = run_dir / (CONFIG_JSON + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, run_dir / CONFIG_JSON)


def _drop_model(run_dir: Path, model: str) -> None:
    df = load_samples(run_dir)
    if len(df):
        _write_atomic(df[df["model"] != model], run_dir / SAMPLES_CSV)
    path = run_dir / ANSWERS_JSONL
    if path.is_file():
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("model") != model:
                    kept.append(line)
            except ValueError:
                continue
        path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")


# =============================================================================== running
@dataclass
class GeneralisationResult:
    """What :func:`run_generalisation` returns."""

    config: GeneralisationConfig
    run_dir: Path | None
    samples: pd.DataFrame  # the long table, restricted to this config's grid
    summary: pd.DataFrame  # :func:`summarize`
    comparison: pd.DataFrame | None  # :func:`compare_models` (None without base and tuned)
    cells_done: int  # (model, task, seed) cells evaluated in this call
    cells_skipped: int  # cells already complete in the run directory
    answers_sampled: int  # answers drawn from a model in this call
    answers_reused: int  # stored answers evaluated again (new settings / interrupted run)
    timings: dict[str, float] = field(default_factory=dict)
    model_info: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    def describe(self) -> str:
        t = self.timings
        return (
            f"{self.cells_done} cells evaluated, {self.cells_skipped} skipped (already done); "
            f"{self.answers_sampled} answers sampled, {self.answers_reused} re-used; "
            f"model loading {t.get('load_s', 0):.1f} s, sampling {t.get('sampling_s', 0):.1f} s, "
            f"evaluation {t.get('evaluation_s', 0):.1f} s, total {t.get('total_s', 0):.1f} s"
        )


def _sample_cell(sampler: Sampler, model: str, task: str, seed: int,
                 config: GeneralisationConfig) -> tuple[list[dict[str, Any]], float]:
    from aad_kit.code import code_hash
    from aad_kit.prompts import i1_prompt
    from aad_kit.search.parsing import parse_answer

    prompt = i1_prompt(task)
    t0 = time.perf_counter()
    completions = sampler.sample([prompt], n=config.samples_per_seed,
                                 config=config.generation_config(seed))[0]
    wall = time.perf_counter() - t0
    if len(completions) != config.samples_per_seed:
        raise RuntimeError(f"sampler {getattr(sampler, 'model_id', sampler)!r} returned "
                           f"{len(completions)} answers, asked for {config.samples_per_seed}")
    model_id = str(getattr(sampler, "model_id", "") or "")
    records = []
    for j, c in enumerate(completions):
        parsed = parse_answer(c.text, task)
        records.append({
            "model": model, "model_id": model_id, "task": task, "seed": int(seed), "sample": j,
            "text": c.text, "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens, "latency_s": c.latency_s,
            "code": parsed.code, "idea": parsed.idea,
            "status_hint": parsed.status_hint.value if parsed.status_hint is not None else None,
            "code_hash": code_hash(parsed.code) if parsed.code else "",
            "notes": list(parsed.notes),
        })
    return records, wall


def _evaluate_cell(evaluator: Any, answers: Sequence[dict[str, Any]], settings: Sequence[str],
                   config: GeneralisationConfig) -> tuple[list[dict[str, Any]], float]:
    """Rows of one (model, task, seed) cell on ``settings``."""
    evaluable = [a for a in answers if a.get("code") and not a.get("status_hint")]
    jobs = [(a["task"], a["code"], s) for a in evaluable for s in settings]
    t0 = time.perf_counter()
    results = evaluator.evaluate_many(jobs, progress=False) if jobs else []
    wall = time.perf_counter() - t0
    if len(results) != len(jobs):
        raise RuntimeError(f"the evaluator returned {len(results)} results for {len(jobs)} jobs")
    by_job = iter(results)
    res_of: dict[tuple[int, str], Any] = {}
    for a in evaluable:
        for s in settings:
            res_of[(int(a["sample"]), s)] = next(by_job)
    rows = []
    for a in answers:
        for s in settings:
            base = {
                "model": a["model"], "model_id": a.get("model_id", ""), "task": a["task"],
                "setting": s, "role": config.role_of(a["task"], s), "seed": int(a["seed"]),
                "sample": int(a["sample"]), "idea": _clean_text(a.get("idea")),
                "code_hash": a.get("code_hash") or "",
                "finish_reason": a.get("finish_reason") or "",
                "completion_tokens": a.get("completion_tokens"),
            }
            r = res_of.get((int(a["sample"]), s))
            if r is None:
                notes = "; ".join(a.get("notes") or [])
                base.update(status=a.get("status_hint") or "missing_function", valid=False,
                            score=math.nan, metric=math.nan, eval_time=0.0, cached=False,
                            message=_clean_text(f"not evaluated (parser): {notes}"))
            else:
                status = getattr(r.status, "value", str(r.status))
                ok = status == "ok"
                base.update(
                    status=status, valid=ok,
                    score=float(r.score) if ok and r.score is not None else math.nan,
                    metric=float(r.metric) if ok and r.metric is not None else math.nan,
                    eval_time=float(r.runtime_s or 0.0), cached=bool(r.cached),
                    message=_clean_text(r.message),
                )
            rows.append(base)
    return rows, wall


def _order(df: pd.DataFrame, config: GeneralisationConfig) -> pd.DataFrame:
    """Rows sorted by model (config order), grid order, seed, sample."""
    if df.empty:
        return df
    model_rank = {m: i for i, (m, _) in enumerate(config.models)}
    cell_rank = {(c.task, c.setting): i for i, c in enumerate(config.cells)}
    key = pd.DataFrame({
        "m": df["model"].map(lambda m: model_rank.get(m, len(model_rank))),
        "c": [cell_rank.get((t, s), len(cell_rank)) for t, s in zip(df["task"], df["setting"], strict=True)],
        "seed": df["seed"], "sample": df["sample"],
    }, index=df.index)
    return df.loc[key.sort_values(["m", "c", "seed", "sample"], kind="stable").index].reset_index(drop=True)


def restrict(samples: pd.DataFrame, config: GeneralisationConfig) -> pd.DataFrame:
    """The rows of ``samples`` that belong to ``config`` (its models, grid and seeds)."""
    if samples.empty:
        return samples
    cells = {(c.task, c.setting) for c in config.cells}
    mask = (
        samples["model"].isin(config.model_specs)
        & samples["seed"].isin(config.seeds)
        & (samples["sample"] < config.samples_per_seed)
        & pd.Series([(t, s) in cells for t, s in zip(samples["task"], samples["setting"], strict=True)],
                    index=samples.index)
    )
    out = samples[mask].copy()
    out["role"] = [config.role_of(t, s) for t, s in zip(out["task"], out["setting"], strict=True)]
    return _order(out, config)


def run_generalisation(
    config: GeneralisationConfig,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    samplers: Mapping[str, Sampler] | None = None,
    sandbox: Any | None = None,
    progress: bool = True,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> GeneralisationResult:
    """Sample, parse, evaluate and summarise (resumably; see the module docstring).

    ``samplers``: ready samplers by model name (tests, or a model already loaded); a model
    without one is built with :func:`aad_kit.llm.make_sampler` from its spec when it has
    something to sample, one model at a time. ``sandbox``: an :class:`aad_kit.sandbox.Sandbox`
    (or anything with ``evaluate_many``); default: a new one with the run's evaluation cache.
    Without ``run_dir`` nothing is written and nothing is resumed.
    """
    from aad_kit.llm import make_sampler

    say = log or (print if progress else (lambda _msg: None))
    t_start = time.perf_counter()
    out = Path(run_dir) if run_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    state = _read_state(out)
    fingerprints = {m: {**config.sampling_params(m), **spec_fingerprint(spec)}
                    for m, spec in config.models}
    for m, fp in fingerprints.items():
        stored = state["models"].get(m)
        if stored is not None and stored != fp:
            diff = {k: (stored.get(k), fp.get(k)) for k in set(stored) | set(fp)
                    if stored.get(k) != fp.get(k)}
            if not overwrite:
                raise ConfigMismatch(
                    f"{out} holds answers of model {m!r} sampled with different parameters "
                    f"(stored, now): {diff}. Use a new run directory, or overwrite=True to "
                    f"drop {m!r}'s stored answers."
                )
            assert out is not None
            _drop_model(out, m)
            say(f"[{m}] parameters changed ({sorted(diff)}): dropped its stored answers")
        state["models"][m] = fp
    state["config"] = config.to_dict()
    _write_state(out, state)

    samples = load_samples(out)
    answers = load_answers(out)
    done = set(zip(*(samples[c] for c in ("model", "task", "setting", "seed")), strict=True)) if len(samples) else set()

    own_sandbox = sandbox is None
    if own_sandbox:
        from aad_kit.sandbox import Sandbox, SandboxConfig
        from aad_kit.scoring import run_cache_path

        sandbox = Sandbox(SandboxConfig(cache_path=run_cache_path(out)))
    timings = {"load_s": 0.0, "sampling_s": 0.0, "evaluation_s": 0.0}
    counts = {"done": 0, "skipped": 0, "sampled": 0, "reused": 0}
    messages: list[str] = []
    model_info: dict[str, Any] = dict(state.get("model_info", {}))
    try:
        for model, spec in config.models:
            todo = []
            for task in config.tasks:
                for seed in config.seeds:
                    missing = [s for s in config.settings_of(task) if (model, task, s, seed) not in done]
                    if missing:
                        todo.append((task, seed, missing))
                    else:
                        counts["skipped"] += 1
            if not todo:
                say(f"[{model}] every cell already in {SAMPLES_CSV}: skipped")
                continue
            sampler: Sampler | None = None
            own_sampler = False
            try:
                for task, seed, missing in todo:
                    key = (model, task, seed)
                    stored = answers.get(key)
                    cell_done_before = any((model, task, s, seed) in done for s in config.settings_of(task))
                    if stored is not None and len(stored) >= config.samples_per_seed:
                        cell_answers = stored[: config.samples_per_seed]
                        counts["reused"] += len(cell_answers)
                        how = "re-used stored answers"
                    else:
                        if cell_done_before:
                            msg = (f"[{model}] {task} seed {seed}: answers missing from {ANSWERS_JSONL}; "
                                   "sampling again for the new settings (a non-deterministic backend "
                                   "gives other answers than the stored rows)")
                            messages.append(msg)
                            say(msg)
                        if sampler is None:
                            t0 = time.perf_counter()
                            if samplers is not None and model in samplers:
                                sampler = samplers[model]
                            else:
                                sampler = make_sampler(spec)
                                own_sampler = True
                            timings["load_s"] += time.perf_counter() - t0
                            model_info[model] = _info(sampler)
                            state["model_info"] = model_info
                            _write_state(out, state)
                        cell_answers, wall = _sample_cell(sampler, model, task, seed, config)
                        timings["sampling_s"] += wall
                        counts["sampled"] += len(cell_answers)
                        _append_answers(out, cell_answers)
                        answers[key] = cell_answers
                        how = f"sampled {len(cell_answers)} answers in {wall:.1f} s"
                    rows, wall = _evaluate_cell(sandbox, cell_answers, missing, config)
                    timings["evaluation_s"] += wall
                    new = _typed(pd.DataFrame(rows))
                    samples = new if samples.empty else pd.concat([samples, new], ignore_index=True)
                    samples = samples.drop_duplicates(list(_ROW_KEY), keep="last")
                    if out is not None:
                        _write_atomic(_order(samples, config), out / SAMPLES_CSV)
                    done.update((model, task, s, seed) for s in missing)
                    counts["done"] += 1
                    n_valid = int(new["valid"].sum())
                    say(f"[{model}] {task} seed {seed}: {how}; evaluated on {len(missing)} "
                        f"setting(s) in {wall:.1f} s: {n_valid}/{len(new)} valid")
            finally:
                if own_sampler:
                    del sampler
                    gc.collect()
    finally:
        if own_sandbox:
            sandbox.close()

    mine = restrict(samples, config)
    summary = summarize(mine, top_k=config.top_k, n_boot=config.n_boot,
                        confidence=config.confidence, seed=config.bootstrap_seed)
    comparison = None
    if {"base", "tuned"} <= set(config.model_specs):
        comparison = compare_models(mine, "base", "tuned", n_boot=config.n_boot,
                                    confidence=config.confidence, seed=config.bootstrap_seed)
    if out is not None:
        _write_atomic(summary, out / SUMMARY_CSV)
        if comparison is not None:
            _write_atomic(comparison, out / COMPARISON_CSV)
    timings["total_s"] = time.perf_counter() - t_start
    return GeneralisationResult(
        config=config, run_dir=out, samples=mine, summary=summary, comparison=comparison,
        cells_done=counts["done"], cells_skipped=counts["skipped"],
        answers_sampled=counts["sampled"], answers_reused=counts["reused"],
        timings=timings, model_info=model_info, messages=messages,
    )


def _info(sampler: Any) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(dict(sampler.info()), default=str))
    except Exception as e:  # noqa: BLE001 - provenance is best effort
        return {"model_id": getattr(sampler, "model_id", None), "info_error": repr(e)}


# =============================================================================== metrics
def summarize(
    samples: pd.DataFrame,
    *,
    top_k: Sequence[int] = (1, 3),
    n_boot: int = stats.DEFAULT_N_BOOT,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> pd.DataFrame:
    """Metrics per (model, task, setting), with percentile-bootstrap intervals.

    * ``valid_rate`` (+ ``_lo``/``_hi``): share of answers with status ok; bootstrap over
      answers. ``valid_rate_wilson_lo``/``_hi``: the Wilson interval, which unlike the
      bootstrap does not collapse to a point at 0 % or 100 %.
    * ``mean_score`` (+ CI): mean score over valid answers; bootstrap over answers (invalid
      ones included, so the number of valid answers varies as in a repeat). NaN when the model
      has no valid answer on the setting (never 0). ``mean_metric``: the same in the task's
      unit (no CI).
    * ``best_score`` / ``best_metric``: the best valid answer (no CI: a bootstrap interval
      of a maximum is not meaningful).
    * ``top{k}_mean`` (+ CI): per seed, the mean of the k best valid scores (best-of-N for
      k = 1), averaged over seeds; bootstrap over seeds. A seed with fewer than k valid
      answers has no top-k; ``top{k}_seeds`` says how many seeds contributed.
    * ``distinct_valid``: distinct valid programs (by normalised code hash).
    """
    rows = []
    if samples.empty:
        return pd.DataFrame(rows)
    group_cols = ["model", "task", "setting", "role"]
    for (model, task, setting, role), g in samples.groupby(group_cols, sort=False):
        valid = g["valid"].to_numpy(dtype=bool)
        scores = np.where(valid, g["score"].to_numpy(dtype=float), np.nan)
        metrics = np.where(valid, g["metric"].to_numpy(dtype=float), np.nan)
        kw = {"n_boot": n_boot, "confidence": confidence, "seed": seed}
        vr = stats.bootstrap_ci(valid.astype(float), "mean", **kw)
        wl, wh = stats.wilson_interval(int(valid.sum()), len(valid), confidence)
        ms = stats.bootstrap_ci(scores, "nanmean", **kw)
        t = get_task(task)
        row: dict[str, Any] = {
            "model": model, "task": task, "setting": setting, "role": role,
            "n_seeds": int(g["seed"].nunique()), "n_samples": len(g), "n_valid": int(valid.sum()),
            "valid_rate": vr.estimate, "valid_rate_lo": vr.lo, "valid_rate_hi": vr.hi,
            "valid_rate_wilson_lo": wl, "valid_rate_wilson_hi": wh,
            "mean_score": ms.estimate, "mean_score_lo": ms.lo, "mean_score_hi": ms.hi,
            "mean_score_failed_resamples": ms.n_failed,
            "mean_metric": float(np.nanmean(metrics)) if valid.any() else math.nan,
        }
        if valid.any():
            best = int(np.nanargmax(scores))
            row["best_score"], row["best_metric"] = float(scores[best]), float(metrics[best])
        else:
            row["best_score"] = row["best_metric"] = math.nan
        for k in top_k:
            per_seed = [stats.top_k_mean(np.where(sg["valid"], sg["score"], np.nan), k)
                        for _, sg in g.groupby("seed", sort=True)]
            ci = stats.bootstrap_mean(per_seed, **kw)
            row.update({f"top{k}_mean": ci.estimate, f"top{k}_lo": ci.lo, f"top{k}_hi": ci.hi,
                        f"top{k}_seeds": ci.n})
        row["distinct_valid"] = int(g.loc[g["valid"], "code_hash"].nunique())
        row["metric_name"] = t.metric_name
        row["metric_lower_is_better"] = bool(t.metric_lower_is_better)
        row["n_boot"] = n_boot
        row["confidence"] = confidence
        rows.append(row)
    return pd.DataFrame(rows)


def compare_models(
    samples: pd.DataFrame,
    base: str = "base",
    tuned: str = "tuned",
    *,
    n_boot: int = stats.DEFAULT_N_BOOT,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> pd.DataFrame:
    """``tuned`` minus ``base`` per (task, setting): valid rate and mean score over valid.

    When both models have answers for the same ``(seed, sample)`` indices the answers are
    paired and the pairs are resampled jointly (``paired=True``); otherwise each model's
    answers are resampled independently. ``*_differs`` is True when the interval excludes 0,
    i.e. the difference is distinguishable from 0 at the chosen confidence. A mean-score
    difference is NaN when either model has no valid answer on the setting.
    """
    rows = []
    if samples.empty:
        return pd.DataFrame(rows)
    kw = {"n_boot": n_boot, "confidence": confidence, "seed": seed}
    for (task, setting), g in samples.groupby(["task", "setting"], sort=False):
        a = g[g["model"] == base].sort_values(["seed", "sample"])
        b = g[g["model"] == tuned].sort_values(["seed", "sample"])
        if a.empty or b.empty:
            continue
        paired = list(zip(a["seed"], a["sample"], strict=True)) == list(zip(b["seed"], b["sample"], strict=True))
        va, vb = a["valid"].to_numpy(float), b["valid"].to_numpy(float)
        sa = np.where(a["valid"], a["score"], np.nan).astype(float)
        sb = np.where(b["valid"], b["score"], np.nan).astype(float)
        dv = stats.bootstrap_diff(va, vb, "mean", paired=paired, **kw)
        ds = stats.bootstrap_diff(sa, sb, "nanmean", paired=paired, **kw)
        row = {
            "task": task, "setting": setting, "role": g["role"].iloc[0],
            "n_base": len(a), "n_tuned": len(b), "paired": paired,
            "valid_rate_base": float(va.mean()), "valid_rate_tuned": float(vb.mean()),
            "d_valid_rate": dv.estimate, "d_valid_rate_lo": dv.lo, "d_valid_rate_hi": dv.hi,
            "valid_rate_differs": dv.excludes(0.0),
            "mean_score_base": stats.nanmean(sa[None, :], axis=1)[0],
            "mean_score_tuned": stats.nanmean(sb[None, :], axis=1)[0],
            "d_mean_score": ds.estimate, "d_mean_score_lo": ds.lo, "d_mean_score_hi": ds.hi,
            "mean_score_differs": ds.excludes(0.0),
            "d_mean_score_failed_resamples": ds.n_failed,
        }
        row["verdict"] = _verdict(row, confidence)
        rows.append(row)
    return pd.DataFrame(rows)


def _verdict(row: Mapping[str, Any], confidence: float) -> str:
    pct = f"{confidence:.0%}"

    def one(name: str, d: float, lo: float, hi: float, differs: bool, fmt: str) -> str:
        if math.isnan(d):
            return f"{name}: undefined"
        if math.isnan(lo):
            return f"{name}: {d:+{fmt}} (too few answers for an interval)"
        ci = f"{d:+{fmt}}, {pct} CI [{lo:+{fmt}}, {hi:+{fmt}}]"
        if differs:
            return f"{name}: tuned {'higher' if d > 0 else 'lower'} ({ci})"
        return f"{name}: not distinguishable from 0 ({ci})"

    v = one("valid rate", row["d_valid_rate"], row["d_valid_rate_lo"], row["d_valid_rate_hi"],
            row["valid_rate_differs"], ".2f")
    rb, rt = row["valid_rate_base"], row["valid_rate_tuned"]
    if rb == rt and rb in (0.0, 1.0):  # the bootstrap interval is a point: say what it means
        v = (f"valid rate: both models {rb:.0%} valid (no difference observed; the bootstrap "
             "interval has zero width here, see the Wilson intervals in the summary)")
    s = one("mean score", row["d_mean_score"], row["d_mean_score_lo"], row["d_mean_score_hi"],
            row["mean_score_differs"], ".4g")
    if math.isnan(row["d_mean_score"]):
        who = [m for m in ("base", "tuned") if math.isnan(row[f"mean_score_{m}"])]
        s += f" ({' and '.join(who)} without a valid answer)"
    return f"{v}; {s}"


# =============================================================================== search comparison
def run_search_comparison(
    models: Mapping[str, str],
    search_config: Any,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    seeds: Sequence[int] = (0,),
    samplers: Mapping[str, Sampler] | None = None,
    sandbox: Any | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """A short EoH search per model with the *same* :class:`~aad_kit.search.SearchConfig`
    (only the sampler differs; one run per seed), and their best-so-far curves.

    Runs go to ``<run_dir>/generalisation_search.sqlite`` with run ids
    ``generalisation-<model>-<task>-<setting>-seed<seed>`` (so they resume like any search);
    the curves are returned and written to ``generalisation_search_curves.csv``.
    """
    import tempfile

    from aad_kit.db import AlgorithmDB
    from aad_kit.llm import make_sampler
    from aad_kit.search import run_search

    out = Path(run_dir) if run_dir else None
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="aad-kit-gen-search-")
        db_path = Path(tmp.name) / SEARCH_DB
    else:
        out.mkdir(parents=True, exist_ok=True)
        db_path = out / SEARCH_DB
    own_sandbox = sandbox is None
    if own_sandbox:
        from aad_kit.sandbox import Sandbox, SandboxConfig
        from aad_kit.scoring import run_cache_path

        sandbox = Sandbox(SandboxConfig(cache_path=run_cache_path(out)))
    runs: dict[tuple[str, int], str] = {}
    try:
        with AlgorithmDB(db_path) as db:
            for name, spec in models.items():
                sampler = samplers[name] if samplers is not None and name in samplers else make_sampler(spec)
                try:
                    for s in seeds:
                        cfg = dataclasses.replace(search_config, seed=int(s))
                        run_id = f"generalisation-{name}-{get_task(cfg.task).name}-{cfg.setting}-seed{s}"
                        result = run_search(cfg, sampler, db, sandbox, run_id=run_id, progress=progress)
                        runs[(name, int(s))] = run_id
                        if progress:
                            print(f"[{name}] {result.summary()}")
                finally:
                    del sampler
                    gc.collect()
            curves = search_curves(db, runs)
    finally:
        if own_sandbox:
            sandbox.close()
        if tmp is not None:
            tmp.cleanup()
    if out is not None:
        _write_atomic(curves, out / CURVES_CSV)
    return curves


def search_curves(db: Any, runs: Mapping[tuple[str, int], str]) -> pd.DataFrame:
    """Best valid score after each LLM sample, per (model, seed) search run.

    ``best_so_far`` is NaN until the run's first valid sample; ``best_seed_heuristic`` is the
    best shipped heuristic the run started from (NaN without seeds), for reference.
    """
    frames = []
    for (name, seed), run_id in runs.items():
        df = db.to_dataframe(run_id)
        seeds_ok = df[(df["operator"] == "seed") & (df["status"] == "ok")]
        ref = float(seeds_ok["score"].max()) if len(seeds_ok) else math.nan
        llm = df[df["sample_index"].notna() & (df["sample_index"] >= 0)].sort_values("sample_index")
        score = llm["score"].where(llm["status"] == "ok").astype(float)
        frames.append(pd.DataFrame({
            "model": name, "seed": int(seed), "run_id": run_id,
            "sample_index": llm["sample_index"].astype(int).to_numpy(),
            "status": llm["status"].astype(str).to_numpy(),
            "score": score.to_numpy(),
            "best_so_far": score.cummax().to_numpy(),
            "best_seed_heuristic": ref,
        }))
    cols = ["model", "seed", "run_id", "sample_index", "status", "score", "best_so_far",
            "best_seed_heuristic"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


__all__ = [
    "ANSWERS_JSONL",
    "COMPARISON_CSV",
    "CONFIG_JSON",
    "CURVES_CSV",
    "ConfigMismatch",
    "EvalCell",
    "GeneralisationConfig",
    "GeneralisationResult",
    "ROLES",
    "SAMPLES_CSV",
    "SAMPLE_COLUMNS",
    "SEARCH_DB",
    "SUMMARY_CSV",
    "as_list",
    "compare_models",
    "default_grid",
    "empty_samples",
    "is_adapter_dir",
    "load_answers",
    "load_samples",
    "parse_settings",
    "resolve_models",
    "restrict",
    "run_generalisation",
    "run_search_comparison",
    "search_curves",
    "spec_fingerprint",
    "summarize",
    "with_adapter",
]
