"""NAS with reinforcement learning, without weight sharing (Zoph & Le, "Neural Architecture Search with Reinforcement
Learning", ICLR 2017): the loop ENAS was invented to make cheap, in the same harness, to measure what sharing buys.

The same LSTM controller and REINFORCE update as ENAS (enas.controller, enas.reinforce: EMA baseline, TF-style
Adam), but every sampled child is trained from scratch (enas.nas_rl_children). Per update u = 1 .. nas_rl.num_updates
(an "epoch" of metrics.jsonl and last.pt is one update):
  1. the controller samples m = nas_rl.children_per_update architectures in one call (the paper's m = 8);
  2. each child is trained for nas_rl.child_epochs epochs and validated, or looked up in NAS-Bench-201
     (nas_rl.reward=benchmark); its reward is its last validation accuracy or, with reward_shaping=zoph, the max
     validation accuracy of its last 5 epochs, cubed (§4.1);
  3. one REINFORCE step on the m rewards; one metrics.jsonl record and the children as a table (sampled_archs.jsonl,
     W&B); then last.pt (controller, Adam, baseline, the sampling generator).
Each finished child is a line of children.jsonl at once. A resumed run samples the update under way again from the
saved generator (the same children, checked by architecture) and trains only those missing from children.jsonl.
The winner is the child with the highest reward: best_arch.json, result.json and drawings, as for every strategy.
Children are trained by a judge, `judge(jobs, on_done) -> results in job order` (nas_rl_children.ChildTrainer: one
process or a pool; BenchmarkRewards: table lookups), which nas_rl_ranks.ShardedChildren shares out over torchrun ranks:
every rank samples the same children and makes the same update; rank 0 alone writes the run's files.
With nas_rl.depth_start (nasrl_conv), Zoph & Le's growing depth (§4.1): the children of update u have
`scheduled_depth` layers, from depth_start up by depth_step every depth_every_children children, at most
search_space.num_layers; the controller is built for that maximum and samples the first layers' decisions.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from enas.artefacts import pictures, publish, write_result
from enas.build import (benchmark_lookup, build_dataset, build_sampler, build_space, configure_backends,
                        fixed_network_kwargs, resolve_device, skeleton_params)
from enas.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from enas.config import Config
from enas.data import Dataset, make_synthetic
from enas.derive import BEST_ARCH_NAME
from enas.diagnostics import policy_diagnostics, sample_diagnostics
from enas.distributed import SINGLE, World
from enas.files import write_json_atomic
from enas.nas_rl_children import (CHILDREN_DIR, CHILDREN_NAME, BenchmarkRewards, ChildJob, ChildLedger, ChildResult,
                                  ChildTrainer, child_recipe, child_seed)
from enas.nas_rl_ranks import ShardedChildren, agree_on_controller, from_main
from enas.networks import SPACES, build_network
from enas.rank_check import proxy_result
from enas.tracking import SAMPLED_ARCHS_NAME, Tracker

log = logging.getLogger(__name__)
ZOPH_LAST_EPOCHS = 5  # reward_shaping=zoph: max validation accuracy of the last 5 epochs, cubed (Zoph & Le §4.1)


def reward_of(valid_accs: list[float], shaping: str | None) -> float:
    if shaping == "zoph":
        return max(valid_accs[-ZOPH_LAST_EPOCHS:]) ** 3
    return valid_accs[-1]


def scheduled_depth(children_done: int, start: int | None, step: int, every_children: int, max_depth: int) -> int:
    """Layers of the next child after `children_done` sampled ones: `start`, `step` more every `every_children`
    children, at most `max_depth` (Zoph & Le §4.1: 6, +2 every 1,600); start None: always max_depth."""
    if start is None:
        return max_depth
    return min(max_depth, start + step * (children_done // every_children))


def run_nas_rl(cfg: Config, resolved_config: dict, world: World = SINGLE) -> dict:
    """world: this process's torchrun rank; rank 0 writes the run directory, the others return {} at the end."""
    start, n = time.perf_counter(), cfg.nas_rl
    run_dir = Path(cfg.paths.output_dir)
    device = resolve_device(cfg.device)
    configure_backends(device, cfg.deterministic)
    describe = benchmark_lookup(cfg)  # opened first: a bad path fails before anything else
    looks_up = n.reward == "benchmark"
    data = _benchmark_shape() if looks_up and not cfg.derive.proxy_epochs else build_dataset(cfg.data, device)
    torch.manual_seed(cfg.seed)  # the controller's initial weights
    space = build_space(cfg, data)
    sampler = build_sampler(cfg, space, device)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    # rank 0's answer, read before it writes anything there
    resume = from_main(cfg.resume and (checkpoint_path.exists() or (run_dir / CHILDREN_NAME).exists()), world)
    state = load_checkpoint(checkpoint_path, device) if resume and checkpoint_path.exists() else None
    if state is not None:
        sampler.load_state_dict(state["sampler"])
    done = state["epoch"] if state else 0
    network = _child_network(cfg, data)
    judge = ShardedChildren(BenchmarkRewards(describe) if looks_up else ChildTrainer(
        child_recipe(cfg.retrain, network, n.child_epochs, resume), data, n.workers, cfg.data, cfg.device,
        cfg.deterministic), world)
    tracker = Tracker(run_dir, cfg.logger, resolved_config, resume_epoch=done if resume else None,
                      wandb_id=state.get("wandb_id") if state else None, enabled=world.is_main)
    ledger = ChildLedger(run_dir / CHILDREN_NAME, resume, done + 1, writes=world.is_main)
    ledger.rows = from_main(ledger.rows, world)
    log.info("nas_rl on %s: %d updates x %d children, %s%s; child network %s on %s%s%s", cfg.search_space.name,
             n.num_updates, n.children_per_update, "benchmark rewards" if looks_up else
             f"{n.child_epochs} epoch(s) each, {n.workers} at once",
             f" on each of {world.size} ranks" if world.size > 1 else "", network, device,
             f"; depth {n.depth_start} + {n.depth_step} every {n.depth_every_children} children, at most "
             f"{cfg.search_space.num_layers}" if n.depth_start is not None else "",
             f"; resuming after update {done}" if resume else "")
    try:
        loop = _Updates(cfg, space, sampler, judge, ledger, tracker, describe, network, run_dir, world)
        for update in range(done + 1, n.num_updates + 1):
            loop.run_update(update)
        if not world.is_main:
            return {}
        return _report(cfg, data, ledger, describe, run_dir, tracker, network, start)
    finally:
        judge.close()
        tracker.finish()


