"""Every search space through the same harness: ENAS and random search end to end, derive from a saved macro
run, the uniform sampler's frequencies, and retraining what a search found (mode=train) in each space."""
from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from enas.networks import load_arch, space_of
from enas.build import build_sampler
from enas.pipeline import run_derive, run_search, run_train
from enas.samplers import UniformSampler
from enas.spaces.macro import MacroSpace
from enas.spaces.nb201_arch import Nb201Arch

SPACES = ("micro", "macro", "nb201")


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("strategy", ("enas", "random"))
def test_both_strategies_search_every_space_end_to_end(smoke, tmp_path, space, strategy):
    cfg, resolved = smoke(f"search_space={space}", f"trainer.strategy={strategy}")
    result = run_search(cfg, resolved)
    run_dir = tmp_path / "run"
    assert result["space"] == space and result["strategy"] == strategy and 0 <= result["best_valid_acc"] <= 1
    best = load_arch(str(run_dir / "best_arch.json"))
    assert space_of(best) == space and best.to_enas_string() == result["best_arch"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(0 <= r["valid/acc"] <= 1 for r in records)
    learned = any(k.startswith("controller/") for k in records[0])
    assert learned == (strategy == "enas")
    if space == "macro" and strategy == "enas":
        assert 0 <= records[0]["controller/skip_rate"] <= 1
    if space == "nb201":  # the benchmark's own string, ready for a lookup
        saved = json.loads((run_dir / "best_arch.json").read_text())
        assert Nb201Arch.from_bench_string(saved["bench_string"]) == best


def test_derive_mode_works_for_macro(smoke, tmp_path):
    run_search(*smoke("search_space=macro", "trainer.epochs=1", name="search"))
    cfg, resolved = smoke("search_space=macro", "mode=derive", f"load_from={tmp_path / 'search'}",
                          "derive.num_samples=3", name="derive")
    result = run_derive(cfg, resolved)
    derived = json.loads((tmp_path / "derive" / "derived.json").read_text())
    assert 1 <= derived["num_scored"] <= 4 and derived["top"][0]["enas_string"] == result["best_arch"]


@pytest.mark.parametrize("space", SPACES)
def test_random_strategy_samples_uniformly_and_has_no_controller(smoke, space):
    cfg, _ = smoke(f"search_space={space}", "trainer.strategy=random")
    from enas.data import make_synthetic  # noqa: PLC0415
    from enas.build import build_space  # noqa: PLC0415 (the data only sizes the space here)
    space_obj = build_space(cfg, make_synthetic(8, 8, image_size=16))
    sampler = build_sampler(cfg, space_obj, torch.device("cpu"))
    assert isinstance(sampler, UniformSampler) and not hasattr(sampler, "controller")
    archs, rollout = sampler.sample(3000)
    assert rollout is None
    steps = [s for s in space_obj.steps() if s.is_choice]
    first = steps[0]  # the first decision of every space is an op choice: each op near 1/num_choices
    counts = Counter(space_obj.to_choices(a)[0] for a in archs)
    assert set(counts) == set(range(first.num_choices))
    for c in counts.values():
        assert abs(c / len(archs) - 1 / first.num_choices) < 0.03


def test_macro_skips_of_uniform_samples_are_fair_coins():
    space = MacroSpace(num_layers=6)
    g = torch.Generator().manual_seed(0)
    skips = [s for _ in range(2000) for layer in space.sample_uniform(g).layers for s in layer.skips]
    assert abs(sum(skips) / len(skips) - 0.5) < 0.02


def test_train_mode_retrains_the_published_macro_network(smoke, tmp_path):
    cfg, resolved = smoke("search_space=macro", "mode=train", "arch=enas_macro_paper", "retrain.epochs=1",
                          "retrain.num_layers=null",  # the smoke preset sets 3; null takes the arch depth (24)
                          name="macro")
    result = run_train(cfg, resolved)
    assert result["space"] == "macro" and result["epochs"] == 1 and 0 <= result["test_acc"] <= 1
    assert (tmp_path / "macro" / "final.pt").exists()


def test_train_mode_retrains_a_found_nb201_cell_and_rejects_a_space_mismatch(smoke, tmp_path):
    run_search(*smoke("search_space=nb201", "trainer.epochs=1", name="search"))
    arch_file = tmp_path / "search" / "best_arch.json"
    result = run_train(*smoke("search_space=nb201", "mode=train", f"arch={arch_file}", "retrain.epochs=1",
                              name="train"))
    assert result["space"] == "nb201" and result["arch"] == load_arch(str(arch_file)).to_enas_string()
    with pytest.raises(ValueError, match="search_space=nb201"):
        run_train(*smoke("mode=train", f"arch={arch_file}", name="mismatch"))
