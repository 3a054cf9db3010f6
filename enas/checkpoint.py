"""Checkpoints: written atomically each epoch; a run resumes from its last one exactly where it stopped.

`last.pt` holds everything the next epoch depends on: shared weights, controller, both optimisers, the LR
schedule, the EMA baseline, epoch and step counters, every random generator (torch's global CPU/CUDA state for
dropout, and the loop's own generators), the minibatch streams and the W&B run id.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from enas.files import save_torch_atomic

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
    save_torch_atomic(path, {**state, "rng": global_rng_state()})


class CheckpointedLoop:
    """`state_dict` / `load_state_dict` / `save` for a training loop. Expects the attributes epoch, global_step, net,
    optimizer, scheduler, augment_generator, tracker and run_dir; `stateful` names the loop's other parts with
    state_dict/load_state_dict (samplers, minibatch streams)."""

    stateful: tuple[str, ...] = ()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "global_step": self.global_step, "net": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "augment_generator": self.augment_generator.get_state(), "wandb_id": self.tracker.wandb_id,
                **{name: getattr(self, name).state_dict() for name in self.stateful}}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.augment_generator.set_state(state["augment_generator"])
        for name in self.stateful:
            getattr(self, name).load_state_dict(state[name])
        set_global_rng_state(state["rng"])

    def save(self) -> None:
        save_checkpoint(Path(self.run_dir) / CHECKPOINT_NAME, self.state_dict())


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """Load a checkpoint written by `save_checkpoint` (tensors only: safe `weights_only` loading)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; a search run writes {CHECKPOINT_NAME} "
                                "into its run directory at the end of every epoch")
    state = torch.load(path, map_location=device, weights_only=True)
    log.info("loaded checkpoint %s (epoch %d)", path, state.get("epoch", -1))
    return state
