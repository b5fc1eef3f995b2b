"""Experiment tracking: tracker names, the search's curves and their TensorBoard events."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from aad_kit import tracking


def test_report_to_names():
    assert tracking.parse_report_to("none") == [] and tracking.parse_report_to("") == []
    assert tracking.parse_report_to("tensorboard, wandb") == ["tensorboard", "wandb"]
    assert tracking.parse_report_to(["wandb", "wandb"]) == ["wandb"]
    assert tracking.parse_report_to("auto") == (["tensorboard"] if tracking.tensorboard_available() else [])
    with pytest.raises(ValueError, match="unknown tracker.*mlflow.*choose from auto, none"):
        tracking.parse_report_to("mlflow")


def test_dpo_config_rejects_an_unknown_tracker():
    from aad_kit.training import DPOTrainingConfig

    with pytest.raises(ValueError, match="report_to: unknown tracker"):
        DPOTrainingConfig(report_to="mlfow")


def _db_frame() -> pd.DataFrame:
    nan = math.nan
    return pd.DataFrame([
        # run a: a seed program (1842), then samples: fail, 1800, 1900, fail
        {"run_id": "a", "sample_index": -1, "status": "ok", "score": 1842.0},
        {"run_id": "a", "sample_index": 0, "status": "runtime_error", "score": nan},
        {"run_id": "a", "sample_index": 2, "status": "ok", "score": 1900.0},
        {"run_id": "a", "sample_index": 1, "status": "ok", "score": 1800.0},
        {"run_id": "a", "sample_index": 3, "status": "timeout", "score": nan},
        # run b: no seed, first sample invalid
        {"run_id": "b", "sample_index": 0, "status": "syntax_error", "score": nan},
        {"run_id": "b", "sample_index": 1, "status": "ok", "score": 5.0},
    ])


def test_search_curves_count_samples_not_seeds():
    c = tracking.search_curves(_db_frame())
    a = c[c["run_id"] == "a"]
    assert list(a["sample"]) == [1, 2, 3, 4]
    assert list(a["best_so_far"]) == [1842.0, 1842.0, 1900.0, 1900.0]  # the seed counts as best
    assert list(a["valid_rate"]) == [0.0, 0.5, pytest.approx(2 / 3), 0.5]
    b = c[c["run_id"] == "b"]
    assert math.isnan(b["best_so_far"].iloc[0]) and b["best_so_far"].iloc[1] == 5.0


@pytest.mark.skipif(not tracking.tensorboard_available(), reason="tensorboard not installed")
def test_search_events_round_trip_and_rewrite(tmp_path):
    dirs = tracking.write_search_events(_db_frame(), tmp_path / "search")
    assert [d.name for d in dirs] == ["a", "b"]
    tb = tracking.read_scalars(tmp_path / "search" / "a")
    assert tb["search/best_so_far"] == [(1, 1842.0), (2, 1842.0), (3, 1900.0), (4, 1900.0)]
    assert [s for s, _ in tb["search/score"]] == [2, 3]
    # a resumed stage rewrites the log from the database: one event file per run, not two
    tracking.write_search_events(_db_frame(), tmp_path / "search")
    assert len(list((tmp_path / "search" / "a").glob("events.out.tfevents.*"))) == 1
