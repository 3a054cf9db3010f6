"""Derive the final architecture: sample N children from the trained policy (plus its most likely one), score
each on the whole validation split with the shared weights, rank, and export the winners.

Reference: enas_reference.md §5 (paper Sec. 2.2 "Deriving Architectures": sample several models, reward each,
re-train only the best; the official code has no such script, melodyguan/enas#105). We score on the whole
validation split rather than one minibatch, since one 160-image batch ranks children mostly by noise.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from enas.config import DeriveConfig
from enas.data import Dataset
from enas.files import write_json_atomic
from enas.judges import split_accuracy

log = logging.getLogger(__name__)
DERIVED_NAME, BEST_ARCH_NAME = "derived.json", "best_arch.json"


@dataclass(frozen=True)
class Candidate:
    arch: object
    valid_acc: float
    source: str  # "sampled" or "most_likely"

    def to_json(self, rank: int) -> dict:
        return {"rank": rank, "valid_acc": self.valid_acc, "source": self.source,
                "enas_string": self.arch.to_enas_string(), "arch": self.arch.to_json()}


def candidates(sampler, num_samples: int, include_greedy: bool) -> list[tuple[object, str]]:
    """Sampled architectures plus the policy's most likely one, without duplicates (first source wins)."""
    archs = [(a, "sampled") for a in sampler.sample(num_samples)[0]] if num_samples else []
    greedy = sampler.most_likely() if include_greedy else None
    if greedy is not None:
        archs.insert(0, (greedy, "most_likely"))
    unique: dict[str, tuple[object, str]] = {}
    for arch, source in archs:
        unique.setdefault(arch.to_enas_string(), (arch, source))
    return list(unique.values())


def derive(net: nn.Module, sampler, data: Dataset, cfg: DeriveConfig,
           memory_format=torch.channels_last) -> list[Candidate]:
    """Score the candidates on the validation split; best first. One host sync for all scores."""
    pool = candidates(sampler, cfg.num_samples, cfg.include_greedy)
    if not pool:
        raise ValueError("derive has nothing to score: derive.num_samples is 0 and the sampler has no most "
                         "likely architecture (random search); set derive.num_samples >= 1")
    log.info("scoring %d candidate architectures on %d validation images", len(pool),
             min(len(data.valid), cfg.max_valid_images or len(data.valid)))
    scores = torch.stack([split_accuracy(net, lambda a=arch: a, data.valid, data.mean, data.std, cfg.batch_size,
                                         memory_format, cfg.max_valid_images) for arch, _ in pool]).tolist()
    ranked = sorted(zip(pool, scores), key=lambda item: -item[1])
    return [Candidate(arch, acc, source) for (arch, source), acc in ranked]


def write_derived(run_dir: str | Path, ranked: list[Candidate], top_k: int) -> dict[str, str]:
    """`derived.json` (top-k with scores) and `best_arch.json` (the winner, loadable as an architecture file)."""
    run_dir = Path(run_dir)
    write_json_atomic(run_dir / DERIVED_NAME, {"num_scored": len(ranked),
                                               "top": [c.to_json(r) for r, c in enumerate(ranked[:top_k], 1)]})
    best = ranked[0]
    write_json_atomic(run_dir / BEST_ARCH_NAME, {**best.arch.to_json(), "valid_acc": best.valid_acc,
                                                 "source": best.source})
    return {"derived": str(run_dir / DERIVED_NAME), "best_arch": str(run_dir / BEST_ARCH_NAME)}
