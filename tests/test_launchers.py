"""Sweeps through Hydra's launcher plugins (conf/hydra/launcher/): submitit_local and joblib each run a 2-job sweep
into two complete run directories; the slurm presets compose and render the sbatch script SLURM would get; SIGUSR2
(submitit's warning before a time limit) saves the run mid-epoch and is handed on to submitit, which requeues the
job; and (slow) a submitit_local job warned that way is requeued and resumes from last.pt in its own directory."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CONF_DIR, ROOT, metric_records
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from enas.checkpoint import load_checkpoint
from enas.interrupt import RunInterrupted
from enas.launch import hand_on
from enas.pipeline import run_search
from enas.search import SearchLoop

SMOKE_SWEEP = ("experiment=smoke", "trainer.epochs=1", "derive.num_samples=2", "seed=0,1")


def _sweep(tmp_path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", *overrides, f"hydra.sweep.dir={tmp_path}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _assert_complete_runs(sweep_dir, seeds=(0, 1), epochs: int = 1) -> None:
    for job, seed in enumerate(seeds):
        run_dir = sweep_dir / str(job)
        result = json.loads((run_dir / "result.json").read_text())
        assert result["mode"] == "search" and result["seed"] == seed and 0 <= result["best_valid_acc"] <= 1
        assert [r["epoch"] for r in metric_records(run_dir)] == list(range(1, epochs + 1))
        assert load_checkpoint(run_dir / "last.pt")["epoch"] == epochs
        assert (run_dir / ".hydra" / "overrides.yaml").exists() and (run_dir / "best_arch.json").exists()


def test_a_sweep_through_submitit_local_writes_two_complete_run_directories(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    _sweep(tmp_path, "hydra/launcher=local", *SMOKE_SWEEP)
    _assert_complete_runs(tmp_path)
    assert list(tmp_path.glob(".submitit/*/*_log.out"))  # submitit's own per-job logs


def test_a_sweep_through_joblib_writes_two_complete_run_directories(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    proc = _sweep(tmp_path, "hydra/launcher=joblib", *SMOKE_SWEEP)
    _assert_complete_runs(tmp_path)
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr


@pytest.fixture
def render_sbatch(tmp_path, monkeypatch):
    """The sbatch script the real launcher plugin would submit for a preset: compose it, run its launch() with
    submission replaced by a capture, render the captured executor's script (no SLURM: a stub `srun` on PATH)."""
    submitit = pytest.importorskip("submitit")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    captured = {}
    monkeypatch.setattr(submitit.AutoExecutor, "map_array", lambda executor, *args: captured.update(ex=executor) or [])

    def render(*overrides: str) -> str:
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            cfg = compose(config_name="config", overrides=[*overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                          return_hydra_config=True)
        launcher = instantiate(cfg.hydra.launcher)
        launcher.setup(hydra_context=None, task_function=None, config=cfg)
        launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)
        # submitit's own rendering of the script it would pass to sbatch (a private method: there is no public one)
        return captured["ex"]._executor._make_submission_file_text("python -m submitit.core._submit", "0")
    return render


def test_the_slurm_preset_renders_a_job_script_with_the_requested_resources(render_sbatch):
    script = render_sbatch("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90",
                           "hydra.launcher.gpus_per_node=2", "hydra.launcher.setup=[module load cuda/12.4]")
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=2", "--ntasks-per-node=1", "--cpus-per-task=8",
                 "--mem=32GB", "--signal=USR2@120"):  # SIGUSR2 2 minutes early: the run saves, submitit requeues
        assert f"#SBATCH {line}\n" in script, line
    assert "\nmodule load cuda/12.4\n" in script


def test_the_slurm_ddp_preset_asks_for_one_task_per_gpu(render_sbatch):
    script = render_sbatch("hydra/launcher=slurm_ddp", "hydra.launcher.partition=gpu", "hydra.launcher.nodes=2")
    for line in ("--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=4", "--partition=gpu"):
        assert f"#SBATCH {line}\n" in script, line


def test_sigusr2_saves_mid_epoch_and_is_handed_on_to_the_requeue_handler(smoke, tmp_path, monkeypatch):
    """What a submitit job sees before its time limit: the loop finishes the step and writes last.pt, then run.py
    hands SIGUSR2 on to the handler that was there before (submitit's requeue, a recorder here)."""
    handed_on = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: handed_on.append(signum))
    try:
        original, calls = SearchLoop.shared_step, []

        def shared_step(self, *args):
            calls.append(1)
            if len(calls) == 5:
                os.kill(os.getpid(), signal.SIGUSR2)
            return original(self, *args)
        monkeypatch.setattr(SearchLoop, "shared_step", shared_step)
        with pytest.raises(RunInterrupted, match="SIGUSR2 in epoch 1 after step 5") as info:
            run_search(*smoke("trainer.epochs=1"))
        assert handed_on == []  # the loop held the signal until last.pt was written
        assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch_step"] == 5
        hand_on(info.value.signum)
        assert handed_on == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def _submitit_task_pids(sweep_dir) -> list[int]:
    """Processes running a submitit task of this sweep (`python -m submitit.core._submit <sweep>/.submitit/...`)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if b"submitit.core._submit" in args and any(str(sweep_dir).encode() in a for a in args):
                pids.append(int(cmdline.parent.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process through /proc")
def test_a_job_warned_before_its_time_limit_is_requeued_and_resumes_from_last_pt(tmp_path):
    """What SLURM does before a time limit, sent by hand to a submitit_local job in its second epoch: the run saves
    mid-epoch, hands SIGUSR2 to submitit, submitit requeues the job, and it resumes in the same directory; every
    epoch is recorded once."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=local", "experiment=smoke",
                              "trainer.epochs=4", "derive.num_samples=2", "seed=0", f"hydra.sweep.dir={tmp_path}"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics, deadline = tmp_path / "0" / "metrics.jsonl", time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and sweep.poll() is None:
        assert time.monotonic() < deadline, "the job wrote no epoch record in 2 minutes"
        time.sleep(0.2)
    (pid,) = _submitit_task_pids(tmp_path)
    os.kill(pid, signal.SIGUSR2)
    output, _ = sweep.communicate(timeout=180)
    assert sweep.returncode == 0, output[-3000:]
    _assert_complete_runs(tmp_path, seeds=(0,), epochs=4)
    log = (tmp_path / "0" / "run.log").read_text()
    for line in ("SIGUSR2 received", "handing SIGUSR2 on to SignalHandler.checkpoint_and_try_requeue",
                 "Requeued job", "resuming from"):
        assert line in log, line
