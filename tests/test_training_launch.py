"""Stage 5 under ``accelerate launch`` (two CPU processes, torch DDP over gloo) on the tiny model.

What must hold: the command resolves exactly stage 5's inputs (same identity as a one-process
``train_dpo`` on them, so stage 5 would reuse the adapter), both processes train (each on its
share: the epoch count doubles at the same step), and only rank 0 writes the run's files.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from aad_kit.run_layout import RunLayout
from aad_kit.training import train_dpo
from aad_kit.training.launch import stage_training
from aad_kit.training.log import read_log
from tests.llm_fixtures import llm_cache, tiny_model_dir  # noqa: F401 - pytest fixtures
from tests.test_training import _dataset

ROOT = Path(__file__).resolve().parents[1]
PROFILE = "smoke"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):  # noqa: F811
    """A run directory holding what stages 2 and 4 record: the student, pairs, held-out pairs."""
    run = tmp_path_factory.mktemp("launch") / "run"
    layout = RunLayout.of(run)
    _dataset(8).save_to_disk(str(run / "pairs"))
    _dataset(4).save_to_disk(str(run / "heldout"))
    layout.record("02_candidate_generation", student_model=str(tiny_model_dir))
    layout.record("04_dar_sampling", pairs=run / "pairs", heldout_pairs=run / "heldout")
    return run


def test_stage_training_reads_what_the_run_recorded(run_dir, tiny_model_dir):  # noqa: F811
    st = stage_training(run_dir, PROFILE, max_steps=3)
    assert st.dataset_dir == (run_dir / "pairs").resolve() and st.heldout_dir == (run_dir / "heldout").resolve()
    assert st.model == str(tiny_model_dir) and st.config.max_steps == 3 and st.heldout_note == ""
    assert st.out_dir == RunLayout.of(run_dir).dpo
    bare = stage_training(run_dir, PROFILE, dataset_path=str(run_dir / "pairs"))
    assert bare.heldout_dir is None and bare.config.max_steps == 4  # the smoke profile's


def test_in_memory_pairs_are_refused_on_several_processes(tiny_model_dir, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("WORLD_SIZE", "2")
    st = stage_training(tmp_path, PROFILE, dataset_path="unused", base_model=str(tiny_model_dir))
    with pytest.raises(ValueError, match="needs its preference pairs on disk"):
        train_dpo(_dataset(4), tiny_model_dir, st.config, tmp_path / "dpo", progress=False)


def test_two_processes_train_stage_5_with_its_identity(run_dir, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", AAD_KIT_TORCH_THREADS="1")
    two = tmp_path / "two"
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "aad_kit.training.launch", str(run_dir), "--profile", PROFILE, "--max-steps", "2",
           "--eval-steps", "2", "--out-dir", str(two)]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("[aad-kit] DPO on 2 process(es)") == 1  # rank 0 speaks for both
    m2 = json.loads((two / "manifest.json").read_text())
    assert m2["status"] == "complete" and m2["world_size"] == 2 and m2["global_step"] == 2
    assert (two / "adapter" / "adapter_model.safetensors").stat().st_size > 0

    st = stage_training(run_dir, PROFILE, max_steps=2, eval_steps=2)  # what the notebook trains
    one = train_dpo(str(st.dataset_dir), st.model, st.config, tmp_path / "one", progress=False,
                    eval_dataset=str(st.heldout_dir))
    m1 = json.loads(one.manifest_path.read_text())
    assert m2["identity"] == m1["identity"] and m1["world_size"] == 1
    rows1, rows2 = read_log(tmp_path / "one"), read_log(two)
    last1 = [r for r in rows1 if "loss" in r][-1]
    last2 = [r for r in rows2 if "loss" in r][-1]
    assert last2["step"] == last1["step"] == 2
    assert last2["epoch"] == pytest.approx(2 * last1["epoch"])  # each process took its share
    assert [r["step"] for r in rows2 if "eval_loss" in r] == [2]  # one row per step, not per rank