def _benchmark_shape() -> Dataset:
    """reward=benchmark reads no images: two placeholder images of CIFAR-10's shape (the benchmark's: 10 classes,
    3 x 32 x 32) size the space and the parameter counts."""
    return make_synthetic(num_train=1, num_valid=1, num_classes=10, image_size=32)


def _child_network(cfg: Config, data: Dataset) -> dict:
    """The children's fixed-network arguments: nas_rl.child_layers / child_channels, else the search space's."""
    s, n = cfg.search_space, cfg.nas_rl
    channels = s.channels if n.child_channels is None else n.child_channels  # nasrl_conv: 0 is a width (no stem)
    network = fixed_network_kwargs(s.name, data, n.child_layers or s.num_layers, channels, getattr(s, "dropout", 0.0))
    return {**network, "num_layers": None} if n.depth_start is not None else network  # the architecture's depth


class _Updates:
    """One controller update at a time: sample, train (or reuse) the children, REINFORCE, record, checkpoint."""

    def __init__(self, cfg: Config, space, sampler, judge, ledger: ChildLedger, tracker: Tracker, describe,
                 network: dict, run_dir: Path, world: World = SINGLE):
        self.cfg, self.space, self.sampler, self.judge, self.ledger = cfg, space, sampler, judge, ledger
        self.tracker, self.describe, self.network, self.run_dir, self.world = tracker, describe, network, run_dir, world

    def space_at(self, update: int):
        """The space update `update` samples from: nasrl_conv at the scheduled depth of its first child."""
        n = self.cfg.nas_rl
        if n.depth_start is None:
            return self.space
        return self.space.at_depth(scheduled_depth((update - 1) * n.children_per_update, n.depth_start,
                                                   n.depth_step, n.depth_every_children, self.space.num_layers))

    def run_update(self, update: int) -> None:
        started, m = time.perf_counter(), self.cfg.nas_rl.children_per_update
        space = self.space_at(update)
        archs, rollout = self.sampler.sample(m, with_grad=True, space=space)
        jobs = [ChildJob(index=i, update=update, arch=arch.to_json(), seed=child_seed(self.cfg.seed, i),
                         run_dir=str(self.run_dir / CHILDREN_DIR / f"{i:05d}"))
                for i, arch in zip(range((update - 1) * m, update * m), archs)]
        finished = self._reused(jobs, archs)
        rows = {**finished}
        children_started = time.perf_counter()

        def on_done(job: ChildJob, result: ChildResult) -> None:
            rows[job.index] = self._row(job, archs[job.index - jobs[0].index], result)
            self.ledger.append(rows[job.index])
            log.info("child %d (update %d/%d): reward %.4f, valid acc %.4f, %.1f s  %s", job.index, update,
                     self.cfg.nas_rl.num_updates, rows[job.index]["reward"], rows[job.index]["valid_acc"],
                     result.time_s, rows[job.index]["arch"])

        self.judge([job for job in jobs if job.index not in finished], on_done)
        children_s = time.perf_counter() - children_started
        ordered = [rows[job.index] for job in jobs]
        rewards = torch.tensor([r["reward"] for r in ordered], device=rollout.log_prob.device)
        metrics = self.sampler.update(rollout, rewards)
        agree_on_controller(self.sampler, self.world)
        best = max(self.ledger.rows, key=lambda r: r["reward"])
        record = self.tracker.log({
            "epoch": update, **metrics, "valid/acc": sum(r["valid_acc"] for r in ordered) / m,
            "nas_rl/best_reward": best["reward"], "nas_rl/best_valid_acc": best["valid_acc"],
            "nas_rl/num_children": len(self.ledger.rows), **sample_diagnostics(space, archs),
            **({"nas_rl/depth": space.num_layers} if space.name == "nasrl_conv" else {}),
            **policy_diagnostics(space, self.sampler.most_likely(space)), "time/children_s": children_s,
            "time/child_mean_s": sum(r["train_time_s"] for r in ordered) / m,
            "time/update_s": time.perf_counter() - started}, step=update * m)
        # W&B tables take scalars: the per-epoch accuracies stay in children.jsonl
        self.tracker.log_rows("sampled_archs", [{"epoch": update, **{k: v for k, v in r.items() if k != "valid_accs"}}
                                                for r in ordered], step=update * m)
        # after the record: a kill in between redoes this update's record from the checkpoint before
        if self.world.is_main:
            save_checkpoint(self.run_dir / CHECKPOINT_NAME, {"epoch": update, "global_step": update * m,
                                                             "sampler": self.sampler.state_dict(),
                                                             "wandb_id": self.tracker.wandb_id})
        log.info("update %d/%d  reward=%.4f  baseline=%.4f  entropy=%.4g  best reward=%.4f (child %d)  %.1f s",
                 update, self.cfg.nas_rl.num_updates, record["controller/reward"], record["controller/baseline"],
                 record["controller/entropy"], best["reward"], best["child"], record["time/update_s"])

    def _reused(self, jobs: list[ChildJob], archs: list) -> dict[int, dict]:
        """The ledger's rows for these children; each must be the architecture sampled again."""
        finished = self.ledger.finished(jobs[0].update)
        for job, arch in zip(jobs, archs):
            if job.index in finished and finished[job.index]["arch"] != arch.to_enas_string():
                raise ValueError(f"{CHILDREN_NAME} holds child {job.index} as {finished[job.index]['arch']!r}, but "
                                 f"the resumed controller sampled {arch.to_enas_string()!r}; the run's config or code "
                                 "changed since. Start a fresh run directory")
        if finished:
            log.info("update %d: %d of %d children already trained (%s), not trained again", jobs[0].update,
                     len(finished), len(jobs), CHILDREN_NAME)
        return finished

    def _row(self, job: ChildJob, arch, result: ChildResult) -> dict:
        looked_up = self.describe(arch).get("benchmark", {})
        with torch.device("meta"):  # shapes only
            params = sum(p.numel() for p in build_network(arch, **self.network).parameters())
        return {"child": job.index, "update": job.update, "arch": arch.to_enas_string(),
                "reward": reward_of(result.valid_accs, self.cfg.nas_rl.reward_shaping),
                "valid_acc": result.valid_accs[-1], "valid_accs": result.valid_accs,
                "train_time_s": round(result.time_s, 3), "params": params, "seed": job.seed, "rank": result.rank,
                **({"depth": arch.num_layers} if self.cfg.search_space.name == "nasrl_conv" else {}),
                **{f"benchmark/{k}": v for k, v in looked_up.items()}}


