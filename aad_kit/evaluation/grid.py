"""The generalisation study's grid and sizes: :class:`GeneralisationConfig` (models, the
training (task, setting), held-out settings, other tasks, seeds, sampling and bootstrap
parameters), its cells and their roles, and the profile defaults (:func:`default_grid`,
:func:`parse_settings`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from aad_kit.config_io import config_from_dict, config_to_dict
from aad_kit.evaluation import stats
from aad_kit.llm.base import GenerationConfig
from aad_kit.tasks import TASK_NAMES, get_task

ROLES: tuple[str, ...] = ("train", "held_out", "other_task")


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
        return {**config_to_dict(self), "models": dict(self.models)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GeneralisationConfig:
        return config_from_dict(cls, d)

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
        train_task: str | None = None,
        train_setting: str | None = None,
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
        train_task, train_setting, held, others = default_grid(profile, train_task, train_setting)
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


def default_grid(profile: str, train_task: str | None = None, train_setting: str | None = None
                 ) -> tuple[str, str, list[str], list[tuple[str, str]]]:
    """``(train_task, train_setting, held_out_settings, other_task_settings)``: the profile's
    pre-registered grid, or the grid of a run trained on another task
    (:func:`aad_kit.profiles.evaluation_grid`, the one rule stages 4 and 6 share)."""
    from aad_kit.profiles import evaluation_grid

    return evaluation_grid(profile, train_task, train_setting)


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


__all__ = [
    "ROLES",
    "EvalCell",
    "GeneralisationConfig",
    "as_list",
    "default_grid",
    "parse_settings",
]
