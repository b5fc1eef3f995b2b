"""Run profiles: the one table of what each pipeline stage does under ``smoke``, ``quick``,
``cpu-long`` and ``full``.

Every stage notebook receives the profile *name* as a papermill parameter and asks this
module what it implies; a batch user can still override any single parameter with
``-p name=value`` (0 / empty in a notebook's parameters cell means "the profile's value").
The DPO settings (:data:`Profile.dpo`) and the evaluation grid live here too, so nothing else
keeps a per-profile table.

The experiment every profile runs is the paper's headline at its own scale (README "The
main experiment"): a teacher database (``teacher_db``, made once with the larger model and
shipped in ``data/teacher/``) -> the paper's DAR pairs -> DPO of the smaller ``model``
(the student) -> student-base vs student-tuned (vs the teacher's reference answers) on the
training setting, held-out settings and another task, and inside a same-budget search.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aad_kit.tasks import TASK_NAMES, get_task


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    settings_scope: str  # "cheapest": one small setting per task; "standard": all non-slow; "all"
    timeout_scale: float  # multiplies each setting's evaluation timeout (sandbox_config)
    # --- the training task and the student ------------------------------------------------
    search_task: str = "admissible_set"
    search_setting: str | None = "n15_w10"  # None: the task's default setting
    model: str = "qwen2.5-coder-0.5b"  # the student: an aad_kit.llm.make_sampler spec
    # --- stage 2: the database ------------------------------------------------------------
    teacher_db: str | None = "admissible_set-n15_w10-qwen2.5-coder-1.5b"  # aad_kit.teacher
    search_method: str = "eoh"  # "eoh" | "funsearch"
    search_budget: int = 0  # the student's own search (LLM samples); 0: none, teacher data only
    search_batch_size: int = 8  # prompts per sampler call
    max_new_tokens: int = 1024
    # --- stage 4: preference pairs --------------------------------------------------------
    pair_strategy: str = "dar"  # the paper's DAR (aad_kit.preference.paper_dar)
    n_pairs: int = 0  # 0: the strategy's default (the paper's 1,000 unique pairs for dar)
    heldout_pair_settings: tuple[str, ...] = ("n12_w7", "n18_w12")  # pairs for held-out accuracy
    heldout_pairs: int = 64
    # --- stage 5: DPO (fields of aad_kit.training.DPOTrainingConfig) -----------------------
    dpo: tuple[tuple[str, Any], ...] = ()
    # --- stage 6: evaluation --------------------------------------------------------------
    eval_samples_per_seed: int = 8
    eval_seeds: tuple[int, ...] = (0, 1, 2)
    eval_held_out: tuple[str, ...] = ("n12_w7", "n18_w12")
    eval_other: tuple[tuple[str, str], ...] = (("tsp_construct", "n50"),)
    teacher_reference: bool = True  # the teacher's shipped answers as a reference row
    search_comparison_runs: int = 0  # same-budget searches per model (0: skipped)
    search_comparison_budget: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def dpo_overrides(self) -> dict[str, Any]:
        return dict(self.dpo)


_QUICK = Profile(
    "quick",
    "the main experiment at 2-CPU scale (~45 min with the shipped teacher database)",
    settings_scope="standard",
    timeout_scale=1.0,
    # SmolLM2 as the quick student: its DPO step is ~4x cheaper than the 0.5B coder's
    # (benchmarks/RESULTS.md), which is what fits 45 minutes; cpu-long trains the coder.
    model="smollm2-135m",
    max_new_tokens=512,  # SmolLM2 often writes on past its code; longer only costs time
    heldout_pairs=32,
    dpo=(("max_steps", 48), ("max_length", 1536), ("per_device_train_batch_size", 2),
         ("gradient_accumulation_steps", 1), ("learning_rate", 1e-4), ("save_steps", 12),
         ("eval_steps", 12)),
    eval_samples_per_seed=16,
    eval_seeds=(0, 1),
    search_comparison_runs=0,
)

# cpu-long is quick with the 0.5B coder as student, 64 answers per model and task, and the
# same-budget search: what run 6 and its search ran (README "The main experiment"), so its time
# and result are measured, not guessed. Derived from quick so the two cannot drift apart.
_CPU_LONG = replace(
    _QUICK,
    name="cpu-long",
    description="the quick experiment with the 0.5B coder as student, 64 answers per model and "
                "the same-budget search (about 3 hours on 2 CPU cores)",
    model="qwen2.5-coder-0.5b",
    eval_seeds=(0, 1, 2, 3),
    search_comparison_runs=3,
    search_comparison_budget=48,
)

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke",
        "seconds per stage; tiny model and cheapest settings (used by the tests)",
        settings_scope="cheapest",
        timeout_scale=1.0,
        model="tiny",
        search_budget=8,
        search_batch_size=4,
        max_new_tokens=48,
        n_pairs=16,
        heldout_pair_settings=("n12_w7",),
        heldout_pairs=8,
        dpo=(("max_steps", 4), ("max_length", 2048), ("per_device_train_batch_size", 2),
             ("gradient_accumulation_steps", 1), ("warmup_ratio", 0.0), ("learning_rate", 1e-3),
             ("lora_r", 8), ("lora_alpha", 16), ("save_steps", 2), ("eval_steps", 2)),
        eval_samples_per_seed=4,
        eval_seeds=(0, 1),
        eval_held_out=("n12_w7",),
        eval_other=(("tsp_construct", "n20"),),
        search_comparison_runs=1,
        search_comparison_budget=4,
    ),
    "quick": _QUICK,
    "cpu-long": _CPU_LONG,
    "full": Profile(
        "full",
        "the paper's scale, meant for GPU machines; includes slow settings",
        settings_scope="all",
        timeout_scale=2.0,
        search_budget=1000,
        search_batch_size=16,
        heldout_pairs=256,
        dpo=(("num_train_epochs", 5.0), ("max_length", 2048), ("per_device_train_batch_size", 2),
             ("gradient_accumulation_steps", 8), ("learning_rate", 5e-6), ("beta", 0.1),
             ("lora_r", 32), ("lora_alpha", 32), ("save_steps", 50), ("eval_steps", 50),
             ("precompute_ref_log_probs", True)),
        eval_samples_per_seed=64,
        eval_seeds=(0, 1, 2, 3, 4),
        search_comparison_runs=3,
        search_comparison_budget=1000,
    ),
}

# The cheapest setting of each task: what the smoke profile evaluates.
CHEAPEST_SETTING: dict[str, str] = {
    "admissible_set": "n12_w7",
    "bin_packing": "weibull_1k_c100",
    "tsp_construct": "n20",
    "cvrp_construct": "n50_c40",
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}") from None


def settings_for(profile: str, task: str) -> list[str]:
    """The setting names of ``task`` that ``profile`` evaluates, in the task's order."""
    scope = get_profile(profile).settings_scope
    t = get_task(task)
    if scope == "cheapest":
        return [CHEAPEST_SETTING.get(t.name, t.default_setting)]
    if scope == "standard":
        return [name for name, s in t.settings.items() if not s.slow]
    return list(t.settings)


