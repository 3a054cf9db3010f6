"""Whole-batch augmentation on the device, and the minibatch index stream.

Reproduces melodyguan/enas `src/cifar10/data_utils.py`: images are divided by 255 and normalised with
the training split's per-channel mean/std; training batches are then zero-padded by 4 (zeros of the
*normalised* image), randomly cropped back to HxW, randomly flipped left-right and optionally cut out
(a size x size square of zeros whose top-left corner is uniform over the image, clipped at the border).
Reward/validation batches are only normalised. Each op is a handful of tensor ops over the whole batch,
as in KellerJordan/cifar10-airbench; every random draw comes from the caller's `torch.Generator` so a
resumed run replays exactly, and nothing here synchronises with the host.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor


def _memory_format(x: Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def _check_images(x: Tensor, what: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{what} expects a batch [N, C, H, W], got shape {tuple(x.shape)}")


def normalise(
    x_uint8: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    memory_format: torch.memory_format = torch.channels_last,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(x / 255 - mean) / std per channel, as a float tensor in `memory_format`."""
    _check_images(x_uint8, "normalise")
    if x_uint8.dtype != torch.uint8:
        raise ValueError(f"normalise expects uint8 pixels 0..255, got {x_uint8.dtype}")
    channels = x_uint8.shape[1]
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} need {channels} values each, std > 0")
    scale, shift = _affine(tuple(mean), tuple(std), x_uint8.device, dtype)
    return x_uint8.to(dtype=dtype, memory_format=memory_format).mul_(scale).add_(shift)


@functools.lru_cache(maxsize=16)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device, dtype: torch.dtype):
    """Per-channel scale and shift of `normalise`, made once per device: no host-to-device copy per batch."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=dtype).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=dtype).view(1, -1, 1, 1)
    return scale.to(device), shift.to(device)


def random_crop(x: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad by `padding` and crop back to HxW at an independent uniform offset per image."""
    _check_images(x, "random_crop")
    if padding < 0:
        raise ValueError(f"random_crop padding must be >= 0, got {padding}")
    if padding == 0:
        return x
    n, c, h, w = x.shape
    padded = x.new_zeros((n, h + 2 * padding, w + 2 * padding, c))  # NHWC: a gather then moves whole pixels
    padded[:, padding : padding + h, padding : padding + w] = x.permute(0, 2, 3, 1)
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # [N, H]
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # [N, W]
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded[batch, rows[:, :, None], cols[:, None, :]]  # [N, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous(memory_format=_memory_format(x))


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    _check_images(x, "random_flip")
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """Zero a size x size square per image; its top-left corner is uniform over HxW, so it may be clipped."""
    _check_images(x, "cutout")
    if size < 0:
        raise ValueError(f"cutout size must be >= 0 (0 = off), got {size}")
    if size == 0:
        return x
    n, _, h, w = x.shape
    top = torch.randint(0, h, (n, 1), generator=generator, device=x.device)
    left = torch.randint(0, w, (n, 1), generator=generator, device=x.device)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (rows >= top) & (rows < top + size)  # [N, H]
    in_cols = (cols >= left) & (cols < left + size)  # [N, W]
    mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # [N, 1, H, W]
    return x.clone().masked_fill_(mask, 0)


def augment_batch(
    x_uint8: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    generator: torch.Generator,
    padding: int = 4,
    flip: bool = True,
    cutout_size: int = 0,
    memory_format: torch.memory_format = torch.channels_last,
) -> Tensor:
    """The ENAS training pipeline: normalise -> pad + random crop -> random flip -> cutout."""
    x = normalise(x_uint8, mean, std, memory_format=memory_format)
    x = random_crop(x, padding, generator)
    if flip:
        x = random_flip(x, generator)
    return cutout(x, cutout_size, generator)


class BatchSampler:
    """Yields index tensors of minibatches: each epoch is ceil(N/B) full batches drawn from a fresh permutation
    (the last batch wraps into a second permutation so every batch is full, as ENAS's shuffling queue always
    serves full batches).

    `next_batch` is an endless stream over successive permutations (reward batches cycling through the
    validation split). The stream is determined by the generator's state plus (pending permutation, cursor);
    `state_dict`/`load_state_dict` save and restore all three.
    """

    def __init__(
        self, num_items: int, batch_size: int, generator: torch.Generator, device: torch.device | str | None = None
    ) -> None:
        if not 0 < batch_size <= num_items:
            raise ValueError(f"BatchSampler needs 0 < batch_size <= num_items, got batch_size {batch_size} "
                             f"for {num_items} items")
        self.num_items, self.batch_size, self.generator = num_items, batch_size, generator
        self.device = torch.device(device) if device is not None else generator.device
        self._perm: Tensor | None = None  # the permutation being consumed
        self._cursor = 0  # items of _perm already served

    def __len__(self) -> int:
        return -(-self.num_items // self.batch_size)

    def _fresh_permutation(self) -> None:
        self._perm = torch.randperm(self.num_items, generator=self.generator, device=self.device)
        self._cursor = 0

    def next_batch(self) -> Tensor:
        """The next `batch_size` indices of the stream; a batch crossing a permutation's end takes the
        rest from the start of a new one."""
        parts, needed = [], self.batch_size
        while needed:
            if self._perm is None or self._cursor == self.num_items:
                self._fresh_permutation()
            take = min(needed, self.num_items - self._cursor)
            parts.append(self._perm[self._cursor : self._cursor + take])
            self._cursor += take
            needed -= take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def epoch(self, start: int = 0) -> Iterator[Tensor]:
        """len(self) full batches starting from a fresh permutation, so every index appears at least once.

        Lazy: the sampler's state advances as batches are consumed, so a mid-epoch state_dict is exact; restored
        from one, `epoch(start=<batches already served>)` serves the rest of that epoch.
        """
        if start == 0:
            self._perm = None
        for _ in range(len(self) - start):
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        perm = None if self._perm is None else self._perm.cpu()  # checkpoint path, not a step
        return {"num_items": self.num_items, "batch_size": self.batch_size, "perm": perm, "cursor": self._cursor,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = (state["num_items"], state["batch_size"])
        if saved != (self.num_items, self.batch_size):
            raise ValueError(f"BatchSampler state is for (num_items, batch_size) = {saved}, "
                             f"this sampler has {(self.num_items, self.batch_size)}")
        self._perm = None if state["perm"] is None else state["perm"].to(self.device)
        self._cursor = int(state["cursor"])
        if "generator" in state:
            self.generator.set_state(state["generator"])
