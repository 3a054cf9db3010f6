"""Search quality you can see: benchmark accuracies on everything a nb201 run reports, the no-training baselines,
collapse diagnostics, the rank check, the report over a real (tiny) sweep, and the uniform warm-up."""
from __future__ import annotations

import json
import logging
import signal

import pytest
import torch
from conftest import assert_same_run, compose_config, signal_at

from enas.build import build_components, build_dataset, skeleton_kwargs
from enas.checkpoint import load_checkpoint
from enas.config import ControllerConfig
from enas.controller import Controller
from enas.diagnostics import collapse_warning, policy_diagnostics, sample_diagnostics
from enas.interrupt import RunInterrupted
from enas.judges import shared_weight_rewards
from enas.networks import build_network
from enas.pipeline import run_report, run_search, run_train
from enas.rank_check import run_rank_check
from enas.reinforce import Reinforce
from enas.samplers import ControllerSampler, UniformSampler
from enas.search import SearchLoop
from enas.spaces.nb201 import Nb201Space
from enas.spaces.nb201_arch import Nb201Arch, all_archs

NB201 = ("search_space=nb201",)


def _accuracies(arch: Nb201Arch) -> dict[str, float]:
    """Made-up benchmark numbers that tell architectures apart: more 3x3 convs, higher accuracy."""
    convs = arch.ops.count("nor_conv_3x3") + 0.5 * arch.ops.count("nor_conv_1x1")
    return {"cifar10_valid": 50 + 6 * convs, "cifar10_test": 52 + 6 * convs, "cifar100_test": 20 + 5 * convs,
            "imagenet16_test": 10 + 4 * convs}


