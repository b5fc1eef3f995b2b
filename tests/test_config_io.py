"""The one JSON round trip of frozen dataclass configs (aad_kit.config_io)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from aad_kit.config_io import config_from_dict, config_to_dict
from aad_kit.evaluation.grid import GeneralisationConfig
from aad_kit.search.eoh import SearchConfig
from aad_kit.teacher import TeacherSpec


@dataclass(frozen=True)
class _Cfg:
    name: str
    pairs: tuple[tuple[str, str], ...] = ()
    weights: tuple[float, ...] | None = None
    options: dict | None = None


def test_nested_tuples_survive_json_and_unknown_keys_are_ignored():
    cfg = _Cfg("a", (("tsp", "n50"), ("asp", "n12")), (0.5, 1.5), {"k": [1, 2]})
    stored = json.loads(json.dumps(config_to_dict(cfg)))
    assert stored["pairs"] == [["tsp", "n50"], ["asp", "n12"]]
    back = config_from_dict(_Cfg, {**stored, "added_later": 1})
    assert back.pairs == cfg.pairs and back.weights == cfg.weights
    assert config_to_dict(back) == stored  # what resume compares
    assert config_from_dict(_Cfg, {"name": "b", "pairs": []}, exclude={"pairs"}).pairs == ()
    assert config_from_dict(_Cfg, {"name": "x"}, exclude={"name"}, name="y").name == "y"


def test_the_kits_configs_round_trip_through_json():
    search = SearchConfig(task="admissible_set", setting="n15_w10", budget=12,
                          operator_weights=(1.0, 2.0, 1.0, 1.0), seed_heuristics=("trivial",))
    assert SearchConfig.from_dict(json.loads(json.dumps(search.to_dict()))) == search
    grid = GeneralisationConfig.from_profile("smoke", {"base": "tiny"})
    assert grid.other_settings and isinstance(grid.other_settings[0], tuple)
    assert GeneralisationConfig.from_dict(json.loads(json.dumps(grid.to_dict()))) == grid
    spec = TeacherSpec("t", "admissible_set", "n15_w10", "tiny", seeds=(3, 4))
    assert config_from_dict(TeacherSpec, json.loads(json.dumps(config_to_dict(spec)))) == spec
