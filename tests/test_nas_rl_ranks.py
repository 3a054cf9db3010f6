"""trainer.strategy=nas_rl over two gloo ranks (enas.nas_rl_ranks): each rank trains its share of every update's
children, both ranks make the same controller update, the run equals the single-process run with the same seed, and
a run stopped by a signal on one rank resumes without training its finished children again.

Workers start through enas.launch.launch (torch's elastic launcher) with an entry point defined here, so that each
rank can record what it trained; one launch runs both scenarios in one process group (~6 s to start on 2 cores)."""
from __future__ import annotations

import functools
import json
import shutil
import signal

import pytest
import torch
from conftest import compose_config, metric_records, signal_at

import enas.nas_rl
from enas.checkpoint import load_checkpoint
from enas.distributed import process_group
from enas.interrupt import RunInterrupted
from enas.launch import check_supported, launch
from enas.nas_rl_children import ChildLoop
from enas.pipeline import run_search

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_cpu_thread")]
# 2 updates x 3 children (rank 0 trains 2 of each update's 3, rank 1 one), 4 steps each; the depth grows 2 -> 3
OVERRIDES = ("search_space=nasrl_conv", "trainer.strategy=nas_rl", "data.num_train=128", "deterministic=true",
             "nas_rl.children_per_update=3", "nas_rl.depth_start=2", "nas_rl.depth_step=1",
             "nas_rl.depth_every_children=3")
STOP_RANK1_AT_STEP = 4 + 2  # rank 1's 6th child step: step 2 of child 4, its child of update 2


def _compose(run_dir, ranks: int = 2):
    dist = ("dist=ddp", f"dist.nproc_per_node={ranks}") if ranks > 1 else ()
    return compose_config(["experiment=smoke", *dist, *OVERRIDES], run_dir)


class _Spy:
    """What one rank did in one run directory: the children it trained per session, the sampler it built, and
    whether rank 0's controller weights changed its own after an update (they must not: the same update)."""

    def __init__(self):
        self.sessions: list[list[str]] = []
        self.sampler, self.changed_by_rank0 = None, False

    def install(self, patch) -> None:
        self.sessions.append([])
        train_epoch, build_sampler, agree = ChildLoop.train_epoch, enas.nas_rl.build_sampler, \
            enas.nas_rl.agree_on_controller

        def counted(loop):
            self.sessions[-1].append(loop.run_dir.name)
            return train_epoch(loop)

        def kept(*args):
            self.sampler = build_sampler(*args)
            return self.sampler

        def compared(sampler, world):
            own = {k: v.clone() for k, v in sampler.controller.state_dict().items()}
            agree(sampler, world)
            self.changed_by_rank0 |= any(not torch.equal(v, own[k]) for k, v in sampler.controller.state_dict().items())

        patch.setattr(ChildLoop, "train_epoch", counted)
        patch.setattr(enas.nas_rl, "build_sampler", kept)
        patch.setattr(enas.nas_rl, "agree_on_controller", compared)

    def save(self, run_dir, rank: int) -> None:
        (run_dir / f"rank{rank}.json").write_text(json.dumps({"sessions": self.sessions,
                                                              "changed_by_rank0": self.changed_by_rank0}))
        torch.save(self.sampler.controller.state_dict(), run_dir / f"rank{rank}.pt")


def _two_runs(root, cfg, resolved, log_files) -> dict:
    """Worker entry: "full" uninterrupted; "part" stopped by SIGTERM to rank 1 in update 2, then resumed."""
    with process_group("cpu", None, "ddp") as world:
        for name, stop_at in (("full", None), ("part", STOP_RANK1_AT_STEP)):
            run_cfg, run_resolved = _compose(root / name)
            spy = _Spy()
            with pytest.MonkeyPatch.context() as patch:
                spy.install(patch)
                if stop_at and world.rank == 1:
                    signal_at(patch, ChildLoop, "train_step", signal.SIGTERM, stop_at)
                try:
                    run_search(run_cfg, run_resolved, world=world)
                except RunInterrupted:
                    if world.is_main:
                        shutil.copy(root / name / "children.jsonl", root / name / "interrupted.jsonl")
            if stop_at:
                with pytest.MonkeyPatch.context() as patch:
                    spy.install(patch)
                    run_search(run_cfg, run_resolved, world=world)
            spy.save(root / name, world.rank)
    return {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("nas_rl_ranks")
    entry = functools.update_wrapper(functools.partial(_two_runs, root), _two_runs)
    launch(*_compose(root / "full"), entrypoint=entry)
    run_search(*_compose(root / "single", ranks=1))
    return root


def _children(run_dir, drop=("train_time_s", "rank")) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "children.jsonl").read_text().splitlines()]
    return sorted(({k: v for k, v in r.items() if k not in drop} for r in rows), key=lambda r: r["child"])


