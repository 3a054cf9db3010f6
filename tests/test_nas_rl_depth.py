"""nas_rl.depth_start: Zoph & Le's growing depth for nasrl_conv children (ICLR 2017, §4.1: "we increase the depth by
2 for the child models every 1,600 samples, starting at 6 layers"): the schedule, prefix sampling from one controller
built for the maximum depth, children of the scheduled depth, a resumed run that keeps the schedule, bad values."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_config, metric_records

from enas.build import build_sampler, build_space
from enas.checkpoint import load_checkpoint
from enas.data import make_synthetic
from enas.nas_rl import scheduled_depth
from enas.nas_rl_children import ChildLoop
from enas.networks import build_network
from enas.pipeline import run_search
from enas.spaces.nasrl_conv_arch import NasrlConvArch

pytestmark = pytest.mark.usefixtures("one_cpu_thread")
# 4 updates x 2 children, depth 2 + 1 every 2 children, at most 4: updates at depths 2, 3, 4, 4
GROWING = ("search_space=nasrl_conv", "search_space.num_layers=4", "data.num_train=128", "nas_rl.num_updates=4",
           "nas_rl.depth_start=2", "nas_rl.depth_step=1", "nas_rl.depth_every_children=2")
DEPTHS = [2, 3, 4, 4]


def test_the_papers_schedule_adds_two_layers_every_1600_children_up_to_the_maximum():
    def paper(done: int) -> int:
        return scheduled_depth(done, start=6, step=2, every_children=1600, max_depth=12)

    assert [paper(d) for d in (0, 1599, 1600, 3199, 3200, 4800, 6400, 12800)] == [6, 6, 8, 8, 10, 12, 12, 12]
    assert scheduled_depth(5000, None, 2, 1600, max_depth=6) == 6  # no schedule: always the maximum


def _sampler(tmp_path, num_layers: int = 6):
    cfg, _ = compose_config(["experiment=smoke", "search_space=nasrl_conv", f"search_space.num_layers={num_layers}"],
                            tmp_path)
    data = make_synthetic(num_train=4, num_valid=4, num_classes=10, image_size=16)
    torch.manual_seed(cfg.seed)
    space = build_space(cfg, data)
    return space, build_sampler(cfg, space, torch.device("cpu"))


def test_a_shallower_space_samples_the_first_decisions_of_the_deepest_controller(tmp_path):
    space, sampler = _sampler(tmp_path)
    state = sampler.state_dict()
    shallow = space.at_depth(2)
    archs, rollout = sampler.sample(5, space=shallow)
    sampler.load_state_dict(state)  # the same generator state: the full rollout's first columns are the same draws
    _, full = sampler.sample(5)
    assert [a.num_layers for a in archs] == [2] * 5 and rollout.choices.shape == (5, shallow.num_choices)
    assert torch.equal(rollout.choices, full.choices[:, :shallow.num_choices])
    # its log-probabilities are the teacher-forced ones of those choices over the first steps
    forced = sampler.controller(choices=rollout.choices, num_steps=len(shallow.steps()))
    assert torch.allclose(forced.log_prob, rollout.log_prob)
    for arch in archs:  # each builds and runs at its own depth
        logits, _ = build_network(arch, num_layers=None, num_classes=10, in_channels=3, stem_channels=8)(
            torch.randn(2, 3, 16, 16))
        assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert sampler.most_likely(shallow).num_layers == 2
    with pytest.raises(ValueError, match="are not the first of the controller's"):
        sampler.sample(1, space=space.at_depth(7))  # deeper than the controller: not its prefix


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    root = tmp_path_factory.mktemp("grown")
    result = run_search(*compose_config(["experiment=smoke", *GROWING], root / "full"))
    return root, result


def _children(run_dir) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "train_time_s"}
            for line in (run_dir / "children.jsonl").read_text().splitlines()]


def test_children_have_the_scheduled_depth_and_it_is_logged(grown):
    root, result = grown
    children = _children(root / "full")
    assert [c["depth"] for c in children] == [d for d in DEPTHS for _ in range(2)]
    assert all(NasrlConvArch.from_enas_string(c["arch"]).num_layers == c["depth"] for c in children)
    assert all((root / "full" / "children" / f"{c['child']:05d}" / "metrics.jsonl").exists() for c in children)
    assert [r["nas_rl/depth"] for r in metric_records(root / "full")] == DEPTHS
    best = max(children, key=lambda c: c["reward"])
    assert json.loads((root / "full" / "best_arch.json").read_text())["num_layers"] == best["depth"]
    assert result["best_params"] == best["params"] and result["child_network"]["num_layers"] is None


def test_a_resumed_run_continues_the_depth_schedule(grown, tmp_path, monkeypatch):
    """Killed in the first child of update 3 (depth 4): the resumed run samples it at depth 4 again and ends as the
    run that was never killed."""
    root, _ = grown

    def die_in_update_3(self):
        if self.run_dir.name == "00004":
            raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(ChildLoop, "epoch_done", die_in_update_3)
        with pytest.raises(RuntimeError, match="killed"):
            run_search(*compose_config(["experiment=smoke", *GROWING], tmp_path / "killed"))
    assert [c["depth"] for c in _children(tmp_path / "killed")] == [2, 2, 3, 3]
    run_search(*compose_config(["experiment=smoke", *GROWING], tmp_path / "killed"))
    assert _children(tmp_path / "killed") == _children(root / "full")
    assert metric_records(tmp_path / "killed") == metric_records(root / "full")
    full, resumed = (load_checkpoint(d / "last.pt") for d in (root / "full", tmp_path / "killed"))
    for key, value in full["sampler"]["controller"].items():
        assert torch.equal(value, resumed["sampler"]["controller"][key]), key


@pytest.mark.parametrize("overrides, message", [
    (("nas_rl.depth_start=0",), r"depth_start=0; allowed null \(no schedule\) or 1 .. search_space.num_layers=6"),
    (("nas_rl.depth_start=8",), "nas_rl.depth_start=8; allowed null"),
    (("nas_rl.depth_start=2", "nas_rl.depth_step=0"), "nas_rl.depth_step=0; must be >= 1"),
    (("nas_rl.depth_start=2", "nas_rl.depth_every_children=0"), "nas_rl.depth_every_children=0; must be >= 1"),
    (("nas_rl.depth_start=2", "nas_rl.child_layers=6"), "nas_rl.child_layers=6 with nas_rl.depth_start=2"),
    (("search_space=nb201", "trainer.strategy=nas_rl", "nas_rl.depth_start=3"),
     "grows the depth of nasrl_conv children only, not of search_space=nb201"),
])
def test_bad_depth_schedule_names_the_value_and_what_is_allowed(overrides, message, tmp_path):
    space = () if any(o.startswith("search_space=") for o in overrides) else ("search_space=nasrl_conv",)
    with pytest.raises(ValueError, match=message):
        compose_config([*space, *overrides], tmp_path)
