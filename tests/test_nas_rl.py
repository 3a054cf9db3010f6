"""trainer.strategy=nas_rl: the ENAS controller and REINFORCE with every child trained from scratch (Zoph & Le 2017),
or rewarded from a NAS-Bench-201 table; children.jsonl and exact resume; children trained in a process pool."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import compose_config, metric_records

from enas.benchmark import BenchmarkError
from enas.build import build_sampler, build_space
from enas.checkpoint import load_checkpoint
from enas.nas_rl import _benchmark_shape, reward_of
from enas.nas_rl_children import ChildLedger, ChildLoop
from enas.pipeline import run_search
from enas.spaces.nb201_arch import all_archs

NAS_RL = ("trainer.strategy=nas_rl",)
FAVOURED = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
RUN_FILES = ("best_arch.json", "result.json", "children.jsonl", "metrics.jsonl", "sampled_archs.jsonl", "last.pt")


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def made_up_benchmark(tmp_path_factory):
    """Every nb201 cell with a made-up validation accuracy: 10% plus 15 points per 3x3 conv (7.5 per 1x1), so the
    all-3x3 cell is the only one at 100%."""
    path = tmp_path_factory.mktemp("bench") / "nb201.csv"
    lines = ["arch,cifar10_valid"]
    for arch in all_archs():
        convs = arch.ops.count("nor_conv_3x3") + 0.5 * arch.ops.count("nor_conv_1x1")
        lines.append(f"{arch.to_bench_string()},{10 + 15 * convs:.2f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows(path: Path, drop=("train_time_s",)) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in path.read_text().splitlines()]


def _favoured_probability(cfg, state: dict | None) -> float:
    """P(all-3x3 cell) under the controller as the run built it, or with `state` (a last.pt's sampler) loaded."""
    space = build_space(cfg, _benchmark_shape())
    torch.manual_seed(cfg.seed)
    sampler = build_sampler(cfg, space, torch.device("cpu"))
    if state is not None:
        sampler.load_state_dict(state)
    favoured = next(a for a in all_archs() if a.to_bench_string() == FAVOURED)
    with torch.no_grad():
        return sampler.controller(choices=torch.tensor([space.to_choices(favoured)])).log_prob.exp().item()


# --- learning from benchmark rewards -----------------------------------------------------------------------------
def test_controller_learns_the_cell_the_benchmark_rewards_most(smoke, tmp_path, made_up_benchmark):
    # a faster learner than the nb201 controller's (ENAS's lr 0.001 and TF eps 1e-3 need many more updates), with
    # the benchmark's 2.5 logit bound: the default 1.1 caps an edge's likeliest op near 0.69, a cell near 0.1
    cfg, resolved = smoke("search_space=nb201", *NAS_RL, "nas_rl.reward=benchmark",
                          f"benchmark.path={made_up_benchmark}", "nas_rl.num_updates=30",
                          "nas_rl.children_per_update=8", "controller.lr=0.05", "controller.eps=1e-8",
                          "controller.baseline_decay=0.9", "controller.tanh_op=2.5")
    result = run_search(cfg, resolved)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["controller/reward"] for r in records]
    baselines = [r["controller/baseline"] for r in records]
    assert len(records) == 30 and result["num_children"] == 240
    before, after = _favoured_probability(cfg, None), _favoured_probability(cfg, load_checkpoint(
        tmp_path / "run" / "last.pt")["sampler"])
    assert after > 100 * before and after > 0.1
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.2
    assert baselines[0] < baselines[-1] and abs(baselines[-1] - sum(rewards[-5:]) / 5) < 0.05  # the EMA follows
    children = _rows(tmp_path / "run" / "children.jsonl")  # rewards are the table's accuracies / 100
    assert all(c["reward"] == pytest.approx(c["benchmark/cifar10_valid"] / 100) for c in children)
    assert result["best_valid_acc"] == pytest.approx(max(c["reward"] for c in children))
    assert result["benchmark"]["cifar10_valid"] == pytest.approx(100 * result["best_valid_acc"])


def test_an_architecture_missing_from_the_benchmark_is_an_error(smoke, tmp_path):
    table = tmp_path / "partial.csv"
    table.write_text(f"arch,cifar10_valid\n{FAVOURED},93.0\n")
    with pytest.raises(BenchmarkError, match="is not in the benchmark"):
        run_search(*smoke("search_space=nb201", *NAS_RL, "nas_rl.reward=benchmark", f"benchmark.path={table}"))


