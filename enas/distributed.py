"""One search data-parallel over W processes (torch.distributed): what each rank does with its peers.

Design and measurements: shared/reference/scale_out.md §2 (verified on CPU/gloo against one process).
- The same architecture on every rank for every step: rank 0 samples (one batched controller call for the epoch's
  shared pass, one per controller step) and broadcasts the choices as one int tensor.
- `trainer.batch_size` is the global batch: every rank draws the same minibatch indices and the same augmentation
  and trains on its 1/W of the rows. Gradients are averaged by DDP(find_unused_parameters=True) (`grad_sync: ddp`)
  or by one all-reduce of only the gradients the sampled path produced (`allreduce_used`: bitwise the same).
- The controller's rewards are sharded: rank r scores architectures r, r+W, ... each on its own minibatch of the
  common validation stream; one all_reduce assembles them exactly. Rank 0 takes the REINFORCE step and sends the
  controller's weights, so every rank holds the same policy.
- Rank 0 alone writes files, checkpoints (holding every rank's RNG state) and W&B; a stop signal on any rank is
  agreed by all every `log_every_steps` steps, so every rank stops after the same step.
`SINGLE` (one process) does none of this: every method returns at once and the search runs the code it always ran.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from enas.checkpoint import global_rng_state, set_global_rng_state
from enas.judges import shared_weight_rewards


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one search, and the collectives the search loop needs."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")  # where this rank computes and communicates
    grad_sync: str = "ddp"  # ddp | allreduce_used

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.size:
            raise ValueError(f"trainer.batch_size={batch_size} is the global batch and must split evenly over "
                             f"{self.size} ranks; use a multiple of {self.size}")

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch."""
        if self.size == 1:
            return batch
        rows = batch.shape[0] // self.size
        return batch[self.rank * rows:(self.rank + 1) * rows]

    def data_parallel(self, net: nn.Module) -> tuple[nn.Module, Callable[[], None]]:
        """The module to train with and what to call after each backward (gradients averaged over ranks)."""
        if self.size == 1:
            return net, _nothing
        if self.grad_sync == "allreduce_used":
            broadcast_tensors(list(net.state_dict().values()), self)  # what DDP's constructor does
            return net, UsedGradSync(net, self)
        # no buffer broadcast before each forward: the loop averages them over ranks once per epoch instead
        ddp = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                      find_unused_parameters=True, **{_NO_BUFFER_SYNC: False})
        return ddp, _nothing

    def share_sampler(self, sampler):
        return sampler if self.size == 1 else BroadcastSampler(sampler, self)

    def rewards(self, net: nn.Module, archs: Sequence, next_batch: Callable, skip_batch: Callable,
                dropout: bool, score: str = "acc") -> torch.Tensor:
        """One reward per architecture [K], each on the next minibatch of the validation stream, as
        `judges.shared_weight_rewards` gives on one process; with W ranks each scores every W-th architecture and
        only moves the stream past the others' minibatches (`skip_batch`)."""
        if self.size == 1:
            return shared_weight_rewards(net, archs, next_batch, dropout=dropout, score=score)
        mine = archs[self.rank::self.size]
        batches = [next_batch() if k % self.size == self.rank else skip_batch() for k in range(len(archs))]
        rewards = torch.zeros(len(archs), device=self.device)
        if mine:
            own = iter(batches[self.rank::self.size])
            rewards[self.rank::self.size] = shared_weight_rewards(net, mine, lambda: next(own), dropout=dropout,
                                                                  score=score)
        dist.all_reduce(rewards)  # each entry is non-zero on one rank only: the sum is exact
        return rewards

    def average_buffers(self, net: nn.Module) -> None:
        """BN running statistics (macro) averaged over ranks, so every rank scores with the same network."""
        buffers = [b for b in net.buffers() if b.is_floating_point()]
        if self.size > 1 and buffers:
            flat = torch.cat([b.reshape(-1) for b in buffers]).div_(self.size)
            dist.all_reduce(flat)
            _unflatten_into(flat, buffers)

    def agreed_stop(self, stop, every_steps: int, step: Callable[[], int]):
        return stop if self.size == 1 else AgreedStop(stop, self, every_steps, step)

    # --- checkpoints: rank 0 writes; every rank's global RNG (dropout) is in the file ------------------------
    def split_global_rng(self, seed: int) -> None:
        """Ranks other than 0 draw dropout from their own stream (rank 0 keeps the single-process one)."""
        if self.rank:
            torch.manual_seed(seed + 1_000_003 * self.rank)

    def gather_rng_states(self) -> dict:
        if self.size == 1:
            return {}
        states = [None] * self.size
        dist.all_gather_object(states, global_rng_state())
        return {"rank_rng": states}

    def restore_rng_state(self, state: dict) -> None:
        states = state.get("rank_rng")
        if self.size > 1 and states and self.rank < len(states):
            set_global_rng_state(states[self.rank])

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)


SINGLE = World()
# recent torch renames DDP's broadcast_buffers to forward_sync_buffers (and warns on the old name)
_NO_BUFFER_SYNC = next(name for name in ("forward_sync_buffers", "broadcast_buffers")
                       if name in inspect.signature(DistributedDataParallel).parameters)