@pytest.fixture(scope="module")
def benchmark_csv(tmp_path_factory):
    """A table of all 15,625 nb201 cells in the README's CSV format."""
    path = tmp_path_factory.mktemp("bench") / "nb201.csv"
    keys = ("cifar10_valid", "cifar10_test", "cifar100_test", "imagenet16_test")
    lines = [",".join(("arch", *keys))]
    lines += [",".join((a.to_bench_string(), *(f"{_accuracies(a)[k]:.2f}" for k in keys))) for a in all_archs()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _json(path):
    return json.loads(path.read_text())


# --- benchmark accuracies everywhere ---------------------------------------------------------------------------
def test_an_nb201_search_reports_benchmark_accuracies_everywhere(smoke, tmp_path, benchmark_csv):
    result = run_search(*smoke(*NB201, f"benchmark.path={benchmark_csv}", "derive.rank_check_k=3"))
    run_dir = tmp_path / "run"
    best = Nb201Arch.from_enas_string(result["best_arch"])
    expected = pytest.approx(_accuracies(best), abs=0.006)
    assert result["benchmark"] == expected and _json(run_dir / "best_arch.json")["benchmark"] == expected
    derived = _json(run_dir / "derived.json")
    for candidate in derived["top"]:
        assert candidate["benchmark"] == pytest.approx(
            _accuracies(Nb201Arch.from_enas_string(candidate["enas_string"])), abs=0.006)
    rows = [json.loads(line) for line in (run_dir / "sampled_archs.jsonl").read_text().splitlines()]
    assert rows and all(r["benchmark/cifar10_test"] == pytest.approx(
        _accuracies(Nb201Arch.from_enas_string(r["arch"]))["cifar10_test"], abs=0.006) for r in rows)
    check = derived["rank_check"]  # tau against the benchmark's cifar10_valid: no retraining needed
    assert check["reference"] == "benchmark cifar10_valid" and check["num_candidates"] == 3
    assert check["kendall_tau"] is None or -1 <= check["kendall_tau"] <= 1
    assert result["rank_check"]["kendall_tau"] == check["kendall_tau"]


def test_a_trained_nb201_cell_reports_its_benchmark_accuracies(smoke, tmp_path, benchmark_csv):
    cell = Nb201Arch(("nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "none", "nor_conv_3x3"))
    cell.save(tmp_path / "cell.json")
    result = run_train(*smoke(*NB201, "mode=train", f"arch={tmp_path / 'cell.json'}", "retrain.epochs=1",
                              f"benchmark.path={benchmark_csv}"))
    assert result["benchmark"] == pytest.approx(_accuracies(cell), abs=0.006)


def test_a_bad_benchmark_path_fails_before_training(smoke, tmp_path):
    with pytest.raises(ValueError, match="nowhere.csv"):
        run_search(*smoke(*NB201, f"benchmark.path={tmp_path / 'nowhere.csv'}"))
    assert not (tmp_path / "run" / "last.pt").exists()
    with pytest.raises(ValueError, match="only for search_space=nb201"):
        smoke(f"benchmark.path={tmp_path / 'nowhere.csv'}")  # micro


# --- baselines ---------------------------------------------------------------------------------------------------
def test_params_baseline_keeps_the_largest_sampled_architecture(smoke, tmp_path, benchmark_csv):
    result = run_search(*smoke(*NB201, "trainer.strategy=params", f"benchmark.path={benchmark_csv}"))
    scores = [json.loads(line) for line in (tmp_path / "run" / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == result["num_scored"] == 8  # naswot.num_samples of the smoke preset
    largest = max(scores, key=lambda s: s["params"])
    assert result["best_params"] == largest["params"] and result["best_arch"] == largest["enas_string"]
    assert all("benchmark" in s for s in scores)
    assert result["benchmark"] == pytest.approx(_accuracies(Nb201Arch.from_enas_string(result["best_arch"])),
                                                abs=0.006)
    # the count is the fixed network's at the search skeleton
    cfg, _ = smoke(*NB201, name="probe")
    net = build_network(Nb201Arch.from_enas_string(result["best_arch"]),
                        **skeleton_kwargs(cfg, build_dataset(cfg.data, torch.device("cpu"))))
    assert sum(p.numel() for p in net.parameters()) == result["best_params"]


def test_random_pick_takes_one_uniform_architecture_without_training(smoke, tmp_path):
    result = run_search(*smoke(*NB201, "trainer.strategy=random_pick", "derive.proxy_epochs=1"))
    assert result["strategy"] == "random_pick" and result["num_scored"] == 1
    assert not (tmp_path / "run" / "last.pt").exists()  # nothing was searched
    assert 0 <= result["proxy_acc"] <= 1 and result["proxy_epochs"] == 1  # the winner's standalone proxy
    assert (tmp_path / "run" / "proxy" / "metrics.jsonl").exists()


def test_proxy_seeds_retrain_the_winner_once_per_seed_and_average(smoke, tmp_path):
    one = run_search(*smoke(*NB201, "trainer.strategy=random_pick", "derive.proxy_epochs=1", name="one"))
    three = run_search(*smoke(*NB201, "trainer.strategy=random_pick", "derive.proxy_epochs=1", "derive.proxy_seeds=3",
                              name="three"))
    assert three["best_arch"] == one["best_arch"] and "proxy_accs" not in one
    assert three["proxy_accs"][0] == one["proxy_acc"]  # the run's own seed first, in run/proxy as before
    assert three["proxy_acc"] == pytest.approx(sum(three["proxy_accs"]) / 3)
    assert three["proxy_acc_std"] >= 0
    trained = [load_checkpoint(tmp_path / "three" / d / "last.pt", torch.device("cpu"))["net"]
               for d in ("proxy", "proxy_seed1", "proxy_seed2")]
    for other in trained[1:]:  # each retrain starts from its own seed's weights
        assert any(not torch.equal(trained[0][k], other[k]) for k in trained[0] if trained[0][k].is_floating_point())


# --- collapse diagnostics ----------------------------------------------------------------------------------------
def _nb201_controller_sampler(seed: int = 0, tanh_op: float = 2.5) -> ControllerSampler:
    space, c = Nb201Space(channels=8, cells_per_stage=1), ControllerConfig()
    torch.manual_seed(seed)
    controller = Controller(space.steps(), lstm_size=32, tanh_input=c.tanh_input, tanh_op=tanh_op, temperature=None)
    return ControllerSampler(space, controller, Reinforce(controller, lr=0.05, entropy_weight=0.0),
                             torch.Generator().manual_seed(seed))


def _skip_reward(archs) -> torch.Tensor:
    """Pays only for skip connections: drives the controller into the collapse weight sharing is known for."""
    return torch.tensor([a.ops.count("skip_connect") / len(a.ops) for a in archs])


def _epoch_diagnostics(sampler) -> dict:
    archs, rollout = sampler.sample(50)
    return {"controller/entropy_op": rollout.entropy_by_kind["op"].mean().item(),
            **sample_diagnostics(sampler.space, archs), **policy_diagnostics(sampler.space, sampler.most_likely())}


def _train_on_skip_rewards(sampler, epochs: int = 4) -> list[dict]:
    diagnostics = [_epoch_diagnostics(sampler)]
    for _ in range(epochs):
        for _ in range(10):
            archs, rollout = sampler.sample(10, with_grad=True)
            sampler.update(rollout, _skip_reward(archs))
        diagnostics.append(_epoch_diagnostics(sampler))
    return diagnostics


def test_diagnostics_see_a_controller_collapse_onto_skips():
    epochs = _train_on_skip_rewards(_nb201_controller_sampler())  # the benchmark's 2.5 logit bound
    first, last = epochs[0], epochs[-1]
    assert first["controller/entropy_op"] > 0.9 and last["controller/entropy_op"] < 0.3  # falls
    assert last["diag/param_free_share"] > first["diag/param_free_share"] + 0.2  # rises
    assert last["most_likely/ops/skip_connect"] == 1.0 and last["diag/most_likely_param_free_share"] == 1.0
    assert last["diag/distinct_archs"] < first["diag/distinct_archs"]
    assert collapse_warning(first, 0.3) is None
    assert "collapsed" in collapse_warning(last, 0.3)
    # the advice never names the setting the run already uses
    assert "trainer.shared_sampling=uniform" in collapse_warning(last, 0.3)
    already_uniform = collapse_warning(last, 0.3, uniform_shared_pass=True)
    assert "trainer.shared_sampling=uniform" not in already_uniform and "controller.lr" in already_uniform
    assert all("controller.tanh_op" in advice for advice in (collapse_warning(last, 0.3), already_uniform))


def test_the_nb201_default_logit_bound_keeps_a_skip_seeking_policy_from_collapsing(tmp_path):
    """nb201's default tanh_op = 1.1 (ENAS's constant): the same rewards still make the all-skip cell the most likely
    one, but every edge keeps its other ops (the likeliest at most e^1.1 / (e^1.1 + 4 e^-1.1) = 69%), so the op
    entropy stays above 64% of its maximum and the collapse warning stays quiet."""
    assert compose_config(["search_space=nb201"], tmp_path)[0].controller.tanh_op == 1.1
    first, last = _train_on_skip_rewards(_nb201_controller_sampler(tanh_op=1.1), epochs=8)[::8]
    assert last["most_likely/ops/skip_connect"] == 1.0  # the preference is learned ...
    assert last["diag/param_free_share"] > first["diag/param_free_share"] + 0.1
    assert 0.64 < last["controller/entropy_op"] < first["controller/entropy_op"] - 0.1  # ... the collapse is not
    assert collapse_warning(last, 0.3) is None
    assert last["diag/distinct_archs"] > 30  # of 50 samples: derive still has cells to choose from


def test_diagnostics_stay_flat_for_the_uniform_sampler():
    space = Nb201Space(channels=8, cells_per_stage=1)
    sampler = UniformSampler(space, torch.Generator().manual_seed(0))
    shares = [sample_diagnostics(space, sampler.sample(2000)[0])["diag/param_free_share"] for _ in range(3)]
    assert all(abs(s - 3 / 5) < 0.03 for s in shares)  # none, skip and pool of the five ops
    assert collapse_warning({"diag/param_free_share": shares[-1]}, 0.3) is None  # no entropy: no verdict


def test_every_search_epoch_logs_the_diagnostics(smoke, tmp_path):
    run_search(*smoke(*NB201))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        assert 0 <= r["controller/entropy_op"] <= 1 and 0 <= r["diag/param_free_share"] <= 1
        assert 1 <= r["diag/distinct_archs"] <= r["diag/num_sampled"]
        assert sum(v for k, v in r.items() if k.startswith("most_likely/ops/")) == pytest.approx(1)


def test_the_search_loop_warns_when_the_controller_has_collapsed(smoke, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="enas.search"):  # threshold 1: any policy counts as certain enough
        run_search(*smoke(*NB201, "trainer.collapse_entropy=1.0", "trainer.epochs=1"))
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert max(record["diag/param_free_share"], record["diag/most_likely_param_free_share"]) > 0.5  # 3 of 5 ops
    assert any("epoch 1: the controller has collapsed" in m for m in caplog.messages)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="enas.search"):  # the default threshold: a fresh policy is fine
        run_search(*smoke(*NB201, "trainer.epochs=1", name="default"))
    assert not any("collapsed" in m for m in caplog.messages)


# --- rank check without a benchmark, and the report over a real sweep -----------------------------------------
@pytest.mark.slow
def test_rank_check_retrains_the_top_candidates_when_no_benchmark_is_set(smoke, tmp_path):
    result = run_search(*smoke("trainer.epochs=1", "derive.rank_check_k=3", "derive.rank_check_epochs=1"))
    check = _json(tmp_path / "run" / "derived.json")["rank_check"]
    assert check["reference"].startswith("proxy retrain (1 epochs") and check["num_candidates"] == 3
    assert all(0 <= c["reference"] <= 1 for c in check["candidates"])
    assert [(tmp_path / "run" / "rank_check" / f"{i:03d}" / "last.pt").exists() for i in range(3)] == [True] * 3
    assert result["rank_check"]["num_candidates"] == 3


@pytest.mark.slow
def test_report_over_a_sweep_of_every_strategy(smoke, tmp_path, benchmark_csv):
    sweep = tmp_path / "sweep"
    strategies = ("enas", "random", "naswot", "params", "random_pick")
    for job, strategy in enumerate(strategies):
        run_search(*smoke(*NB201, f"trainer.strategy={strategy}", "trainer.epochs=1",
                          f"benchmark.path={benchmark_csv}", name=f"sweep/{job}"))
    result = run_report(*smoke("mode=report", f"load_from={sweep}", name="report"))
    report = _json(sweep / "report.json")
    assert [r["strategy"] for r in report["rows"]] == sorted(strategies)
    assert report["metric"]["key"] == "benchmark/cifar10_test" and result["ranking"] == report["ranking"]
    assert set(report["beats_baseline"]) == {"params", "random_pick"}  # baseline -> {search strategy: beat it?}
    assert set(report["beats_baseline"]["params"]) == {"enas", "random", "naswot"}
    assert "report_accuracy.png" in report["plots"] and (sweep / "report.md").exists()
    table = [json.loads(line) for line in (tmp_path / "report" / "report.jsonl").read_text().splitlines()]
    assert len(table) == 5 and all("benchmark/cifar10_test" in row for row in table)


@pytest.mark.slow
def test_rank_check_mode_trains_a_reference_set_once_and_scores_a_supernet_against_it(smoke, tmp_path):
    run_search(*smoke(*NB201, "trainer.epochs=1", name="search"))
    check = ("mode=rank_check", "rank_check.num_archs=4", "rank_check.epochs=1", f"load_from={tmp_path / 'search'}")
    reference = tmp_path / "reference.json"
    first = run_rank_check(*smoke(*NB201, *check, f"rank_check.reference={reference}", name="first"))
    saved = _json(reference)
    assert len(saved["archs"]) == 4 and saved["recipe"]["epochs"] == 1 and saved["recipe"]["space"] == "nb201"
    assert all(0 <= a["valid_acc"] <= 1 for a in saved["archs"])
    scored = _json(tmp_path / "first" / "rank_check.json")
    assert [a["standalone_valid_acc"] for a in scored["archs"]] == [a["valid_acc"] for a in saved["archs"]]
    assert first["kendall_tau"] == scored["kendall_tau"] and first["num_archs"] == 4
    # the second check reuses the reference: nothing is trained again, the same tau comes out
    second = run_rank_check(*smoke(*NB201, *check, f"rank_check.reference={reference}", name="second"))
    assert not (tmp_path / "second" / "standalone").exists() and second["kendall_tau"] == first["kendall_tau"]
    with pytest.raises(ValueError, match="holds nb201 architectures but search_space=micro"):
        run_rank_check(*smoke("mode=rank_check", f"rank_check.reference={reference}", name="third"))


# --- uniform warm-up of the shared weights ---------------------------------------------------------------------
def test_warmup_epochs_train_the_shared_weights_on_uniform_archs_before_the_controller_learns(smoke, tmp_path):

    cfg, resolved = smoke(*NB201, "trainer.warmup_epochs=1", "trainer.epochs=2")
    initial = {k: v.clone() for k, v in build_components(cfg)[3].controller.state_dict().items()}
    part_cfg, part_resolved = smoke(*NB201, "trainer.warmup_epochs=1", "trainer.epochs=1", name="part")
    run_search(part_cfg, part_resolved)
    after_warmup = load_checkpoint(tmp_path / "part" / "last.pt")
    assert all(torch.equal(initial[k], v) for k, v in after_warmup["sampler"]["controller"].items())
    assert "warmup_sampler" in after_warmup
    run_search(cfg, resolved)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "controller/reward" not in records[0] and "controller/reward" in records[1]
    trained = load_checkpoint(tmp_path / "run" / "last.pt")["sampler"]["controller"]
    assert not all(torch.equal(initial[k], v) for k, v in trained.items())  # it learned after the warm-up


def test_a_run_stopped_during_warmup_resumes_exactly(smoke, tmp_path, monkeypatch):
    warm = (*NB201, "trainer.warmup_epochs=1", "deterministic=true")
    run_search(*smoke(*warm, name="full"))
    signal_at(monkeypatch, SearchLoop, "shared_step", signal.SIGTERM, 2)  # step 2 of the warm-up epoch
    with pytest.raises(RunInterrupted, match="in epoch 1 after step 2"):
        run_search(*smoke(*warm, name="part"))
    monkeypatch.undo()
    run_search(*smoke(*warm, name="part"))
    assert_same_run(tmp_path / "full", tmp_path / "part")


# --- shared weights trained on uniform architectures throughout; the loss as the reward ------------------------
def _trained_weights(run_dir) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run_dir / "last.pt")
    return {k: v for k, v in state["net"].items() if "running_" not in k and "num_batches" not in k}


@pytest.mark.parametrize("sampling, controller_decides", [("uniform", False), ("policy", True)])
def test_uniform_shared_sampling_keeps_the_controller_out_of_the_shared_weights(smoke, tmp_path, sampling,
                                                                                 controller_decides):
    """With shared_sampling=uniform two runs whose controllers differ (sharp and fast vs flat and slow) train the
    same shared weights; with the ENAS default (policy) the controller's picks decide which weights train."""
    controllers = {"flat": ("controller.temperature=5",), "sharp": ("controller.temperature=1", "controller.lr=0.5")}
    for name, overrides in controllers.items():
        cfg, resolved = smoke(*NB201, f"trainer.shared_sampling={sampling}", *overrides, "controller.num_updates=3",
                              "derive.prefilter=null", "derive.num_samples=2", "deterministic=true", name=name)
        run_search(cfg, resolved)
    flat, sharp = _trained_weights(tmp_path / "flat"), _trained_weights(tmp_path / "sharp")
    assert all(torch.equal(flat[k], sharp[k]) for k in flat) != controller_decides
    records = [json.loads(line) for line in (tmp_path / "sharp" / "metrics.jsonl").read_text().splitlines()]
    # with uniform shared passes the diagnostics describe the controller's picks (its 3 x 4 rewarded
    # architectures), not the uniform ones; with policy passes, the shared pass's own architectures
    rewarded, steps = 3 * cfg.controller.num_aggregate, cfg.data.num_train // cfg.trainer.batch_size
    assert rewarded != steps
    assert records[-1]["diag/num_sampled"] == (rewarded if sampling == "uniform" else steps)


def test_loss_reward_is_the_geometric_mean_probability_of_the_right_class(smoke, tmp_path):
    cfg, _ = smoke(*NB201)
    data, space, net, _ = build_components(cfg)
    archs = [space.sample_uniform(torch.Generator().manual_seed(s)) for s in range(3)]
    x, y = data.valid.x[:16].float() / 255, data.valid.y[:16]
    rewards = shared_weight_rewards(net, archs, lambda: (x, y), score="loss")
    with torch.no_grad():
        expected = [torch.exp(-torch.nn.functional.cross_entropy(net(x, a)[0], y)) for a in archs]
    assert torch.allclose(rewards, torch.stack(expected), atol=1e-6)
    assert ((0 < rewards) & (rewards <= 1)).all()  # an accuracy-like scale for the EMA baseline
    accuracy = shared_weight_rewards(net, archs, lambda: (x, y), score="acc")
    assert torch.allclose(accuracy * 16, (accuracy * 16).round())  # the default stays the accuracy


def test_a_search_with_the_loss_reward_feeds_the_controller_likelihoods(smoke, tmp_path):
    cfg, resolved = smoke(*NB201, "trainer.reward=loss", "trainer.epochs=1", "derive.prefilter=null",
                          "derive.num_samples=2")
    run_search(cfg, resolved)
    rows = [json.loads(line) for line in (tmp_path / "run" / "sampled_archs.jsonl").read_text().splitlines()]
    rewards = torch.tensor([row["reward"] for row in rows])
    assert len(rewards) == cfg.controller.num_updates * cfg.controller.num_aggregate
    assert ((0 < rewards) & (rewards < 1)).all()
    per_image = rewards * cfg.trainer.batch_size  # an accuracy on one minibatch would be a whole number of images
    assert not torch.allclose(per_image, per_image.round(), atol=1e-3)