# --- resume ------------------------------------------------------------------------------------------------------
def test_a_killed_run_resumes_without_retraining_finished_children(smoke, tmp_path, monkeypatch):
    """Killed in the 3rd child (after its first of 2 epochs): the resumed run reuses children 0 and 1, continues child
    2 from its own last.pt, and ends as the run that was never killed."""
    overrides = ("search_space=nb201", *NAS_RL, "nas_rl.child_epochs=2", "data.num_train=128")
    run_search(*smoke(*overrides, name="full"))

    def die_in_the_third_child(self):
        if self.run_dir.name == "00002" and self.epoch == 1:
            raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(ChildLoop, "epoch_done", die_in_the_third_child)
        with pytest.raises(RuntimeError, match="killed"):
            run_search(*smoke(*overrides, name="killed"))
    assert len(_rows(tmp_path / "killed" / "children.jsonl")) == 2
    trained_epochs: list[str] = []
    train_epoch = ChildLoop.train_epoch

    def counted(self):
        trained_epochs.append(self.run_dir.name)
        return train_epoch(self)

    monkeypatch.setattr(ChildLoop, "train_epoch", counted)
    run_search(*smoke(*overrides, name="killed"))
    assert trained_epochs == ["00002", "00003", "00003"]
    full, resumed = (load_checkpoint(tmp_path / name / "last.pt") for name in ("full", "killed"))
    for key, value in full["sampler"]["controller"].items():
        assert torch.equal(value, resumed["sampler"]["controller"][key]), key
    assert torch.equal(full["sampler"]["reinforce"]["baseline"], resumed["sampler"]["reinforce"]["baseline"])
    assert _rows(tmp_path / "killed" / "children.jsonl") == _rows(tmp_path / "full" / "children.jsonl")
    assert metric_records(tmp_path / "killed") == metric_records(tmp_path / "full")
    assert (tmp_path / "killed" / "best_arch.json").read_text() == (tmp_path / "full" / "best_arch.json").read_text()


def test_a_torn_last_line_of_the_ledger_is_dropped(tmp_path):
    path = tmp_path / "children.jsonl"
    rows = [{"child": 0, "update": 1, "reward": 0.5}, {"child": 1, "update": 2, "reward": 0.7}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"child": 2, "upd')
    ledger = ChildLedger(path, resume=True, update_under_way=2)
    assert ledger.rows == rows and ledger.finished(2) == {1: rows[1]}
    assert path.read_text().endswith("}\n")  # rewritten whole: the next append starts a fresh line
    assert ChildLedger(path, resume=True, update_under_way=1).rows == rows[:1]  # a later update's child: redone


# --- every space --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space", ["micro", "macro", "nb201", "nasrl_conv"])
def test_smoke_nas_rl_run_leaves_every_artefact(space, smoke, tmp_path):
    result = run_search(*smoke(f"search_space={space}", *NAS_RL, "data.num_train=128"))
    run_dir = tmp_path / "run"
    for name in RUN_FILES:
        assert (run_dir / name).exists(), name
    children = _rows(run_dir / "children.jsonl", drop=())
    assert [c["child"] for c in children] == [0, 1, 2, 3] and [c["update"] for c in children] == [1, 1, 2, 2]
    assert all(0 <= c["valid_acc"] <= 1 and c["reward"] == c["valid_acc"] and c["train_time_s"] > 0 for c in children)
    best = max(children, key=lambda c: c["reward"])
    assert (result["best_arch"], result["best_valid_acc"], result["num_children"]) == (best["arch"],
                                                                                       best["valid_acc"], 4)
    assert json.loads((run_dir / "best_arch.json").read_text())["space"] == space
    assert len(metric_records(run_dir)) == 2 and any(k.startswith("drawing_") for k in result["artefacts"])


def test_zoph_reward_is_the_best_of_the_last_five_epochs_cubed():
    assert reward_of([0.1, 0.9, 0.5, 0.6, 0.7, 0.8, 0.4], "zoph") == pytest.approx(0.8 ** 3)
    assert reward_of([0.5, 0.4], "zoph") == pytest.approx(0.5 ** 3) and reward_of([0.5, 0.4], None) == 0.4


# --- a process pool -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_workers_give_the_rewards_of_one(smoke, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # 1 thread per worker, as this process (bitwise equal results)
    overrides = ("search_space=nasrl_conv", *NAS_RL, "data.num_train=128")
    run_search(*smoke(*overrides, name="one"))
    run_search(*smoke(*overrides, "nas_rl.workers=2", name="two"))
    one, two = (sorted(_rows(tmp_path / name / "children.jsonl"), key=lambda c: c["child"]) for name in ("one", "two"))
    assert one == two
    assert metric_records(tmp_path / "two") == metric_records(tmp_path / "one")


def test_nasrl_conv_composes_with_the_papers_controller_and_nas_rl(tmp_path):
    config, _ = compose_config(["search_space=nasrl_conv"], tmp_path)
    assert (config.search_space.num_layers, config.search_space.channels, config.trainer.strategy) == (6, 0, "nas_rl")
    assert (config.controller.lstm_size, config.controller.lr, config.controller.init_range) == (35, 0.0006, 0.08)
    assert config.retrain.num_layers is None  # the architecture's own depth


# --- bad config ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    (("search_space=nb201", *NAS_RL, "nas_rl.reward=benchmark"), "needs benchmark.path"),
    (("search_space=micro", *NAS_RL, "nas_rl.reward=benchmark"), "only search_space=nb201"),
    (("search_space=nasrl_conv", "trainer.strategy=enas"), "search_space=nasrl_conv has none"),
    (("search_space=nasrl_conv", "trainer.strategy=random"), "needs a supernet"),
    ((*NAS_RL, "nas_rl.reward=table"), "nas_rl.reward='table'"),
    ((*NAS_RL, "nas_rl.reward_shaping=square"), "nas_rl.reward_shaping='square'"),
    ((*NAS_RL, "nas_rl.workers=0"), "workers=0"),
    (("search_space=nasrl_conv", *NAS_RL, "nas_rl.child_layers=4"), "nas_rl.child_layers=4"),
])
def test_bad_nas_rl_config_names_the_value_and_what_is_allowed(overrides, message, smoke):
    with pytest.raises(ValueError, match=message):
        smoke(*overrides)
