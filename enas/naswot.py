"""NASWOT, "Neural Architecture Search without Training" (Mellor et al., ICML 2021): the score of a network at
initialisation on one minibatch, and the judge that scores many architectures, each built fresh at one skeleton.

Reference: shared/reference/naswot.md §1 (the score as BayesWatch/nas-without-training `--score hook_logdet`
computes it), §6 (pitfalls), §7 (use here). For each image the inputs of every `nn.ReLU` module (matched with
isinstance) are binarised at > 0; K[i, j] = number of those units where images i and j agree = N_A - Hamming
distance of their codes; the score is log|det K| (`torch.linalg.slogdet`), higher is better. Where we differ from
the official code, on purpose:
- one forward pass, as NASLib's `nwot` (equal to the official two passes when every ReLU reaches the logits); the
  network runs in eval mode (no dropout, drop-path or aux head) with every BatchNorm on batch statistics, as the
  final code's train mode does, and its running statistics are left untouched;
- each call of an nn.ReLU module counts once (the official `"ReLU" in str(type(m))` also hooks wrappers such as
  ReLUConvBN, counting their units twice); functional `F.relu` is invisible, so networks use modules;
- K accumulates in float64 on the device with autocast off (fp16 counts are inexact above 2048); a singular K
  scores -inf and ranks last (the official code scored a failure 0 or NaN and swallowed layer errors).
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from enas.augment import normalise
from enas.data import DataError, Dataset
from enas.files import write_text_atomic

log = logging.getLogger(__name__)
SCORES_NAME = "scores.jsonl"
EXACT_FP32 = 2 ** 24  # float32 dot products of 0/1 codes are exact integers below this many units per layer
SINGULAR_RTOL = 1e-10  # K is singular when its smallest eigenvalue is at most this share of its largest


@contextmanager
def _batch_statistics_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode, except that every BatchNorm normalises with the batch's statistics and updates nothing: with its
    running_mean and running_var detached (None) a BN uses batch statistics and has nowhere to write them. The very
    same buffer tensors, and every module's training flag, are put back afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    saved = [(m.running_mean, m.running_var) for m in bns]
    model.eval()
    try:
        for bn in bns:
            bn.running_mean = bn.running_var = None
        yield
    finally:
        for bn, (mean, var) in zip(bns, saved):
            bn.running_mean, bn.running_var = mean, var
        for module, mode in modes:
            module.training = mode


def naswot_kernel(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, int]:
    """K (float64 [B, B], on the images' device) and N_A, the ReLU units per image it counts, from one forward
    pass. Parameters, buffers, training flags and the global random state are left as they were."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(f"{type(model).__name__} has no nn.ReLU modules; NASWOT reads the inputs of nn.ReLU "
                         "modules (F.relu / torch.relu calls are invisible to it): use nn.ReLU modules")
    batch = images.shape[0]
    kernel = torch.zeros(batch, batch, dtype=torch.float64, device=images.device)
    units = [0]

    def add_codes(module: nn.Module, args: tuple) -> None:
        codes = (args[0].detach() > 0).flatten(1)  # flatten, not view: channels_last inputs (§6.3)
        n = codes.shape[1]
        c = codes.to(torch.float32 if n < EXACT_FP32 else torch.float64)  # counts stay exact integers (§6.4)
        ones = c.sum(1, dtype=torch.float64)
        # units where images i and j agree: both on, (c cᵀ)_ij, plus both off, n - ones_i - ones_j + (c cᵀ)_ij
        kernel.add_(2 * (c @ c.T).double() - ones[:, None] - ones[None, :] + n)
        units[0] += n

    devices = [images.device] if images.device.type == "cuda" else []
    handles = []
    try:
        # pre-hooks see the input before an in-place ReLU overwrites it (its sign pattern is the output's anyway)
        handles = [m.register_forward_pre_hook(add_codes) for m in relus]
        with torch.random.fork_rng(devices), torch.no_grad(), \
                torch.autocast(images.device.type, enabled=False), _batch_statistics_eval(model):
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return kernel, units[0]