def _spy(run_dir, rank: int) -> dict:
    return json.loads((run_dir / f"rank{rank}.json").read_text())


def test_each_rank_trains_its_share_of_every_update(runs):
    full = runs / "full"
    assert _spy(full, 0)["sessions"] == [["00000", "00002", "00003", "00005"]]  # jobs[0::2] of each update
    assert _spy(full, 1)["sessions"] == [["00001", "00004"]]  # jobs[1::2]
    rows = _children(full, drop=())
    assert [(r["child"], r["rank"], r["depth"]) for r in rows] == [(0, 0, 2), (1, 1, 2), (2, 0, 2), (3, 0, 3),
                                                                   (4, 1, 3), (5, 0, 3)]
    assert len(metric_records(full)) == 2 and len((full / "children.jsonl").read_text().splitlines()) == 6
    assert sorted(p.name for p in (full / "children").iterdir()) == [f"{i:05d}" for i in range(6)]


def test_every_rank_makes_the_same_controller_update(runs):
    for name in ("full", "part"):
        # the spy writes these with a plain torch.save, not as checkpoints
        rank0, rank1 = (torch.load(runs / name / f"rank{r}.pt", weights_only=True) for r in (0, 1))
        for key, value in rank0.items():
            assert torch.equal(value, rank1[key]), (name, key)
        assert not _spy(runs / name, 0)["changed_by_rank0"] and not _spy(runs / name, 1)["changed_by_rank0"]


def test_two_ranks_end_as_one_process_with_the_same_seed(runs):
    single, full = (load_checkpoint(runs / d / "last.pt") for d in ("single", "full"))
    assert _children(runs / "full") == _children(runs / "single")  # the same children, rewards bitwise
    for key, value in single["sampler"]["controller"].items():
        assert torch.equal(value, full["sampler"]["controller"][key]), key
    assert torch.equal(single["sampler"]["reinforce"]["baseline"], full["sampler"]["reinforce"]["baseline"])
    assert metric_records(runs / "full") == metric_records(runs / "single")
    assert (runs / "full" / "best_arch.json").read_text() == (runs / "single" / "best_arch.json").read_text()


def test_a_signal_on_one_rank_stops_both_and_the_resumed_run_trains_only_the_missing_child(runs):
    part = runs / "part"
    stopped = [json.loads(line)["child"] for line in (part / "interrupted.jsonl").read_text().splitlines()]
    assert sorted(stopped) == [0, 1, 2, 3, 5]  # rank 0 finished its children of update 2; child 4 was stopped
    # resumed: child 4 is the only one left, rank 0's share (jobs[0::2] of [4]); it continues from rank 1's last.pt
    assert _spy(part, 0)["sessions"] == [["00000", "00002", "00003", "00005"], ["00004"]]
    assert _spy(part, 1)["sessions"] == [["00001", "00004"], []]
    assert _children(part) == _children(runs / "full")
    assert metric_records(part) == metric_records(runs / "full")
    full, resumed = (load_checkpoint(runs / d / "last.pt") for d in ("full", "part"))
    for key, value in full["sampler"]["controller"].items():
        assert torch.equal(value, resumed["sampler"]["controller"][key]), key


def test_nas_rl_across_ranks_needs_no_batch_size_multiple(tmp_path):
    cfg, _ = compose_config(["experiment=smoke", "dist=ddp", "dist.nproc_per_node=2", *OVERRIDES,
                             "trainer.batch_size=33"], tmp_path)
    check_supported(cfg, sweeping=False)  # the children's batches are whole on each rank
