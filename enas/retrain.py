"""Final training: one fixed architecture trained from scratch, evaluated on held-out images every few epochs.

Reference: enas_reference.md §1.8-§1.9 and §5 (scripts/cifar10_micro_final.sh, cifar10_macro_final.sh): SGD
Nesterov with per-epoch cosine restarts, aux-head loss, drop-path ramped over every step of training, cutout;
the evaluation uses BN running statistics. Checkpoints (`last.pt`) are written atomically every epoch and a run
resumes exactly; the trained network goes to `final.pt` (see enas.networks).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from enas.augment import BatchSampler, augment_batch
from enas.checkpoint import CheckpointedLoop
from enas.config import RetrainConfig
from enas.data import Dataset, Split, check_batch_fits
from enas.interrupt import StopSignals
from enas.judges import network_accuracy
from enas.optim import sgd_with_restarts
from enas.progress import EpochMeter, ProgressBars
from enas.tracking import Tracker

log = logging.getLogger(__name__)


def short_recipe(cfg: RetrainConfig, epochs: int) -> RetrainConfig:
    """The retrain recipe compressed to `epochs` epochs (one cosine cycle over them), aux head and drop-path off,
    the validation split held out: the proxy that rank checks, proxy_acc and NAS-RL children are trained with."""
    return dataclasses.replace(cfg, epochs=epochs, lr_t0_epochs=epochs, lr_t_mult=1, aux_weight=0.0,
                               drop_path_keep=1.0, train_on_valid=False)


class RetrainLoop(CheckpointedLoop):
    """Trains `net` on `data.train`; reports accuracy on `eval_split` (named `eval_name`: "test" or "valid")."""

    stateful = ("batches",)  # checkpointed besides the weights and optimiser

    def __init__(self, net: nn.Module, data: Dataset, eval_split: Split, eval_name: str, cfg: RetrainConfig,
                 run_dir: str | Path, tracker: Tracker, seed: int = 0, progress: ProgressBars | None = None):
        self.net, self.data, self.cfg, self.run_dir, self.tracker = net, data, cfg, Path(run_dir), tracker
        self.eval_split, self.eval_name = eval_split, eval_name
        self.progress = progress or ProgressBars(enabled=False)
        self.device = data.train.x.device
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        check_batch_fits(data.train, cfg.batch_size, "train")
        self.net.to(memory_format=self.memory_format)
        self.optimizer, self.scheduler = sgd_with_restarts(net.parameters(), cfg, foreach=True)
        self.augment_generator = torch.Generator(self.device).manual_seed(seed + 1)
        self.batches = BatchSampler(len(data.train), cfg.batch_size, torch.Generator(self.device).manual_seed(seed + 2))
        self.total_steps = cfg.epochs * len(self.batches)
        self.epoch, self.global_step = 0, 0

    def run(self) -> dict:
        """Train until `cfg.epochs`; returns the last epoch's record (with `<eval_name>/acc` when evaluated).
        SIGINT/SIGTERM save the run after the current step and raise enas.interrupt.RunInterrupted."""
        with self.progress, StopSignals() as self.stop:
            return self._run()

    def _run(self) -> dict:
        record: dict = {}
        epoch_bar = self.progress.add("epochs", self.cfg.epochs, completed=self.epoch)
        while self.epoch < self.cfg.epochs:
            metrics = self.train_epoch()
            last = self.epoch + 1 == self.cfg.epochs
            if (self.epoch + 1) % self.cfg.eval_every_epochs == 0 or last:
                metrics[f"{self.eval_name}/acc"] = self.evaluate()
            metrics["lr"] = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            self.epoch += 1
            self.save()
            record = self.tracker.log({"epoch": self.epoch, **metrics}, step=self.global_step)
            log.info("epoch %d/%d  %s", self.epoch, self.cfg.epochs,
                     "  ".join(f"{k}={v:.4g}" for k, v in record.items() if k not in ("epoch", "step")))
            self.progress.advance(epoch_bar)
            self.progress.postfix(epoch_bar, **{k: v for k, v in record.items() if k not in ("epoch", "step")})
            self.epoch_done()
        return record

    def train_step(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        x = augment_batch(self.data.train.x[idx], self.data.mean, self.data.std, self.augment_generator,
                          padding=cfg.crop_padding, flip=cfg.flip, cutout_size=cfg.cutout_size,
                          memory_format=self.memory_format)
        y = self.data.train.y[idx]
        if hasattr(self.net, "drop_path_progress"):
            self.net.drop_path_progress = (self.global_step + 1) / self.total_steps  # a Python float: no sync
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            logits, aux_logits = self.net(x)
            loss = F.cross_entropy(logits, y)
            if aux_logits is not None:
                loss = loss + cfg.aux_weight * F.cross_entropy(aux_logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip_norm, foreach=True)
        self.optimizer.step()
        return loss.detach(), (logits.argmax(1) == y).sum()

    def train_epoch(self) -> dict:
        self.net.train()
        meter = EpochMeter(self.progress, "train", self.epoch + 1, len(self.batches), self.cfg.log_every_steps,
                           self.device, log)
        for idx in self.batches.epoch(start=self.resume_pass(meter)):
            meter.update(*self.train_step(idx), idx.numel())
            self.step_done(meter)
        self.epoch_step = 0
        return meter.result()

    def evaluate(self) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            return network_accuracy(self.net, self.eval_split, self.data.mean, self.data.std, self.cfg.eval_batch_size,
                                    self.memory_format)