def _nothing() -> None:
    pass


def _unflatten_into(flat: torch.Tensor, tensors: Sequence[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view(t.shape))
        offset += t.numel()


def broadcast_tensors(tensors: Sequence[torch.Tensor], world: World) -> None:
    """Rank 0's values into every rank's `tensors` (same shapes everywhere), in one broadcast per dtype."""
    for dtype in dict.fromkeys(t.dtype for t in tensors):
        group = [t for t in tensors if t.dtype == dtype]
        flat = torch.cat([t.detach().reshape(-1) for t in group]).to(world.device)
        dist.broadcast(flat, src=0)
        if not world.is_main:
            with torch.no_grad():
                _unflatten_into(flat, group)


class UsedGradSync:
    """`grad_sync: allreduce_used`: after backward, one all-reduce of the gradients this step produced (an autograd
    hook marks each), divided by W as DDP divides. Every rank runs the same architecture, so the flattened buffers
    line up; unsampled parameters keep no gradient, as on one process."""

    def __init__(self, net: nn.Module, world: World):
        self.world = world
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.used = [False] * len(self.params)
        for i, p in enumerate(self.params):
            p.register_post_accumulate_grad_hook(functools.partial(self._mark, i))

    def _mark(self, index: int, param: torch.Tensor) -> None:
        self.used[index] = True

    def __call__(self) -> None:
        grads = [p.grad for p, used in zip(self.params, self.used) if used]  # parameter order: same on all ranks
        self.used = [False] * len(self.params)
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads]).div_(self.world.size)
            dist.all_reduce(flat)
            _unflatten_into(flat, grads)


class BroadcastSampler:
    """A sampler whose draws happen on rank 0 and reach every rank as one [K, columns] int tensor per call. Rank 0
    alone learns (it holds the rollouts' log-probs) and then sends the controller's weights to the others."""

    def __init__(self, sampler, world: World):
        self.inner, self.world, self.space = sampler, world, sampler.space
        self.learns_from_rewards = sampler.learns_from_rewards
        self.num_columns = sum(step.num_columns for step in self.space.steps())

    def sample(self, k: int, with_grad: bool = False) -> tuple[list, object]:
        if self.world.is_main:
            archs, rollout = self.inner.sample(k, with_grad=with_grad)
            choices = (rollout.choices if rollout is not None
                       else torch.tensor([self.space.to_choices(a) for a in archs]))
            dist.broadcast(choices.to(self.world.device, torch.long), src=0)
            return archs, rollout
        choices = torch.empty(k, self.num_columns, dtype=torch.long, device=self.world.device)
        dist.broadcast(choices, src=0)
        return [self.space.from_choices(c) for c in choices.tolist()], None

    def update(self, rollout, rewards: torch.Tensor) -> dict:
        metrics = self.inner.update(rollout, rewards) if self.world.is_main else {}
        broadcast_tensors(list(self.inner.controller.state_dict().values()), self.world)
        return metrics

    def most_likely(self):
        return self.inner.most_likely()

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


class AgreedStop:
    """A stop request (enas.interrupt.StopSignals) that every rank agrees on: the ranks max-reduce their signal
    numbers at every `every_steps`-th training step (`step()`: the loop's step count; the loop reads the device there
    anyway), so all stop after the same step; a rank that stopped alone would leave the others in a collective."""

    def __init__(self, stop, world: World, every_steps: int, step: Callable[[], int]):
        self.stop, self.world, self.every_steps, self.step = stop, world, max(every_steps, 1), step
        self.signum, self.agreed_at = None, None

    @property
    def requested(self) -> bool:
        step = self.step()
        if self.signum is None and step % self.every_steps == 0 and step != self.agreed_at:
            flag = torch.tensor([self.stop.signum or 0], device=self.world.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.signum, self.agreed_at = int(flag.item()) or None, step
        return self.signum is not None


# --- the process group -------------------------------------------------------------------------------------------
def launched_world_size() -> int:
    """How many ranks torchrun (or a launcher that sets torch's env:// variables) started; 1: started alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def process_group(device_name: str, backend: str | None, grad_sync: str) -> Iterator[World]:
    """Join the ranks named by torch's env:// variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); each rank
    takes GPU LOCAL_RANK (modulo the visible ones) when `device_name` picks CUDA."""
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    device = torch.device("cpu")
    if cuda:
        local_size, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), torch.cuda.device_count()
        if gpus == 0:
            raise ValueError(f"device={device_name!r} but no CUDA device is available; use device=cpu (gloo)")
        if 1 < gpus < local_size:  # one visible GPU each (SLURM's per-task binding) is fine
            raise ValueError(f"{local_size} processes on this node but {gpus} GPUs visible; start at most {gpus} "
                             "(dist.nproc_per_node, torchrun --nproc_per_node, tasks_per_node)")
        device = torch.device("cuda", local_rank % gpus)
        torch.cuda.set_device(device)
    dist.init_process_group(backend or ("nccl" if cuda else "gloo"), rank=rank, world_size=size)
    try:
        yield World(rank, size, device, grad_sync)
    finally:
        dist.destroy_process_group()
