"""Checkpoints: written atomically each epoch; a run resumes from its last one exactly where it stopped.

`last.pt` holds everything the next epoch depends on: shared weights, controller, both optimisers, the LR
schedule, the EMA baseline, epoch and step counters, every random generator (torch's global CPU/CUDA state for
dropout, and the loop's own generators), the minibatch streams and the W&B run id. On SIGINT/SIGTERM (enas.interrupt) a loop also saves mid-epoch: the
steps done in the epoch's training pass, the pass's running sums and the state its architectures were drawn from,
so the resumed pass replays the same architectures and minibatches from the next step on.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from enas.files import save_torch_atomic
from enas.interrupt import RunInterrupted, StopSignals
from enas.tensor_pool import pack, unpack

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "last.pt"


def global_rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict) -> None:
    """`state` plus the global RNG states, its tensors packed into one pool per dtype (enas.tensor_pool)."""
    save_torch_atomic(path, pack({**state, "rng": global_rng_state()}))


class CheckpointedLoop:
    """`state_dict` / `load_state_dict` / `save` for a training loop. Expects the attributes epoch, global_step, net,
    optimizer, scheduler, augment_generator, tracker and run_dir; `stateful` names the loop's other parts with
    state_dict/load_state_dict (samplers, minibatch streams)."""

    stateful: tuple[str, ...] = ()
    epoch_step = 0  # training steps done in the current epoch's pass (0 between epochs)
    stop: StopSignals | None = None  # set while run() is inside `with StopSignals()`
    _resumed_meter: dict | None = None  # the interrupted pass's running sums, until the pass restarts

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "global_step": self.global_step, "epoch_step": self.epoch_step,
                "net": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "augment_generator": self.augment_generator.get_state(), "wandb_id": self.tracker.wandb_id,
                **{name: getattr(self, name).state_dict() for name in self.stateful}}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.epoch_step, self._resumed_meter = state.get("epoch_step", 0), state.get("meter")
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.augment_generator.set_state(state["augment_generator"])
        for name in self.stateful:
            getattr(self, name).load_state_dict(state[name])
        set_global_rng_state(state["rng"])

    def save(self, **replace) -> None:
        save_checkpoint(Path(self.run_dir) / CHECKPOINT_NAME, {**self.state_dict(), **replace})

    # --- a training pass that can stop after any step ---------------------------------------------------------
    def resume_pass(self, meter) -> int:
        """Start an epoch's training pass: the steps it already did before an interruption (0 for a fresh pass),
        with their running sums restored into `meter`."""
        if self._resumed_meter is not None:
            meter.load_state_dict(self._resumed_meter)
            self._resumed_meter = None
        return self.epoch_step

    def step_done(self, meter, **pass_state) -> None:
        """Count a training step; on a stop request save mid-epoch (`pass_state` replaces entries of the state that
        the rest of the pass must start from) and raise RunInterrupted."""
        self.global_step += 1
        self.epoch_step += 1
        if self.stop is not None and self.stop.requested:
            self.save(meter=meter.state_dict(), **pass_state)
            raise RunInterrupted(self.stop.signum, f"in epoch {self.epoch + 1} after step {self.epoch_step}; "
                                 f"{CHECKPOINT_NAME} holds the run up to that step")

    def epoch_done(self) -> None:
        """After an epoch's checkpoint and log record: stop here if a signal came during the epoch's last phases."""
        if self.stop is not None and self.stop.requested:
            raise RunInterrupted(self.stop.signum, f"after epoch {self.epoch}; {CHECKPOINT_NAME} holds that epoch")


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """Load a checkpoint written by `save_checkpoint` (tensors only: safe `weights_only` loading)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; a search run writes {CHECKPOINT_NAME} "
                                "into its run directory at the end of every epoch")
    state = unpack(torch.load(path, map_location=device, weights_only=True))
    log.info("loaded checkpoint %s (epoch %d)", path, state.get("epoch", -1))
    return state