def tasks_for(profile: str) -> list[str]:  # noqa: ARG001 - every profile covers every task today
    """Task names a profile covers (all registered tasks)."""
    get_profile(profile)
    return list(TASK_NAMES)


def training_target(profile: str, task: str | None = None, setting: str | None = None) -> tuple[str, str]:
    """``(task, setting)`` a run searches and trains on: the profile's unless overridden; a
    task other than the profile's gets its own default setting (the profile's setting names
    belong to the profile's task)."""
    p = get_profile(profile)
    t = get_task(task or p.search_task)
    if not setting and t.name == get_task(p.search_task).name:
        setting = p.search_setting
    return t.name, t.setting(setting or None).name


def evaluation_grid(profile: str, train_task: str | None = None, train_setting: str | None = None
                    ) -> tuple[str, str, list[str], list[tuple[str, str]]]:
    """``(train_task, train_setting, held_out_settings, other_task_settings)``: the profile's
    pre-registered grid, or for a run trained on another task (``-p task=...``) that task's
    two cheapest other non-slow settings as held out and the profile's training task as the
    other task. Stage 4 (held-out pairs) and stage 6 (the evaluation) both read it."""
    p = get_profile(profile)
    task_name, train = training_target(profile, train_task, train_setting)
    task = get_task(task_name)
    if task.name == get_task(p.search_task).name:
        held = [task.setting(s).name for s in p.eval_held_out if task.setting(s).name != train]
        others = [(get_task(t).name, get_task(t).setting(s).name) for t, s in p.eval_other]
        return task.name, train, held, others
    cheap = sorted((s.timeout_s, i, name) for i, (name, s) in enumerate(task.settings.items())
                   if name != train and not s.slow)
    held = [name for _, _, name in cheap[:2]]
    home = get_task(p.search_task)
    return task.name, train, held, [(home.name, home.setting(p.search_setting).name)]


def sandbox_config(profile: str, **overrides: Any) -> Any:
    """The :class:`~aad_kit.sandbox.SandboxConfig` a profile's stages evaluate with (its
    ``timeout_scale`` applied to every setting's time limit)."""
    from aad_kit.sandbox import SandboxConfig

    return SandboxConfig(**{"timeout_scale": get_profile(profile).timeout_scale, **overrides})


def dpo_config(profile: str, **overrides: Any) -> Any:
    """The :class:`~aad_kit.training.DPOTrainingConfig` of a profile; overrides that are
    ``None``, ``0`` or ``0.0`` are ignored (a notebook's "use the profile's value")."""
    from aad_kit.training.dpo import DPOTrainingConfig

    kw = get_profile(profile).dpo_overrides
    kw.update({k: v for k, v in overrides.items() if v is not None and v != 0})
    return DPOTrainingConfig(**kw)


def describe(profile: str) -> Mapping[str, Any]:
    """What a profile implies, as a flat mapping (for manifests and the README table)."""
    from dataclasses import asdict

    d = asdict(get_profile(profile))
    d["dpo"] = dict(d["dpo"])
    return d


__all__ = ["CHEAPEST_SETTING", "PROFILES", "Profile", "describe", "dpo_config", "evaluation_grid", "get_profile",
           "sandbox_config", "settings_for", "tasks_for"]
