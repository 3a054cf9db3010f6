"""End to end: the smoke experiment writes every artefact; a resumed run equals an uninterrupted one; derive
works on a saved run; bad input fails with one clear message and a non-zero exit."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, assert_same_run

from enas.augment import normalise
from enas.checkpoint import load_checkpoint
from enas.data import Split
from enas.judges import split_scores
from enas.pipeline import run_derive, run_search
from enas.spaces.micro_arch import MicroArch
from enas.spaces.nb201 import Nb201Space

ARTEFACTS = ("metrics.jsonl", "last.pt", "best_arch.json", "derived.json", "result.json")


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_smoke_experiment_runs_from_the_command_line_and_writes_every_artefact(tmp_path):
    proc = _run("experiment=smoke", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in (*ARTEFACTS, ".hydra/config.yaml", "config_resolved.yaml", "run.log"):
        assert (tmp_path / name).exists(), name
    assert len(_records(tmp_path)) == 2  # one record per epoch
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["mode"] == "search" and 0.0 <= result["best_valid_acc"] <= 1.0
    best = MicroArch.load(tmp_path / "best_arch.json")
    assert best.to_enas_string() == result["best_arch"]
    assert "normal cell" in (tmp_path / "run.log").read_text()  # the winner is printed as a table
    derived = json.loads((tmp_path / "derived.json").read_text())
    losses = [c["valid_loss"] for c in derived["top"]]  # derive.score=loss by default
    assert losses == sorted(losses) and derived["top"][0]["enas_string"] == result["best_arch"]


def test_resumed_search_equals_uninterrupted_search(smoke, tmp_path):
    full_cfg, full_resolved = smoke("trainer.epochs=2", "deterministic=true", name="full")
    run_search(full_cfg, full_resolved)
    part_cfg, part_resolved = smoke("trainer.epochs=1", "deterministic=true", name="part")
    run_search(part_cfg, part_resolved)  # "interrupted" after epoch 1: last.pt is all that survives
    resumed_cfg, resumed_resolved = smoke("trainer.epochs=2", "deterministic=true", name="part")
    run_search(resumed_cfg, resumed_resolved)

    # the sampler phase's table (sampled_archs.jsonl) survives the interruption exactly: no epoch twice, none lost
    assert assert_same_run(tmp_path / "full", tmp_path / "part")["epoch"] == 2


def test_derive_mode_loads_a_saved_run(smoke, tmp_path):
    search_cfg, resolved = smoke("trainer.epochs=1", name="search")
    run_search(search_cfg, resolved)
    derive_cfg, resolved = smoke("mode=derive", f"load_from={tmp_path / 'search'}", "derive.num_samples=3",
                                 "derive.prefilter=null", name="derive")
    result = run_derive(derive_cfg, resolved)
    derived = json.loads((tmp_path / "derive" / "derived.json").read_text())
    assert derived["num_scored"] <= 4 and any(c["source"] == "most_likely" for c in derived["top"])
    assert MicroArch.load(tmp_path / "derive" / "best_arch.json").to_enas_string() == result["best_arch"]


@pytest.mark.parametrize("score", ["acc", "loss"])
def test_derive_ranks_by_the_configured_score_and_records_both(smoke, tmp_path, score):
    search_cfg, resolved = smoke("search_space=nb201", "trainer.strategy=random", "trainer.epochs=1", name="search")
    run_search(search_cfg, resolved)
    derive_cfg, resolved = smoke("search_space=nb201", "trainer.strategy=random", "mode=derive", f"derive.score={score}",
                                 f"load_from={tmp_path / 'search'}", "derive.num_samples=8", "derive.prefilter=null",
                                 name=score)
    run_derive(derive_cfg, resolved)
    top = json.loads((tmp_path / score / "derived.json").read_text())["top"]
    accs, losses = [c["valid_acc"] for c in top], [c["valid_loss"] for c in top]
    assert len(top) >= 5 and all(0 < loss < 10 for loss in losses)
    assert (accs == sorted(accs, reverse=True)) if score == "acc" else (losses == sorted(losses))
    best = json.loads((tmp_path / score / "best_arch.json").read_text())
    assert (best["valid_acc"], best["valid_loss"]) == (accs[0], losses[0])


def test_split_scores_are_the_accuracy_and_mean_cross_entropy_of_the_child():
    torch.manual_seed(0)
    space = Nb201Space(channels=4, cells_per_stage=1)
    net, arch = space.supernet(), space.sample_uniform(torch.Generator().manual_seed(1))
    split = Split(torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8), torch.randint(10, (10,)))
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    acc, loss = split_scores(net, arch, split, mean, std, batch_size=4, memory_format=torch.contiguous_format)
    net.eval()
    with torch.no_grad():
        logits = torch.cat([net(normalise(split.x[i:i + 4], mean, std), arch)[0] for i in (0, 4, 8)])
    assert torch.allclose(loss, F.cross_entropy(logits, split.y), atol=1e-5)
    assert torch.allclose(acc, (logits.argmax(1) == split.y).float().mean())


def test_random_search_strategy_runs_without_controller(smoke, tmp_path):
    config, resolved = smoke("trainer.strategy=random", "trainer.epochs=1")
    result = run_search(config, resolved)
    assert result["strategy"] == "random"
    record = _records(tmp_path / "run")[0]
    assert not any(k.startswith("controller/") for k in record) and "time/controller_s" not in record


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("overrides, message", [
    (["data=npz", "data.path=/nonexistent/file.npz"], "/nonexistent/file.npz"),
    (["data=cifar10", "data.download=false"], "data=synthetic"),
    (["data.num_train=16"], "batch"),
])
def test_bad_input_exits_nonzero_with_one_clear_message(overrides, message, tmp_path):
    proc = _run("experiment=smoke", f"hydra.run.dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}", *overrides)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "last.pt").exists() and not list(tmp_path.glob("*.tmp"))


def test_npz_with_labels_out_of_range_is_rejected_by_the_cli(tmp_path):
    x = np.zeros((64, 16, 16, 3), np.uint8)
    path = _write_npz(tmp_path / "bad.npz", x=x, y=np.full(64, -1))
    proc = _run("experiment=smoke", f"hydra.run.dir={tmp_path / 'run'}", "data=npz", f"data.path={path}")
    assert proc.returncode == 2 and "-1" in proc.stdout + proc.stderr


def test_unknown_config_key_exits_nonzero(tmp_path):
    proc = _run("experiment=smoke", f"hydra.run.dir={tmp_path}", "trainer.nonsense=1")
    assert proc.returncode != 0 and "nonsense" in proc.stderr


def test_offline_wandb_run_holds_the_tables_images_and_artefacts(smoke, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # no account, no network: `wandb sync` can push it later
    monkeypatch.setenv("WANDB_SILENT", "true")
    config, resolved = smoke("logger=wandb", "trainer.epochs=1")
    run_search(config, resolved)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    files = {p.name for p in (runs[0] / "files").rglob("*")}
    assert any(name.startswith("sampled_archs") and name.endswith(".table.json") for name in files), files
    assert any(name.endswith(".png") for name in files), files  # drawings and curves as W&B images
    record = _records(tmp_path / "run")[0]
    assert {"epoch", "shared/loss", "shared/acc", "controller/reward", "controller/baseline", "controller/entropy",
            "valid/acc", "lr", "time/shared_images_per_s", "time/shared_s"} <= set(record)
    assert abs(sum(v for k, v in record.items() if k.startswith("ops/")) - 1) < 1e-9


def test_wandb_logger_keeps_the_local_record(smoke, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # mode: null lets the environment decide; no network here
    config, resolved = smoke("logger=wandb", "trainer.epochs=1")
    run_search(config, resolved)
    assert len(_records(tmp_path / "run")) == 1
    assert load_checkpoint(tmp_path / "run" / "last.pt")["wandb_id"]


def test_a_failing_sweep_job_leaves_the_others_running_and_logging(tmp_path):
    proc = _run("-m", "experiment=smoke", "trainer.epochs=1", "data.num_train=16,512", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    failed = json.loads((tmp_path / "0" / "result.json").read_text())
    assert "fewer than the batch size" in failed["error"] and not (tmp_path / "0" / "last.pt").exists()
    assert len(_records(tmp_path / "1")) == 1 and "best_valid_acc" in json.loads((tmp_path / "1" / "result.json").read_text())
