"""Run profiles: how much work each pipeline stage does.

One place for the knobs that differ between a seconds-long test run (``smoke``), a
~30-minute CPU run (``quick``) and the paper's scale on a GPU (``full``). Notebooks receive
the profile *name* as a papermill parameter and ask this module what it implies, so a
batch user can still override any individual parameter with ``-p name=value``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aad_kit.tasks import TASK_NAMES, get_task


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    settings_scope: str  # "cheapest": one small setting per task; "standard": all non-slow; "all"
    timeout_scale: float  # multiplies each setting's evaluation timeout
    # Candidate generation (stage 2): the task/setting the search (and later DPO) trains on.
    search_task: str = "tsp_construct"
    search_setting: str | None = None  # None: the task's default setting
    model: str = "smollm2-135m"  # an aad_kit.llm.make_sampler spec
    search_budget: int = 32  # LLM samples
    search_batch_size: int = 8  # prompts per sampler call
    max_new_tokens: int = 384


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke",
        "seconds per stage; tiny model and cheapest settings (used by the tests)",
        settings_scope="cheapest",
        timeout_scale=1.0,
        search_setting="n20",
        model="tiny",
        search_budget=8,
        search_batch_size=4,
        max_new_tokens=48,
    ),
    "quick": Profile(
        "quick",
        "about 30 minutes on 2 CPU cores with the packaged default model",
        settings_scope="standard",
        timeout_scale=1.0,
    ),
    "full": Profile(
        "full",
        "the paper's scale, meant for a GPU machine; includes slow settings",
        settings_scope="all",
        timeout_scale=2.0,
        search_budget=1000,
        search_batch_size=16,
        max_new_tokens=1024,
    ),
}

# The cheapest setting of each task: what the smoke profile evaluates.
CHEAPEST_SETTING: dict[str, str] = {
    "admissible_set": "n12_w7",
    "bin_packing": "weibull_1k_c100",
    "tsp_construct": "n20",
    "cvrp_construct": "n50_c40",  # 16 instances: cheaper than n20_c30 (64)
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
