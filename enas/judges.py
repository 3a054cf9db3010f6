"""Judges: what a sampled architecture scores. Rewards stay device tensors (no host sync per architecture).

Shared-weight accuracy (ENAS, enas_reference.md §3.4): the child's accuracy on one validation minibatch, no
augmentation, BN on batch statistics, and (micro) dropout active as in the official `is_training=True` reward.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from enas.augment import normalise
from enas.data import Split

Batch = tuple[torch.Tensor, torch.Tensor]


@torch.no_grad()
def batch_accuracy(net: nn.Module, arch, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of `x` the child `arch` classifies right, as a 0-d device tensor."""
    logits, _ = net(x, arch)
    return (logits.argmax(1) == y).float().mean()


@torch.no_grad()
def batch_likelihood(net: nn.Module, arch, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """exp(-mean cross-entropy) of the child on `x`: the geometric mean of the probability it gives the right
    class. In (0, 1] like an accuracy (so an EMA baseline started at 0 treats it alike), ranked as the loss."""
    logits, _ = net(x, arch)
    return torch.exp(-F.cross_entropy(logits.float(), y))


BATCH_SCORES = {"acc": batch_accuracy, "loss": batch_likelihood}


@torch.no_grad()
def shared_weight_rewards(net: nn.Module, archs: Sequence, next_batch: Callable[[], Batch],
                          dropout: bool = True, score: str = "acc") -> torch.Tensor:
    """One reward per architecture, each on the next validation minibatch of the stream: tensor [K]. score: "acc"
    (ENAS) or "loss" (exp(-cross-entropy): every image's confidence counts, so it ties less on small batches)."""
    was_training = net.training
    net.train(dropout)
    try:
        return torch.stack([BATCH_SCORES[score](net, arch, *next_batch()) for arch in archs])
    finally:
        net.train(was_training)


def split_accuracy(net: nn.Module, arch_for_batch: Callable[[], object], split: Split, mean, std,
                   batch_size: int, memory_format=torch.channels_last, max_images: int | None = None) -> torch.Tensor:
    """A supernet's accuracy over a whole split (or its first `max_images`), in eval mode (no dropout; search BNs
    still use batch statistics). `arch_for_batch()` gives each batch's architecture: a fixed one, or a sample."""
    return _evaluate(net, lambda x: net(x, arch_for_batch())[0], split, mean, std, batch_size, memory_format,
                     max_images)[0]


def split_scores(net: nn.Module, arch, split: Split, mean, std, batch_size: int, memory_format=torch.channels_last,
                 max_images: int | None = None) -> torch.Tensor:
    """[accuracy, mean cross-entropy] of the supernet's child `arch` over a split, as split_accuracy: the loss is the
    finer ranking score (every image's confidence counts, not only whether its argmax is right)."""
    return _evaluate(net, lambda x: net(x, arch)[0], split, mean, std, batch_size, memory_format, max_images)


def supernet_scores(net: nn.Module, archs: Sequence, split: Split, mean, std, batch_size: int,
                    memory_format=torch.channels_last, max_images: int | None = None) -> list[list[float]]:
    """[accuracy, mean cross-entropy] of each architecture over the split (split_scores), one host sync for all."""
    return torch.stack([split_scores(net, arch, split, mean, std, batch_size, memory_format, max_images)
                        for arch in archs]).tolist()


def network_accuracy(net: nn.Module, split: Split, mean, std, batch_size: int,
                     memory_format=torch.channels_last) -> torch.Tensor:
    """A fixed network's accuracy over a whole split, in eval mode (BN running statistics, no dropout)."""
    return _evaluate(net, lambda x: net(x)[0], split, mean, std, batch_size, memory_format)[0]


@torch.no_grad()
def _evaluate(net: nn.Module, logits_of: Callable[[torch.Tensor], torch.Tensor], split: Split, mean, std,
              batch_size: int, memory_format, max_images: int | None = None) -> torch.Tensor:
    """[accuracy, mean cross-entropy] over the split (or its first max_images), one device tensor."""
    was_training = net.training
    net.eval()
    n = len(split) if max_images is None else min(max_images, len(split))
    sums = torch.zeros(2, device=split.y.device)  # correct, summed loss
    try:
        for start in range(0, n, batch_size):
            x = normalise(split.x[start:start + batch_size][: n - start], mean, std, memory_format=memory_format)
            y = split.y[start:start + batch_size][: n - start]
            logits = logits_of(x).float()
            sums += torch.stack([(logits.argmax(1) == y).sum(), F.cross_entropy(logits, y, reduction="sum")])
    finally:
        net.train(was_training)
    return sums / n