def _report(cfg: Config, data: Dataset, ledger: ChildLedger, describe, run_dir: Path, tracker: Tracker,
            network: dict, start: float) -> dict:
    best = max(ledger.rows, key=lambda r: r["reward"])  # the first child of the highest reward
    arch = SPACES[cfg.search_space.name][0].from_enas_string(best["arch"])
    looked_up = describe(arch)
    log.info("best architecture: child %d of update %d, reward %.4f, validation accuracy %.4f%s:\n%s", best["child"],
             best["update"], best["reward"], best["valid_acc"],
             "".join(f", {k} {v:.2f}" for k, v in looked_up.get("benchmark", {}).items()), arch)
    write_json_atomic(run_dir / BEST_ARCH_NAME, {**arch.to_json(), "reward": best["reward"],
                                                 "valid_acc": best["valid_acc"], "child": best["child"],
                                                 "source": "nas_rl", **looked_up})
    tracker.summary({"nas_rl/best_reward": best["reward"], "nas_rl/best_valid_acc": best["valid_acc"],
                     **{f"benchmark/{k}": v for k, v in looked_up.get("benchmark", {}).items()}})
    artefacts = {"metrics": str(run_dir / "metrics.jsonl"), "checkpoint": str(run_dir / CHECKPOINT_NAME),
                 "children": str(run_dir / CHILDREN_NAME), "sampled_archs": str(run_dir / SAMPLED_ARCHS_NAME),
                 "best_arch": str(run_dir / BEST_ARCH_NAME), **pictures(run_dir, arch, "best_arch")}
    n = cfg.nas_rl
    wall_time = round(time.perf_counter() - start, 2)  # the search (this session), not the proxy retrain
    result = write_result(run_dir, {
        "mode": cfg.mode, "space": cfg.search_space.name, "strategy": cfg.trainer.strategy,
        "best_arch": best["arch"], "best_valid_acc": best["valid_acc"], "best_reward": best["reward"],
        "best_child": best["child"], **looked_up,
        # a growing depth: the child's own network (the skeleton's depth may not be the child's)
        "best_params": best["params"] if n.depth_start is not None else skeleton_params(cfg, data, arch),
        **proxy_result(cfg, data, arch, run_dir), "reward": n.reward, "reward_shaping": n.reward_shaping,
        "num_children": len(ledger.rows), "num_updates": n.num_updates, "children_per_update": n.children_per_update,
        "child_epochs": n.child_epochs if n.reward == "train" else None, "child_network": network,
        "children_time_s": round(sum(r["train_time_s"] for r in ledger.rows), 2), "seed": cfg.seed,
        "wall_time_s": wall_time, "artefacts": artefacts})
    publish(tracker, run_dir, result["artefacts"], ("best_arch", "children"))
    return result