def log_abs_det(kernel: torch.Tensor) -> float:
    """log|det K| as a float (the one host sync); -inf when K is singular.

    K is symmetric positive semi-definite with integer entries, so a singular K has an eigenvalue that is zero up
    to rounding. LU's pivots need not show it: with MKL on an Intel Xeon, a K with two equal rows gave slogdet sign
    1 and log|det| 20.4 (its smallest eigenvalue: -7e-18 of the largest; a regular K's in the tests: 0.09)."""
    sign, value = torch.linalg.slogdet(kernel)
    eigenvalues = torch.linalg.eigvalsh(kernel)  # ascending
    singular = (sign == 0) | (eigenvalues[0] <= SINGULAR_RTOL * eigenvalues[-1])
    score = torch.where(singular, float("-inf"), value).item()
    if math.isnan(score):
        raise FloatingPointError("NASWOT kernel has a NaN log-determinant; K holds counts, so this is a bug")
    return score


def naswot_score(model: nn.Module, images: torch.Tensor) -> float:
    """The NASWOT score of `model` (any nn.Module whose activations are nn.ReLU modules) on `images`, one batch
    (the model's input, e.g. normalised [B, C, H, W]). -inf, with a warning, when K is singular (e.g. two
    identical images). Leaves the model's parameters, buffers and modes and the global random state unchanged."""
    kernel, units = naswot_kernel(model, images)
    score = log_abs_det(kernel)
    if score == float("-inf"):
        log.warning("NASWOT kernel is singular (%d images, %d ReLU units): score -inf, ranked last; duplicated "
                    "images or too few units make the codes linearly dependent", images.shape[0], units)
    return score


def scoring_batch(data: Dataset, batch_size: int, seed: int,
                  memory_format: torch.memory_format = torch.channels_last) -> torch.Tensor:
    """One training minibatch for every candidate: `batch_size` distinct images drawn with `seed`, normalised with
    the training statistics, not augmented (§1.1)."""
    if not 2 <= batch_size <= len(data.train):
        raise DataError(f"naswot.batch_size={batch_size}; allowed 2..{len(data.train)} (the training split's size)")
    picked = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:batch_size]
    return normalise(data.train.x[picked.to(data.train.x.device)], data.mean, data.std, memory_format=memory_format)


def score_json(score: float) -> float | None:
    """A score as strict JSON: -inf (singular K) becomes null."""
    return score if math.isfinite(score) else None


@dataclass(frozen=True)
class Scored:
    arch: object
    score: float  # -inf: singular kernel
    params: int  # parameters of the network at the scoring skeleton
    time_s: float  # build + score

    def to_json(self, index: int) -> dict:
        return {"index": index, "score": score_json(self.score), "singular": self.score == float("-inf"),
                "params": self.params, "time_s": round(self.time_s, 4), "enas_string": self.arch.to_enas_string(),
                "arch": self.arch.to_json()}


class NaswotJudge:
    """NASWOT scores of architectures, each built fresh by `make_network(arch)` at one skeleton and scored on the
    same `images`. Initial weights come from the global generator seeded with `seed` inside a fork: the caller's
    random state is untouched and one seed fixes every candidate's initialisation."""

    def __init__(self, make_network: Callable[[object], nn.Module], images: torch.Tensor, seed: int,
                 memory_format: torch.memory_format = torch.channels_last):
        self.make_network, self.images, self.seed, self.memory_format = make_network, images, seed, memory_format

    def __call__(self, archs: Sequence, on_scored: Callable[[int, Scored], None] | None = None) -> list[Scored]:
        device = self.images.device
        results = []
        with torch.random.fork_rng([device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            for i, arch in enumerate(archs):
                start = time.perf_counter()
                with device:  # built on the device: no host init and copy per candidate
                    net = self.make_network(arch).to(memory_format=self.memory_format)
                score = naswot_score(net, self.images)  # syncs once: the candidate's time is real
                results.append(Scored(arch, score, sum(p.numel() for p in net.parameters()),
                                      time.perf_counter() - start))
                if on_scored is not None:
                    on_scored(i, results[-1])
        return results


def rank(scored: Sequence[Scored]) -> list[Scored]:
    """Best first; -inf last; ties keep sampling order."""
    return sorted(scored, key=lambda s: -s.score)


def write_scores(path: str | Path, scored: Sequence[Scored], describe=lambda arch: {}) -> Path:
    """`scores.jsonl`: every candidate in sampling order with its score, parameter count and time (and what
    `describe(arch)` adds: NAS-Bench-201 accuracies)."""
    write_text_atomic(path, "".join(json.dumps({**s.to_json(i), **describe(s.arch)}, allow_nan=False) + "\n"
                                    for i, s in enumerate(scored)))
    return Path(path)
