"""One run layout: stages record what they produced; the next stage reads it or says why not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aad_kit.run_layout import STAGE_ORDER, MissingStageOutput, RunLayout


def test_every_artifact_has_one_name(tmp_path: Path):
    lay = RunLayout.of(tmp_path)
    assert lay.database == tmp_path / "algorithms.sqlite"
    assert lay.pairs("dar") == tmp_path / "preference" / "pairs_dar"
    assert lay.heldout_pairs == tmp_path / "preference" / "heldout_pairs"
    assert lay.adapter == tmp_path / "dpo" / "adapter"
    assert lay.figure("x") == tmp_path / "figures" / "x.png" and lay.table("t") == tmp_path / "tables" / "t.csv"
    assert lay.eval_cache == tmp_path / "eval_cache.sqlite"


def test_record_and_read_outputs(tmp_path: Path):
    lay = RunLayout.of(tmp_path)
    lay.update_manifest(profile="smoke", stages={})
    lay.record("04_dar_sampling", pairs=lay.pairs("dar"), n_pairs=12, runs=["a", "b"])
    m = json.loads(lay.manifest_path.read_text())
    assert m["profile"] == "smoke" and m["stages"]["04_dar_sampling"]["outputs"]["pairs"] == "preference/pairs_dar"
    assert lay.output("04_dar_sampling", "pairs") == lay.pairs("dar")
    assert lay.output("04_dar_sampling", "runs", path=False) == ["a", "b"]
    lay.record("04_dar_sampling", n_pairs=13)  # merges, keeps the rest
    assert lay.outputs("04_dar_sampling")["pairs"] == "preference/pairs_dar"


def test_missing_and_empty_outputs_say_which_stage_and_why(tmp_path: Path):
    """Regression: a DAR stage that formed no pairs used to make stage 5 fail with a
    misleading 'run stage 4 first'; now it says stage 4 ran and why it produced nothing."""
    lay = RunLayout.of(tmp_path)
    with pytest.raises(MissingStageOutput, match="run that stage first.*--stage 04_dar_sampling"):
        lay.output("04_dar_sampling", "pairs")
    lay.record("04_dar_sampling", pairs=None, why_pairs="all valid algorithms have the same score")
    with pytest.raises(MissingStageOutput, match="ran but produced no 'pairs': all valid algorithms"):
        lay.output("04_dar_sampling", "pairs")
    with pytest.raises(KeyError, match="unknown stage"):
        lay.record("07_nothing", x=1)
    assert STAGE_ORDER[0] == "01_task_definition" and len(STAGE_ORDER) == 6


def test_done_markers_are_named_by_the_layout(tmp_path):
    from aad_kit.run_layout import STAGE_ORDER, RunLayout

    layout = RunLayout.of(tmp_path)
    assert [layout.done_marker(s).name for s in STAGE_ORDER] == [f"{s}.done" for s in STAGE_ORDER]
    assert layout.done_marker(STAGE_ORDER[0]).parent == tmp_path.resolve() / "stages"
    with pytest.raises(KeyError, match="unknown stage"):
        layout.done_marker("07_nothing")
