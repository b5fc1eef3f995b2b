"""The notebooks run headless through papermill, as a batch user runs them.

One smoke-profile pipeline run (module fixture) serves the artifact checks; resume and
failure behaviour are tested on top of it.
"""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest

from aad_kit.cli import main as cli_main
from aad_kit.pipeline import STAGES, StageFailed, run_pipeline
from tests.llm_fixtures import fake_openai  # noqa: F401 - fixture

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run") / "smoke"
    assert cli_main(["run", "--profile", "smoke", "--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_every_parameters_cell_assignment_is_visible_to_papermill(stage):
    """A comment papermill cannot parse silently hides a parameter from `-p` and the pipeline."""
    nb = nbformat.read(stage.notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = {
        node.target.id if isinstance(node, ast.AnnAssign) else node.targets[0].id
        for node in ast.parse(cell.source).body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
    }
    declared = set(pm.inspect_notebook(str(stage.notebook)))
    assert assigned == declared
    assert {"profile", "run_dir"} <= declared


def test_smoke_pipeline_writes_every_stage_artifact(smoke_run):
    manifest = json.loads((smoke_run / "manifest.json").read_text())
    assert manifest["profile"] == "smoke"
    assert set(manifest["stages"]) == {s.name for s in STAGES}
    assert manifest["evaluator_version"] and manifest["packages"]["numpy"]
    for stage in STAGES:
        assert (smoke_run / "stages" / f"{stage.name}.done").exists()
        executed = nbformat.read(smoke_run / "notebooks" / stage.notebook.name, as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code"
                  for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors
    for figure in ["tsp_instances", "cvrp_routes", "bin_packing_items", "admissible_set_rows", "baselines",
                   "status_counts", "baseline_scores", "evaluation_times",
                   "teacher_best_so_far", "teacher_score_histogram",
                   "search_best_so_far", "search_outcome_by_operator", "dar_fitness_subsets",
                   "dpo_training_curves", "headline"]:
        assert (smoke_run / "figures" / f"{figure}.png").stat().st_size > 5_000, figure
    # one page per run, self-contained (issue 15)
    report = (smoke_run / "report.md").read_text()
    assert "## Result" in report and "Primary endpoint" in report and "Headline table" in report
    page = (smoke_run / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "<table>" in page and "src=\"figures/" not in page


def test_task_definition_stage_scores_every_shipped_heuristic(smoke_run):
    from aad_kit.tasks import TASK_NAMES, get_task

    df = pd.read_csv(smoke_run / "tables" / "baselines.csv")
    for name in TASK_NAMES:
        shipped = set(get_task(name).heuristics())
        assert set(df.loc[df["task"] == name, "name"]) == shipped
    assert (df["status"] == "ok").all() and df["metric"].notna().all()


def test_generation_stage_fills_the_algorithm_database(smoke_run):
    from aad_kit import teacher
    from aad_kit.db import AlgorithmDB
    from aad_kit.profiles import get_profile
    from aad_kit.run_layout import RunLayout
    from aad_kit.sandbox import ResultCache
    from aad_kit.teacher import load_manifest, load_records

    profile = get_profile("smoke")
    outputs = RunLayout.of(smoke_run).outputs("02_candidate_generation")
    with AlgorithmDB(smoke_run / "algorithms.sqlite") as db:
        runs = {r.run_id: r for r in db.runs()}
        (search_id,) = outputs["search_runs"]
        run = runs[search_id]
        df = db.to_dataframe(run.run_id)
        everything = db.to_dataframe()
    samples = df[df["sample_index"] >= 0]
    assert sorted(samples["sample_index"]) == list(range(profile.search_budget))
    assert samples["raw_response"].notna().all() and samples["prompt"].notna().all()
    assert set(df.loc[df["operator"] == "seed", "status"]) == {"ok"}  # shipped heuristics seeded
    assert run.manifest["model"]["weights_sha256"] and run.manifest["evaluator_version"]
    # the shipped teacher database was imported whole, run by run
    assert outputs["teacher_db"] == profile.teacher_db and set(outputs["teacher_runs"]) <= set(runs)
    teacher_rows = everything[everything["run_id"].isin(outputs["teacher_runs"])]
    assert len(teacher_rows) == len(load_records(profile.teacher_db))
    # ... with its shipped scores on other settings, so stage 4 need not re-score its programs
    # (a few may be in the run's cache already: stage 1 scores the template there)
    shipped = load_manifest(profile.teacher_db)["scores"]["results"]
    assert 0 < outputs["teacher_scores_seeded"] <= shipped
    with gzip.open(teacher.data_dir(teacher.get_teacher(profile.teacher_db)) / teacher.SCORES_FILE, "rt") as f:
        keys = [json.loads(line)["key"] for line in f]
    cache = ResultCache(smoke_run / "eval_cache.sqlite")
    assert all(k in cache for k in keys)
    cache.close()
    exported = (smoke_run / "algorithms.jsonl").read_text().splitlines()
    assert len(exported) == len(everything)


def test_scoring_stage_reports_every_hostile_status(smoke_run):
    from aad_kit.sandbox.hostile import hostile_candidates

    df = pd.read_csv(smoke_run / "tables" / "scoring.csv")
    hostile = df[df["kind"] == "hostile"]
    from aad_kit.tasks import TASK_NAMES

    assert len(hostile) == len(TASK_NAMES) * len(hostile_candidates())
    assert (hostile["status"] == hostile["expected"]).all()
    assert (df.loc[df["kind"] == "baseline", "status"] == "ok").all()


def test_rerunning_a_finished_run_skips_every_stage(smoke_run, capsys):
    before = {p.name: p.stat().st_mtime for p in (smoke_run / "notebooks").iterdir()}
    run_pipeline("smoke", smoke_run, progress=False)
    out = capsys.readouterr().out
    assert out.count("already done, skipping") == len(STAGES)
    assert {p.name: p.stat().st_mtime for p in (smoke_run / "notebooks").iterdir()} == before


def test_failing_stage_names_notebook_and_cell(tmp_path):
    with pytest.raises(StageFailed, match=r"01_task_definition.*cell \d+.*AssertionError.*no_such_task"):
        run_pipeline("smoke", tmp_path / "bad", params={"tasks": ["no_such_task"]},
                     stages=["01_task_definition"], progress=False)
    assert not (tmp_path / "bad" / "stages" / "01_task_definition.done").exists()


def test_unknown_parameter_and_profile_are_rejected_before_running(tmp_path, capsys):
    assert cli_main(["run", "--profile", "smoke", "--run-dir", str(tmp_path / "x"),
                     "-p", "not_a_parameter=1"]) == 2
    assert "not_a_parameter" in capsys.readouterr().err
    with pytest.raises(KeyError, match="unknown profile"):
        run_pipeline("huge", tmp_path / "y")
    assert not (tmp_path / "x").exists()


def test_dar_dpo_and_generalisation_stages_chain_through_the_run_directory(smoke_run):
    from datasets import load_from_disk

    from aad_kit.training import run_adapter_dir

    pairs = load_from_disk(str(smoke_run / "preference" / "pairs_dar"))
    assert len(pairs) > 0 and {"prompt", "chosen", "rejected"} <= set(pairs.column_names)
    assert (smoke_run / "preference" / "pairs_dar.jsonl").read_text().strip()

    adapter = run_adapter_dir(smoke_run)
    assert (adapter / "adapter_config.json").exists()
    dpo_manifest = json.loads((smoke_run / "dpo" / "manifest.json").read_text())
    assert dpo_manifest["dataset"]["training_sha256"] and dpo_manifest["base_model"]
    # the profiles train on the fast path: each DAR prompt run once per batch (issue 7)
    assert dpo_manifest["effective"]["prompt_sharing"] is True
    log = pd.read_csv(smoke_run / "dpo" / "training_log.csv")
    assert len(log) >= 1 and log["loss"].notna().all()

    summary = pd.read_csv(smoke_run / "generalisation_summary.csv")
    assert {"base", "tuned"} <= set(summary["model"])  # the tuned model is the stage-5 adapter
    assert set(summary["role"]) == {"train", "held_out", "other_task"}
    config = json.loads((smoke_run / "generalisation_config.json").read_text())
    assert str(adapter.resolve()) in json.dumps(config)
    # stage 6 evaluates the base model stage 5 recorded, not one rebuilt from the profile
    from aad_kit.run_layout import RunLayout

    layout = RunLayout.of(smoke_run)
    recorded_base = layout.output("05_dpo_training", "base_model", path=False)
    assert config["config"]["models"]["base"] == recorded_base
    assert layout.output("06_generalisation", "primary", path=False)["outcome"]
    assert (smoke_run / "tables" / "headline.csv").is_file() and (smoke_run / "figures" / "headline.png").is_file()
    assert layout.output("04_dar_sampling", "strategy", path=False) == "dar"


@pytest.fixture(scope="module")
def cvrp_funsearch_run(tmp_path_factory) -> Path:
    """Issue 14: a run on CVRP with the student searching by FunSearch islands, the teacher
    data a user's own export (built here with a fake CVRP model: ``teacher_db`` takes a path)."""
    from aad_kit import teacher
    from tests.llm_fixtures import CVRPFakeSampler

    root = tmp_path_factory.mktemp("cvrp")
    spec = teacher.TeacherSpec(name="cvrp-fake", task="cvrp_construct", setting="n50_c40", model="tiny",
                               seeds=(0,), budget_per_run=24, population_size=8, batch_size=8,
                               seed_heuristics=("nearest_neighbour",))
    teacher.build(spec, root=root, sampler=CVRPFakeSampler(), progress=False)
    run_dir = root / "run"
    args = ["run", "--profile", "smoke", "--run-dir", str(run_dir), "-p", "task=cvrp_construct",
            "-p", "search_method=funsearch", "-p", f"teacher_db={root / spec.name}"]
    assert cli_main(args) == 0
    return run_dir


def test_cvrp_with_funsearch_runs_through_all_six_stages(cvrp_funsearch_run: Path):
    from aad_kit.db import AlgorithmDB
    from aad_kit.run_layout import RunLayout

    layout = RunLayout.of(cvrp_funsearch_run)
    o2 = layout.outputs("02_candidate_generation")
    assert o2["train_task"] == "cvrp_construct" and o2["train_setting"] == "n50_c40"
    with AlgorithmDB(layout.database) as db:
        df = db.to_dataframe()
    student = df[df["run_id"].isin(o2["search_runs"])]
    assert len(student) >= 8 and set(student["task"]) == {"cvrp_construct"}
    assert student["notes"].astype(str).str.contains("island").any()  # FunSearch's islands
    assert layout.output("04_dar_sampling", "strategy", path=False) == "dar"
    assert (layout.output("05_dpo_training", "adapter") / "adapter_config.json").is_file()
    summary = pd.read_csv(cvrp_funsearch_run / "generalisation_summary.csv")
    train = summary[summary["role"] == "train"]
    assert set(train["task"]) == {"cvrp_construct"} and {"base", "tuned"} <= set(summary["model"])
    assert set(summary.loc[summary["role"] == "other_task", "task"]) == {"admissible_set"}
    assert "teacher" not in set(summary["model"])  # a user's export ships no reference answers


def test_progress_streams_with_a_relative_run_dir(tmp_path, monkeypatch, capsys):
    """Regression (issue 15): with a relative ``--run-dir`` (``make demo``'s default) the
    kernel, which runs inside the run directory, wrote its progress events to a path relative
    to that directory, so the terminal showed none."""
    monkeypatch.chdir(tmp_path)
    assert cli_main(["run", "--profile", "smoke", "--run-dir", "runs/rel", "--stage", "02_candidate_generation"]) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert "[search] 8/8" in err and "samples/min" in err
    # the run ends by naming its one-page report (issue 15)
    report_line = next(x for x in captured.out.splitlines() if x.startswith("[aad-kit] report: "))
    assert str(tmp_path / "runs" / "rel" / "report.html") in report_line


def test_search_stage_against_a_seed_honouring_openai_server(tmp_path, fake_openai):  # noqa: F811
    """Issue 17 as a user runs it: stage 2 of the smoke profile with ``-p model=openai:...``
    against a local server that answers deterministically per seed (like vLLM): 8 samples, no
    duplicate caused by seeding."""
    from aad_kit.db import AlgorithmDB

    fake_openai.mode = "seeded"
    run_dir = tmp_path / "r"
    assert cli_main(["run", "--profile", "smoke", "--run-dir", str(run_dir), "--stage", "02_candidate_generation",
                     "-p", f"model=openai:{fake_openai.base_url}#served", "-p", "teacher_db=none"]) == 0
    with AlgorithmDB(run_dir / "algorithms.sqlite") as db:
        df = db.to_dataframe()
    samples = df[df["sample_index"] >= 0]
    assert len(samples) == 8 and samples["raw_response"].nunique() == 8
    assert samples["duplicate_of"].isna().all()
    seeds = [body["seed"] for _, body in fake_openai.requests]
    assert len(seeds) == len(set(seeds)) >= 2


def test_a_run_with_no_data_to_learn_from_stops_in_stage_2(tmp_path):
    """No teacher database for the task and no search budget: stage 2 says so instead of
    stage 4 finding an empty database."""
    with pytest.raises(StageFailed, match="nothing to learn from.*-p budget"):
        run_pipeline("smoke", tmp_path / "r", stages=["02_candidate_generation"], progress=False,
                     params={"task": "cvrp_construct", "budget": 0})


def test_the_run_writes_tensorboard_events_for_search_and_dpo(smoke_run):
    """Issue 15: ``tensorboard --logdir runs/<id>`` shows each search's best-so-far and valid
    rate (the teacher's imported runs too) and the DPO curves, with no option set."""
    from aad_kit.run_layout import RunLayout
    from aad_kit.tracking import read_scalars

    layout = RunLayout.of(smoke_run)
    o2 = layout.outputs("02_candidate_generation")
    runs = {d.name for d in (layout.tensorboard / "search").iterdir()}
    assert set(o2["search_runs"]) | set(o2["teacher_runs"]) <= runs
    student = read_scalars(layout.tensorboard / "search" / o2["search_runs"][0])
    assert [s for s, _ in student["search/valid_rate"]] == list(range(1, 9))  # smoke budget 8
    dpo = read_scalars(layout.tensorboard / "dpo")
    assert [s for s, _ in dpo["train/loss"]] == [1, 2, 3, 4]  # smoke: 4 steps
    assert dpo["eval/rewards/accuracies"]  # held-out pairs every eval_steps


def test_a_stage_without_its_input_says_which_stage_and_why(tmp_path):
    """Regression (issue 11): with no pairs from stage 4, stage 5 said "run stage 4 first";
    it now names stage 4 and the reason stage 4 recorded."""
    from aad_kit.run_layout import RunLayout

    layout = RunLayout.of(tmp_path / "r")
    layout.update_manifest(profile="smoke", stages={})
    layout.record("04_dar_sampling", pairs=None, why_pairs="random: all valid algorithms have the same score")
    with pytest.raises(StageFailed, match="stage 04_dar_sampling ran but produced no 'pairs': random: all valid"):
        run_pipeline("smoke", layout.root, stages=["05_dpo_training"], progress=False)



def test_redo_adds_the_search_comparison_to_a_finished_run_without_resampling(smoke_run, tmp_path, capsys):
    """The paper's second protocol on a finished run: stage 6 again with more search runs; its
    saved i1 answers are reused, the earlier stages are left alone, the manifest keeps both."""
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(smoke_run, run)
    answers = (run / "generalisation_answers.jsonl").read_bytes()
    first_nb = (run / "notebooks" / STAGES[0].notebook.name).stat().st_mtime
    assert cli_main(["run", "--profile", "smoke", "--run-dir", str(run), "--stage", "06_generalisation",
                     "--redo", "-p", "search_runs=2"]) == 0
    out = capsys.readouterr().out
    assert "06_generalisation: redo" in out and "06_generalisation: done in" in out
    curves = pd.read_csv(run / "generalisation_search_curves.csv")
    assert set(curves["seed"]) == {0, 1} and set(curves["model"]) == {"base", "tuned"}
    table = pd.read_csv(run / "tables" / "search_comparison.csv")  # per search run, and the teacher's own
    assert set(table["model"]) == {"base", "tuned", "teacher (its shipped search, own config)"}
    teacher = table[table["model"].str.startswith("teacher")]
    assert len(teacher) == 2 and (teacher["samples"] == 4).all()  # its two 512-sample runs, cut to smoke's budget
    assert (run / "generalisation_answers.jsonl").read_bytes() == answers  # nothing sampled twice
    assert (run / "notebooks" / STAGES[0].notebook.name).stat().st_mtime == first_nb
    entry = json.loads((run / "manifest.json").read_text())["stages"]["06_generalisation"]
    assert entry["params"]["search_runs"] == 2
    assert [e.get("params", {}).get("search_runs") for e in entry["earlier_executions"]] == [None]
    assert (run / "stages" / "06_generalisation.done").exists()


def test_redo_marks_later_stages_not_done_and_needs_consecutive_stages(tmp_path, capsys):
    from aad_kit.run_layout import RunLayout

    layout = RunLayout.of(tmp_path / "r")
    layout.update_manifest(profile="smoke", stages={})
    layout.record("04_dar_sampling", pairs=None, why_pairs="random: all valid algorithms have the same score")
    for name in ("05_dpo_training", "06_generalisation"):
        layout.done_marker(name).parent.mkdir(parents=True, exist_ok=True)
        layout.done_marker(name).write_text("earlier")
    with pytest.raises(StageFailed, match="05_dpo_training"):  # no pairs: stage 5 fails, after the redo marks
        run_pipeline("smoke", layout.root, stages=["05_dpo_training"], progress=False, redo=True)
    assert not layout.done_marker("05_dpo_training").exists()
    assert not layout.done_marker("06_generalisation").exists()  # built on the old adapter
    assert "06_generalisation: marked not done" in capsys.readouterr().out
    for stages, message in ((None, "name at least one"), (["04_dar_sampling", "06_generalisation"], "consecutive")):
        args = ["run", "--profile", "smoke", "--run-dir", str(layout.root), "--redo"]
        args += [a for s in stages or [] for a in ("--stage", s)]
        assert cli_main(args) == 2
        assert message in capsys.readouterr().err


def test_executed_notebooks_keep_a_static_snapshot_of_their_widgets(smoke_run):
    """Issue 15: the candidate browser's cell rendered empty without a kernel."""
    from aad_kit.static_widgets import VIEW

    nb = nbformat.read(smoke_run / "notebooks" / "02_candidate_generation.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if VIEW in (o.get("data") or {})]
    snapshots = [o["data"]["text/html"] for o in outputs
                 if "aad-kit-widget-snapshot" in str((o.get("data") or {}).get("text/html", ""))]
    browser = [snap for snap in snapshots if "valid only" in snap]  # the others are progress bars
    assert len(browser) == 1 and "operator" in browser[0] and "status" in browser[0]


def test_example_run_checks_in_the_readable_part_of_a_finished_run(smoke_run, tmp_path, capsys):
    """Issue 15: ``aad-kit example-run RUN_DIR`` -> docs/example-run/ (report, executed notebooks,
    tables, key figures, a README saying what ran); heavy artifacts stay behind."""
    import re

    from aad_kit.example_run import export_example

    dest = tmp_path / "docs" / "example-run"
    assert cli_main(["example-run", str(smoke_run), "--to", str(dest)]) == 0
    assert "example run written to" in capsys.readouterr().out
    assert {p.name for p in (dest / "notebooks").iterdir()} == {s.notebook.name for s in STAGES}
    assert (dest / "tables" / "headline.csv").is_file() and (dest / "report.html").is_file()
    assert not (dest / "dpo").exists() and not (dest / "algorithms.sqlite").exists()
    # the answers travel with the config that says which models wrote them (else not re-usable)
    assert (dest / "generalisation_answers.jsonl").is_file() and (dest / "generalisation_config.json").is_file()
    report = (dest / "report.md").read_text()
    links = re.findall(r"\]\(((?:figures|notebooks)/[^)]+)\)", report)
    assert any(link.startswith("figures/") for link in links)
    assert all((dest / link).is_file() for link in links), links  # every link resolves in the copy
    readme = (dest / "README.md").read_text()
    assert "aad-kit run --profile smoke" in readme and "06_generalisation" in readme
    assert "`dpo` (" in readme  # what was left out, with its size
    # re-exporting replaces the earlier copy; a directory someone else wrote is never removed
    (dest / "stale.txt").write_text("x")
    export_example(smoke_run, dest)
    assert not (dest / "stale.txt").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        export_example(smoke_run, foreign)
    assert (foreign / "notes.txt").read_text() == "keep"


def test_example_run_refuses_an_unfinished_run(tmp_path):
    from aad_kit.example_run import export_example
    from aad_kit.run_layout import RunLayout

    with pytest.raises(FileNotFoundError, match="not a run directory"):
        export_example(tmp_path / "nothing", tmp_path / "out")
    layout = RunLayout.of(tmp_path / "half")
    layout.root.mkdir()
    layout.update_manifest(profile="smoke", stages={})
    with pytest.raises(ValueError, match="unfinished .*--partial"):
        export_example(layout.root, tmp_path / "out")
    assert (export_example(layout.root, tmp_path / "out", partial=True) / "README.md").is_file()


def test_every_stage_ends_with_a_one_line_summary(smoke_run):
    """Issue 15: 'done in 12 s' said nothing of what a stage found."""
    import re

    from aad_kit.pipeline import stage_summary
    from aad_kit.run_layout import RunLayout

    layout = RunLayout.of(smoke_run)
    lines = {s.name: stage_summary(s.name, layout) for s in STAGES}
    assert re.match(r"\d+ shipped heuristics x settings over \d+ tasks: ok \d+", lines["01_task_definition"])
    # per setting: the teacher's samples and the smoke search's own 8, all on n15_w10
    assert re.search(r"n15_w10: \d+ samples, \d+ valid, best \d+ \(seeds' best \d+\)", lines["02_candidate_generation"])
    assert re.match(r"\d+ programs scored over \d+ tasks: ", lines["03_evaluator_scoring"])
    assert "timeout" in lines["03_evaluator_scoring"]  # the hostile catalogue's loops
    assert re.match(r"\d+ dar pairs", lines["04_dar_sampling"])
    assert re.match(r"4 DPO steps on \d+ pairs", lines["05_dpo_training"])
    assert lines["06_generalisation"]


def test_ablation_branch_trains_and_evaluates_another_strategy(smoke_run, tmp_path, capsys):
    """Issue 13: the pair strategies compared by the tuned model. ``aad-kit ablate`` branches a
    finished run: stages 1-3 are copied (not re-run), stages 4-6 run with the other strategy,
    the base model's evaluation answers are re-used, and the run gets one table of both."""
    import shutil

    from aad_kit.ablation import ablation_table
    from aad_kit.evaluation.storage import load_answers
    from aad_kit.run_layout import RunLayout

    source = tmp_path / "source"
    shutil.copytree(smoke_run, source)
    # as if started with a stage-2 parameter: the branch must not pass it to stages 4-6
    RunLayout.of(source).update_manifest(params={"budget": 8})
    assert cli_main(["ablate", str(source), "--strategies", "dar", "random", "-q"]) == 0
    out = capsys.readouterr().out
    src, branch = RunLayout.of(source), RunLayout.of(source / "ablation" / "random")
    assert "dar: the source run itself" in out and "table:" in out
    assert not (source / "ablation" / "dar").exists()
    m_src, m_branch = src.read_manifest(), branch.read_manifest()
    for stage in ("01_task_definition", "02_candidate_generation", "03_evaluator_scoring"):
        assert m_branch["stages"][stage] == m_src["stages"][stage]  # copied, not run again
    for stage in ("04_dar_sampling", "05_dpo_training", "06_generalisation"):
        assert branch.done_marker(stage).exists()
    assert m_branch["stages"]["04_dar_sampling"]["params"]["strategy"] == "random"
    assert m_branch["params"] == {"budget": 8, "strategy": "random"}
    assert m_branch["branch_of"] == {"run": str(source.resolve()), "strategy": "random",
                                     "shared_stages": ["01_task_definition", "02_candidate_generation",
                                                       "03_evaluator_scoring"]}
    assert branch.output("04_dar_sampling", "strategy", path=False) == "random"
    assert (branch.pairs("random")).is_dir() and not branch.pairs("dar").exists()
    tuned = branch.output("06_generalisation", "models", path=False)["tuned"]
    assert str(branch.adapter) in tuned  # the branch's own adapter, not the source's
    assert branch.output("05_dpo_training", "adapter_sha256", path=False) != \
        src.output("05_dpo_training", "adapter_sha256", path=False)
    # the base answers are the source's, re-used rather than sampled again
    src_answers, branch_answers = load_answers(source), load_answers(branch.root)
    base_keys = [k for k in src_answers if k[0] == "base"]
    assert base_keys and all(branch_answers[k] == src_answers[k] for k in base_keys)
    table = pd.read_csv(source / "tables" / "ablation.csv")
    assert len(table) == len(ablation_table(source))
    assert set(table["strategy"]) == {"dar", "random"}
    assert table.loc[table["strategy"] == "dar", "source"].all()
    train = table[table["role"] == "train"].set_index("strategy")
    for strategy, lay in (("dar", src), ("random", branch)):
        comparison = pd.read_csv(lay.root / "generalisation_comparison.csv")
        row = comparison[comparison["role"] == "train"].iloc[0]
        assert train.loc[strategy, "d_valid_rate"] == pytest.approx(row["d_valid_rate"])
        assert train.loc[strategy, "n_pairs"] == lay.output("04_dar_sampling", "n_pairs", path=False)
    # the direct comparison: the branch's tuned model minus the source's
    assert train.loc["random", "d_valid_rate_vs_source"] == pytest.approx(
        train.loc["random", "valid_rate_tuned"] - train.loc["dar", "valid_rate_tuned"])
    assert pd.isna(train.loc["dar", "d_valid_rate_vs_source"])
    assert (source / "figures" / "ablation.png").stat().st_size > 5_000
    report = (source / "report.md").read_text()  # the run's one page shows the ablation
    assert "Pair strategies by the tuned model" in report and "figures/ablation.png" in report
    # a second call resumes: nothing re-runs, the branch is kept
    before = branch.done_marker("05_dpo_training").read_text()
    assert cli_main(["ablate", str(source), "--strategies", "random", "-q"]) == 0
    assert "already done" in capsys.readouterr().out
    assert branch.done_marker("05_dpo_training").read_text() == before


def test_ablation_refuses_a_run_whose_shared_stages_have_not_finished(tmp_path, capsys):
    from aad_kit.run_layout import RunLayout

    run_dir = tmp_path / "r"
    layout = RunLayout.of(run_dir)
    layout.update_manifest(profile="smoke", stages={})
    layout.done_marker("01_task_definition").parent.mkdir(parents=True)
    layout.done_marker("01_task_definition").write_text("x")
    assert cli_main(["ablate", str(run_dir), "--strategies", "random"]) == 2
    err = capsys.readouterr().out
    assert "02_candidate_generation" in err and "run those stages first" in err
    assert not (run_dir / "ablation" / "random").exists()


def test_a_packed_run_unpacked_elsewhere_can_be_branched_and_read(smoke_run, tmp_path, capsys):
    """``aad-kit pack`` / ``unpack`` move a finished run to another machine without its model
    state: the copy keeps every stage record and answer, an ablation can branch it, and the only
    output it lacks is the one named (the adapter)."""
    from aad_kit.ablation import ablation_table, make_branch
    from aad_kit.evaluation.storage import load_samples
    from aad_kit.run_layout import STAGE_ORDER, RunLayout

    archive = tmp_path / "smoke.tar.gz"
    assert cli_main(["pack", str(smoke_run), "-o", str(archive)]) == 0
    assert cli_main(["unpack", str(archive), "--to", str(tmp_path / "moved")]) == 0
    printed = capsys.readouterr().out
    assert "05_dpo_training recorded 'adapter' at dpo/adapter, which is not here" in printed
    moved = RunLayout.of(tmp_path / "moved")
    src = RunLayout.of(smoke_run)
    assert moved.read_manifest()["stages"] == src.read_manifest()["stages"]
    assert all(moved.done_marker(s).exists() for s in STAGE_ORDER)
    pd.testing.assert_frame_equal(load_samples(moved.root), load_samples(src.root))
    assert not moved.adapter.exists() and not (moved.dpo / "checkpoints").exists()
    cols = ["strategy", "n_pairs", "dpo_steps", "heldout_pref_accuracy", "d_valid_rate", "d_mean_score"]
    pd.testing.assert_frame_equal(ablation_table(moved.root)[cols], ablation_table(src.root)[cols])
    branch = RunLayout(make_branch(moved.root, "random"))
    assert branch.done_marker("03_evaluator_scoring").exists()
    assert branch.database.stat().st_size > 0
