"""Pipeline parameters are checked against the notebooks' annotated types and declared ranges
before stage 1 starts (issue 11: `-p budget=abc` failed minutes later inside stage 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aad_kit.cli import main as cli_main
from aad_kit.parameters import ParameterError, check_value, declared_range

INT_GE0 = {"inferred_type_name": "int", "help": "LLM samples [min 0]; 0: the profile's"}


def test_types_and_ranges():
    assert check_value("budget", 5, INT_GE0, "stage 02") == 5
    with pytest.raises(ParameterError, match="'budget' of stage 02 must be int.*'abc'"):
        check_value("budget", "abc", INT_GE0, "stage 02")
    with pytest.raises(ParameterError, match="must be >= 0, got -5"):
        check_value("budget", -5, INT_GE0, "stage 02")
    with pytest.raises(ParameterError, match="must be int"):
        check_value("budget", True, INT_GE0, "stage 02")  # a bool is not a count
    fl = {"inferred_type_name": "float", "help": "temperature [> 0]"}
    assert check_value("temperature", 1, fl, "s") == 1.0 and isinstance(check_value("t", 1, fl, "s"), float)
    with pytest.raises(ParameterError, match="> 0"):
        check_value("temperature", 0.0, fl, "s")
    unit = {"inferred_type_name": "float", "help": "share [0..1]"}
    with pytest.raises(ParameterError, match=r"in \[0, 1\]"):
        check_value("share", 1.5, unit, "s")
    assert declared_range("no range here") is None
    assert check_value("names", ["a"], {"inferred_type_name": "list", "help": ""}, "s") == ["a"]
    with pytest.raises(ParameterError, match="must be list"):
        check_value("names", "a", {"inferred_type_name": "list", "help": ""}, "s")


def test_cli_rejects_bad_values_before_any_stage_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run_dir = tmp_path / "r"
    assert cli_main(["run", "--profile", "smoke", "--run-dir", str(run_dir), "-p", "budget=abc"]) == 2
    err = capsys.readouterr().err
    assert "parameter 'budget'" in err and "must be int" in err
    assert cli_main(["run", "--profile", "smoke", "--run-dir", str(run_dir), "-p", "budget=-5"]) == 2
    assert "must be >= -1, got -5" in capsys.readouterr().err
    assert not run_dir.exists()  # nothing started
