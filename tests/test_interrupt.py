"""Stopping and resuming: SIGINT/SIGTERM save a run mid-epoch and it resumes exactly; `resume=<run dir>` replays
a run's own overrides in its directory."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, assert_same_run, metric_records, signal_at

from enas.checkpoint import load_checkpoint
from enas.interrupt import RunInterrupted, StopSignals
from enas.pipeline import run_search, run_train
from enas.resume import ResumeError, expand_resume
from enas.retrain import RetrainLoop
from enas.search import SearchLoop


def test_sigterm_mid_epoch_saves_and_the_resumed_search_equals_an_uninterrupted_one(smoke, tmp_path, monkeypatch):
    run_search(*smoke("deterministic=true", name="full"))
    steps_per_epoch = load_checkpoint(tmp_path / "full" / "last.pt")["global_step"] // 2
    # killed during the 3rd step of the second epoch: the step finishes, then last.pt records the position
    signal_at(monkeypatch, SearchLoop, "shared_step", signal.SIGTERM, steps_per_epoch + 3)
    with pytest.raises(RunInterrupted, match="SIGTERM in epoch 2 after step 3") as info:
        run_search(*smoke("deterministic=true", name="part"))
    assert info.value.exit_code == 128 + signal.SIGTERM
    saved = load_checkpoint(tmp_path / "part" / "last.pt")
    assert (saved["epoch"], saved["epoch_step"], saved["global_step"]) == (1, 3, steps_per_epoch + 3)
    assert not (tmp_path / "part" / "result.json").exists()  # stopped before derive
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored

    monkeypatch.undo()
    run_search(*smoke("deterministic=true", name="part"))
    assert_same_run(tmp_path / "full", tmp_path / "part")


def test_a_signal_in_the_controller_phase_finishes_the_epoch_first(smoke, tmp_path, monkeypatch):
    run_search(*smoke("deterministic=true", name="full"))
    signal_at(monkeypatch, SearchLoop, "train_sampler", signal.SIGINT, 1)
    with pytest.raises(RunInterrupted, match="SIGINT after epoch 1"):
        run_search(*smoke("deterministic=true", name="part"))
    saved = load_checkpoint(tmp_path / "part" / "last.pt")
    assert (saved["epoch"], saved["epoch_step"]) == (1, 0)
    assert [r["epoch"] for r in metric_records(tmp_path / "part")] == [1]  # the epoch's record was written
    monkeypatch.undo()
    run_search(*smoke("deterministic=true", name="part"))
    assert_same_run(tmp_path / "full", tmp_path / "part")


def test_sigint_mid_epoch_of_a_final_training_resumes_exactly(smoke, tmp_path, monkeypatch):
    train = ("mode=train", "arch=enas_micro_paper", "deterministic=true")
    run_train(*smoke(*train, name="full"))
    signal_at(monkeypatch, RetrainLoop, "train_step", signal.SIGINT, 20 + 7)  # 20 steps per epoch
    with pytest.raises(RunInterrupted, match="in epoch 2 after step 7"):
        run_train(*smoke(*train, name="part"))
    monkeypatch.undo()
    run_train(*smoke(*train, name="part"))
    assert assert_same_run(tmp_path / "full", tmp_path / "part")["global_step"] == 2 * 20


def test_a_second_signal_stops_at_once_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="second SIGINT"), StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signum == signal.SIGINT
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


# --- resume=<run dir> ------------------------------------------------------------------------------------------
def _run_dir(tmp_path, overrides: list[str]):
    (tmp_path / ".hydra").mkdir(parents=True)
    (tmp_path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return tmp_path


def test_resume_replays_the_runs_overrides_and_lets_new_ones_win(tmp_path):
    run_dir = _run_dir(tmp_path, ["experiment=smoke", "trainer.epochs=2", "seed=3", "hydra.run.dir=x"])
    argv = expand_resume(["run.py", f"resume={run_dir}", "trainer.epochs=5"])
    assert argv == ["run.py", "experiment=smoke", "seed=3", "trainer.epochs=5", f"hydra.run.dir={run_dir}",
                    "resume=true"]
    assert expand_resume(["run.py", "resume=false", "seed=1"]) == ["run.py", "resume=false", "seed=1"]


@pytest.mark.parametrize(("argv", "fragment"), [
    (["run.py", "resume=/no/such/run"], "'/no/such/run': no such directory"),
    (["run.py", "-m", "resume={run}"], "without -m"),
    (["run.py", "resume={run}", "resume={run}"], "given 2 times"),
])
def test_resume_errors_name_the_problem(tmp_path, argv, fragment):
    run_dir = _run_dir(tmp_path / "run", [])
    with pytest.raises(ResumeError, match=fragment):
        expand_resume([a.format(run=run_dir) for a in argv])
    (tmp_path / "plain").mkdir()
    with pytest.raises(ResumeError, match="is not a run directory: .hydra/overrides.yaml is missing"):
        expand_resume(["run.py", f"resume={tmp_path / 'plain'}"])


@pytest.mark.slow
def test_resume_from_the_command_line_continues_the_run_in_its_directory(tmp_path):
    def run(*args):
        proc = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc

    run("experiment=smoke", "trainer.epochs=1", "derive.num_samples=2", f"hydra.run.dir={tmp_path}")
    proc = run(f"resume={tmp_path}", "trainer.epochs=2")
    assert "resuming from" in proc.stderr + proc.stdout
    assert [r["epoch"] for r in metric_records(tmp_path)] == [1, 2]
    assert yaml.safe_load((tmp_path / ".hydra" / "overrides.yaml").read_text())[:2] == ["experiment=smoke",
                                                                                       "derive.num_samples=2"]
