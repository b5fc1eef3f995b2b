"""The profile table: what a run trains and is evaluated on when the user names another task."""

from __future__ import annotations

import pytest

from aad_kit import profiles


def test_training_target_defaults_to_the_profiles_task_and_setting():
    assert profiles.training_target("quick") == ("admissible_set", "n15_w10")
    assert profiles.training_target("quick", "admissible_set", "n12_w7") == ("admissible_set", "n12_w7")


@pytest.mark.parametrize("task", ["cvrp_construct", "tsp_construct", "bin_packing"])
def test_another_task_gets_its_own_default_setting(task: str):
    """The profile's setting (n15_w10) names an admissible-set setting; another task must
    not be looked up with it (it was: KeyError in stage 2 for ``-p task=cvrp_construct``)."""
    from aad_kit.tasks import get_task

    name, setting = profiles.training_target("smoke", task)
    assert name == task and setting == get_task(task).default_setting


def test_evaluation_grid_for_another_task_holds_out_its_own_settings():
    task, train, held, other = profiles.evaluation_grid("smoke", "cvrp_construct")
    assert task == "cvrp_construct" and len(held) == 2 and train not in held
    assert other == [("admissible_set", "n15_w10")]
    # the profile's own grid: held-out and other task as pre-registered
    assert profiles.evaluation_grid("quick") == ("admissible_set", "n15_w10", ["n12_w7", "n18_w12"],
                                                 [("tsp_construct", "n50")])


def test_unknown_profile_names_the_choices():
    with pytest.raises(KeyError, match="choose one of: smoke, quick"):
        profiles.get_profile("fast")


def test_cpu_long_is_what_run_6_and_its_search_ran():
    """The README reports cpu-long's time and result from run 6 (the quick profile with the
    0.5B coder, seeds 2-5) and its same-budget search (3 runs x 48 samples); the profile must
    stay that configuration, read from run 6's checked-in manifest, up to its sampling seeds."""
    import json
    from pathlib import Path

    manifest = json.loads((Path(__file__).parents[1] / "docs/example-run-6-0.5b/manifest.json").read_text())
    run6 = {**manifest["profile_settings"], **manifest["params"]}
    cpu_long = json.loads(json.dumps(profiles.describe("cpu-long")))  # tuples as the manifest's lists
    differ = {k for k in cpu_long if k != "eval_seeds" and cpu_long[k] != run6.get(k)}
    assert differ == {"name", "description", "search_comparison_runs", "search_comparison_budget"}
    assert (cpu_long["search_comparison_runs"], cpu_long["search_comparison_budget"]) == (3, 48)
    assert len(cpu_long["eval_seeds"]) == len(run6["seeds"]) == 4
