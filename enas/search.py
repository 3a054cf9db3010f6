"""The search loop: alternate an epoch of SGD on the shared weights with sampler (controller) updates.

Reference: enas_reference.md §4 (shared-weights training) and §3 (controller schedule). Per epoch:
1. shared pass: ceil(N/B) minibatches, a fresh architecture per minibatch (all drawn in one batched
   controller call: the policy does not change during this phase), SGD Nesterov with epoch-wise cosine restarts;
2. sampler phase: `num_updates` x (sample `num_aggregate` architectures, reward each on the next validation
   minibatch, one REINFORCE step);
3. validation accuracy of freshly sampled children (logging only), then `last.pt`.
Metrics accumulate as device tensors and are read once per `log_every_steps` and once per epoch.
Data-parallel over several processes, `world` (enas.distributed) shares the architectures, splits each global batch,
averages gradients and shards the rewards; with one process (SINGLE) each of its calls returns at once.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from enas.augment import BatchSampler, augment_batch, normalise
from enas.checkpoint import CheckpointedLoop
from enas.config import SearchTrainerConfig
from enas.data import Dataset, check_batch_fits
from enas.diagnostics import collapse_warning, policy_diagnostics, sample_diagnostics
from enas.distributed import SINGLE, World
from enas.interrupt import StopSignals
from enas.judges import split_accuracy
from enas.optim import LazyDecaySGD, sgd_with_restarts
from enas.progress import EpochMeter, ProgressBars
from enas.samplers import UniformSampler
from enas.tracking import Tracker

log = logging.getLogger(__name__)
EPOCH_POSTFIX = ("shared/loss", "controller/reward", "controller/entropy", "controller/skip_rate", "valid/acc", "lr")


@dataclass
class ControllerSchedule:
    num_updates: int = 30    # controller_train_steps: Adam steps per epoch
    num_aggregate: int = 10  # controller_num_aggregate: architectures (rewards) per step


def build_shared_optimizer(net: nn.Module, cfg: SearchTrainerConfig):
    """SGD Nesterov + SGDR stepped once per epoch. With `decay_unsampled` weight decay and momentum reach the
    weights off the sampled path every step, as TF's dense gradients do (§1.2), through `LazyDecaySGD`: exact, yet
    a step updates only the sampled weights, and a module's weights catch up when it is called. Off, unsampled
    weights are left untouched (PyTorch skips parameters without gradients)."""
    # the fused kernel needs every momentum buffer to exist: LazyDecaySGD creates them all up front
    kernel = {"fused": True} if cfg.decay_unsampled else {"foreach": True}
    optimizer, scheduler = sgd_with_restarts(net.parameters(), cfg, lazy_decay=cfg.decay_unsampled, **kernel)
    if cfg.decay_unsampled:
        optimizer.watch(net)  # each module's weights are caught up as a child's forward pass calls it
    return optimizer, scheduler


class SearchLoop(CheckpointedLoop):
    stateful = ("sampler", "train_batches", "valid_batches")  # checkpointed besides the weights and optimiser

    def __init__(self, net: nn.Module, sampler, data: Dataset, cfg: SearchTrainerConfig,
                 schedule: ControllerSchedule, aux_weight: float, run_dir: str | Path, tracker: Tracker,
                 seed: int = 0, progress: ProgressBars | None = None, describe=lambda arch: {},
                 world: World = SINGLE):
        """describe(arch): extra fields for each row of the sampled-architectures table (benchmark accuracies);
        world: this process's rank among the processes of one data-parallel search (SINGLE: alone)."""
        self.net, self.data, self.cfg, self.schedule, self.world = net, data, cfg, schedule, world
        self.sampler = world.share_sampler(sampler)
        if cfg.warmup_epochs or cfg.shared_sampling == "uniform":  # shared passes on uniform architectures
            self.warmup_sampler = world.share_sampler(
                UniformSampler(sampler.space, torch.Generator(data.train.x.device).manual_seed(seed + 5)))
            self.stateful = (*self.stateful, "warmup_sampler")
        self.describe = describe
        self.aux_weight, self.run_dir, self.tracker = aux_weight, Path(run_dir), tracker
        self.progress = progress or ProgressBars(enabled=False)
        self.device = data.train.x.device
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        check_batch_fits(data.train, cfg.batch_size, "train")
        check_batch_fits(data.valid, cfg.batch_size, "valid")
        world.check_batch_size(cfg.batch_size)
        self.net.to(memory_format=self.memory_format)
        self.train_net, self.sync_grads = world.data_parallel(net)  # net itself on one process
        self.optimizer, self.scheduler = build_shared_optimizer(net, cfg)
        self.augment_generator = torch.Generator(self.device).manual_seed(seed + 1)
        self.train_batches = BatchSampler(len(data.train), cfg.batch_size,
                                          torch.Generator(self.device).manual_seed(seed + 2))
        self.valid_batches = BatchSampler(len(data.valid), cfg.batch_size,
                                          torch.Generator(self.device).manual_seed(seed + 3))
        world.split_global_rng(seed)
        self.epoch, self.global_step = 0, 0
        self._sampled: tuple[list, torch.Tensor] | None = None  # the sampler phase's architectures and rewards

    # --- one epoch -------------------------------------------------------------------------------------------
    def run(self, epochs: int) -> dict:
        """Train until `epochs` epochs are done; returns the last epoch's record (empty if none ran). SIGINT/SIGTERM
        save the run after the current step and raise enas.interrupt.RunInterrupted."""
        with self.progress, StopSignals() as stop:
            self.stop = self.world.agreed_stop(stop, self.cfg.log_every_steps, lambda: self.global_step)
            return self._run(epochs)

    def _run(self, epochs: int) -> dict:
        record: dict = {}
        epoch_bar = self.progress.add("epochs", epochs, completed=self.epoch)
        while self.epoch < epochs:
            if self.cfg.few_shot_epoch and self.epoch >= self.cfg.few_shot_epoch and not self.net.is_split:
                self.net.split(self.optimizer)
                log.info("epoch %d: the supernet split into %d few-shot parts", self.epoch + 1, len(self.net.parts))
            timings, metrics = {}, {}
            with _timer(timings, "time/shared_s", self.device):
                metrics.update(self.train_shared())
            timings["time/shared_images_per_s"] = len(self.train_batches) * self.cfg.batch_size / timings["time/shared_s"]
            if self.schedule.num_updates > 0 and self.sampler.learns_from_rewards and not self.warming_up:
                with _timer(timings, "time/controller_s", self.device):
                    metrics.update(self.train_sampler())
                if self.uniform_shared_pass:  # what the policy picks: its rewarded architectures
                    metrics.update(sample_diagnostics(self.sampler.space, self._sampled[0]))
                metrics.update(policy_diagnostics(self.sampler.space, self.sampler.most_likely()))
            if (self.epoch + 1) % self.cfg.eval_every_epochs == 0 or self.epoch + 1 == epochs:
                with _timer(timings, "time/valid_s", self.device):
                    metrics["valid/acc"] = self.evaluate()
            metrics["lr"] = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            self.epoch += 1
            with _timer(timings, "time/checkpoint_s", self.device):
                self.save()
            record = self.tracker.log({"epoch": self.epoch, **metrics, **timings}, step=self.global_step)
            self._log_sampled()
            log.info("epoch %d/%d  %s", self.epoch, epochs,
                     "  ".join(f"{k}={v:.4g}" for k, v in record.items()
                               if k not in ("epoch", "step") and "ops/" not in k))
            warning = collapse_warning(record, self.cfg.collapse_entropy, self.uniform_shared_pass)
            if warning:
                log.warning("epoch %d: %s", self.epoch, warning)
            self.progress.advance(epoch_bar)
            self.progress.postfix(epoch_bar, **{k.split("/")[-1]: record[k] for k in EPOCH_POSTFIX if k in record})
            self.epoch_done()
        return record

    def shared_step(self, idx: torch.Tensor, arch) -> tuple[torch.Tensor, torch.Tensor]:
        x = augment_batch(self.data.train.x[idx], self.data.mean, self.data.std, self.augment_generator,
                          padding=self.cfg.crop_padding, flip=self.cfg.flip, cutout_size=self.cfg.cutout_size,
                          memory_format=self.memory_format)  # every rank draws the same augmentation
        x, y = self.world.shard(x), self.world.shard(self.data.train.y[idx])  # and trains on its rows
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            logits, aux_logits = self.train_net(x, arch)
            loss = F.cross_entropy(logits, y)
            if aux_logits is not None:
                loss = loss + self.aux_weight * F.cross_entropy(aux_logits, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.sync_grads()
        self.optimizer.step()
        return loss.detach(), (logits.argmax(1) == y).sum()

    @property
    def warming_up(self) -> bool:
        """In the first trainer.warmup_epochs epochs: uniform architectures in the shared pass, no sampler phase."""
        return self.epoch < self.cfg.warmup_epochs

    @property
    def uniform_shared_pass(self) -> bool:
        """The shared pass trains uniform architectures: while warming up, and throughout with
        trainer.shared_sampling=uniform (then the controller never chooses which weights train, only learns from
        their rewards: its picks cannot make themselves score better)."""
        return self.warming_up or self.cfg.shared_sampling == "uniform"

    def train_shared(self) -> dict:
        """One pass over the training split, a fresh architecture per minibatch: the sampler's, or uniform ones
        (uniform_shared_pass)."""
        self.net.train()
        sampler, name = ((self.warmup_sampler, "warmup_sampler") if self.uniform_shared_pass
                         else (self.sampler, "sampler"))
        # the state the epoch's architectures are drawn from: an interrupted pass saves it, so that its resumed
        # run draws the same architectures again (the policy does not change during this phase)
        sampler_state = copy.deepcopy(sampler.state_dict())
        archs, _ = sampler.sample(len(self.train_batches))
        diagnostics = sample_diagnostics(sampler.space, archs)
        meter = EpochMeter(self.progress, "shared", self.epoch + 1, len(archs), self.cfg.log_every_steps,
                           self.device, log)
        done = self.resume_pass(meter)
        for idx, arch in zip(self.train_batches.epoch(start=done), archs[done:]):
            meter.update(*self.shared_step(idx, arch), idx.numel() // self.world.size)
            self.step_done(meter, **{name: sampler_state})
        self.epoch_step = 0
        if isinstance(self.optimizer, LazyDecaySGD):  # last.pt then holds current weights, readable by anyone
            self.optimizer.catch_up()
        self.world.average_buffers(self.net)
        return {**meter.result(), **diagnostics}

    def _valid_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.valid_batches.next_batch()
        x = normalise(self.data.valid.x[idx], self.data.mean, self.data.std, memory_format=self.memory_format)
        return x, self.data.valid.y[idx]

    def train_sampler(self) -> dict:
        totals: dict[str, torch.Tensor] = {}
        sampled, rewards_seen = [], []
        for _ in range(self.schedule.num_updates):
            archs, rollout = self.sampler.sample(self.schedule.num_aggregate, with_grad=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
                rewards = self.world.rewards(self.net, archs, self._valid_batch, self.valid_batches.next_batch,
                                             dropout=self.cfg.reward_dropout, score=self.cfg.reward)
            for key, value in self.sampler.update(rollout, rewards).items():
                totals[key] = totals.get(key, 0) + value
            sampled += archs
            rewards_seen.append(rewards)
        self._sampled = (sampled, torch.cat(rewards_seen))
        return {k: v / self.schedule.num_updates for k, v in totals.items()}

    def save(self, **replace) -> None:
        """Rank 0 writes last.pt (with every rank's RNG state); the others wait until it is complete."""
        rank_rng = self.world.gather_rng_states()
        if self.world.is_main:
            super().save(**replace, **rank_rng)
        self.world.barrier()

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.world.restore_rng_state(state)

    def _log_sampled(self) -> None:
        """The epoch's rewarded architectures as a table (sampled_archs.jsonl, W&B): one host sync per epoch."""
        sampled, self._sampled = self._sampled, None
        if sampled is not None:
            archs, rewards = sampled
            self.tracker.log_rows("sampled_archs", [
                {"epoch": self.epoch, "arch": arch.to_enas_string(), "reward": reward, **_flat(self.describe(arch))}
                for arch, reward in zip(archs, rewards.tolist())], step=self.global_step)

    def evaluate(self) -> torch.Tensor:
        """Validation accuracy with a freshly sampled child per batch, as the official search logs it."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            return split_accuracy(self.net, lambda: self.sampler.sample(1)[0][0], self.data.valid, self.data.mean,
                                  self.data.std, self.cfg.batch_size, self.memory_format)


def _flat(fields: dict) -> dict:
    """{"benchmark": {"cifar10_test": 93.1}} -> {"benchmark/cifar10_test": 93.1}: table columns."""
    return {f"{k}/{sub}" if isinstance(v, dict) else k: x for k, v in fields.items()
            for sub, x in (v.items() if isinstance(v, dict) else [(None, v)])}


class _timer:
    """Wall time of a phase into `out[key]`; syncs the GPU once at the end of the phase so the time is real."""

    def __init__(self, out: dict, key: str, device: torch.device):
        self.out, self.key, self.device = out, key, device

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.out[self.key] = time.perf_counter() - self.start
