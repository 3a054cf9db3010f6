"""NAS-RL children trained across torchrun ranks (Zoph & Le 2017 trained 800 children at once, §4.1): each rank
trains its share of an update's children, the rewards are gathered, and every rank makes the same controller update.

- Every rank builds the controller from cfg.seed and samples from the same seeded generator, so every rank samples the
  same children; `ShardedChildren` checks that before any training (a rank started with other overrides fails there).
- `ShardedChildren(judge, world)`: rank r trains the update's pending children r, r + W, ... with its own judge (in
  this process or its own pool of nas_rl.workers); all_gather_object brings every result to every rank, in job order.
  A child's seed depends only on its index, so the rewards are those of one process.
- The REINFORCE step is the same on every rank (the same rollout and rewards); then `agree_on_controller` copies
  rank 0's controller weights to the others: on CPU a bitwise no-op, on GPUs a guard against nondeterministic kernels
  (atomic adds in an embedding's backward) making the ranks drift apart and sample different children.
- Rank 0 alone writes children.jsonl, metrics.jsonl, last.pt and the run's artefacts; each child's directory
  (children/<n>/) is written by the rank that trains it, so the ranks share the run directory (one node, or a shared
  file system). A stop signal on a rank ends its current child with its last.pt saved; every rank stops at the gather.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Callable

import torch.distributed as dist

from enas.distributed import World, broadcast_tensors
from enas.interrupt import RunInterrupted
from enas.nas_rl_children import CHILDREN_NAME, ChildJob, ChildResult


def from_main(value, world: World):
    """Rank 0's `value` (picklable) on every rank: what rank 0 read from the run directory before anyone wrote it."""
    if world.size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=world.device if world.device.type == "cuda" else None)
    return box[0]


def agree_on_controller(sampler, world: World) -> None:
    """Rank 0's controller weights into every rank's, after every rank took the same REINFORCE step."""
    if world.size > 1:
        broadcast_tensors(list(sampler.controller.state_dict().values()), world)


class ShardedChildren:
    """A judge whose children are shared out over the ranks: `judge(jobs, on_done)` trains jobs[rank::size] with the
    wrapped judge and returns every rank's results in job order on every rank; on_done runs on every rank for every
    child (its own as they finish, the others' after the gather), each result carrying the rank that trained it."""

    def __init__(self, judge, world: World):
        self.judge, self.world = judge, world

    def __call__(self, jobs: list[ChildJob], on_done: Callable[[ChildJob, ChildResult], None]) -> list[ChildResult]:
        if self.world.size == 1:
            return self.judge(jobs, on_done)
        self._check_same_jobs(jobs)
        mine: list[ChildResult] = []

        def own_done(job: ChildJob, result: ChildResult) -> None:
            mine.append(dataclasses.replace(result, rank=self.world.rank))
            on_done(job, mine[-1])

        stopped = None
        try:
            self.judge(jobs[self.world.rank::self.world.size], own_done)
        except RunInterrupted as e:  # its finished children are in `mine`; the others still gather
            stopped = e.signum
        gathered: list = [None] * self.world.size
        dist.all_gather_object(gathered, (mine, stopped))
        results, by_index = {r.index: r for r in mine}, {job.index: job for job in jobs}
        for theirs in sorted((r for rank, (rs, _) in enumerate(gathered) if rank != self.world.rank for r in rs),
                             key=lambda r: r.index):
            results[theirs.index] = theirs
            on_done(by_index[theirs.index], theirs)
        signum = next((s for _, s in gathered if s is not None), None)
        if signum is not None:
            raise RunInterrupted(signum, f"while the ranks trained children {jobs[0].index}-{jobs[-1].index}; the "
                                 f"finished ones are in {CHILDREN_NAME}, a stopped one resumes from its last.pt")
        return [results[job.index] for job in jobs]

    def _check_same_jobs(self, jobs: list[ChildJob]) -> None:
        own = [(job.index, json.dumps(job.arch, sort_keys=True)) for job in jobs]
        views: list = [None] * self.world.size
        dist.all_gather_object(views, own)
        differ = [rank for rank, view in enumerate(views) if view != views[0]]
        if differ:
            raise RuntimeError(f"rank(s) {differ} would train other children than rank 0 ({views[differ[0]][:2]} vs "
                               f"{views[0][:2]}); every rank must run the same config, seed and run directory")

    def close(self) -> None:
        self.judge.close()
