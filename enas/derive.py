"""Derive the final architecture: sample N children from the trained policy (plus its most likely one), score
each on the whole validation split with the shared weights, rank, and export the winners.

Reference: enas_reference.md §5 (paper Sec. 2.2 "Deriving Architectures": sample several models, reward each,
re-train only the best; the official code has no such script, melodyguan/enas#105). We score on the whole
validation split rather than one minibatch, since one 160-image batch ranks children mostly by noise.

derive.prefilter=naswot|params (shared/reference/naswot.md §7b, AREA-like): sample derive.prefilter_samples
candidates, keep the derive.prefilter_top_k best by NASWOT score (each built fresh at the search skeleton) or by
parameter count there, and rank only those with the shared weights; derived.json then lists every candidate with
both scores (`naswot_score` or `params_score`) and their Kendall tau.
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
from enas.judges import supernet_scores
from enas.naswot import score_json

log = logging.getLogger(__name__)
DERIVED_NAME, BEST_ARCH_NAME = "derived.json", "best_arch.json"


@dataclass(frozen=True)
class Candidate:
    arch: object
    valid_acc: float | None  # None: dropped by the prefilter, never scored with the shared weights
    source: str  # "sampled" or "most_likely"
    prefilter_score: float | None = None  # derive.prefilter only: NASWOT score (-inf: singular kernel) or params
    valid_loss: float | None = None  # mean validation cross-entropy with the shared weights (None when not scored)

    def score(self, by: str) -> float:
        """The ranking score, higher is better: derive.score=acc (accuracy) or loss (minus the cross-entropy)."""
        return self.valid_acc if by == "acc" else -self.valid_loss

    def to_json(self, rank: int, prefilter: str | None = None) -> dict:
        """prefilter: the derive.prefilter whose score to record, as `<prefilter>_score`."""
        pre = {} if prefilter is None else {f"{prefilter}_score": score_json(self.prefilter_score)}
        return {"rank": rank, "valid_acc": self.valid_acc, "valid_loss": self.valid_loss, **pre,
                "source": self.source,
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


def derive(net: nn.Module, sampler, data: Dataset, cfg: DeriveConfig, memory_format=torch.channels_last,
           prefilter=None) -> list[Candidate]:
    """Score the candidates on the validation split, best first by derive.score. One host sync for all scores. With
    derive.prefilter (`prefilter`: a training-free judge, enas.training_free.prefilter_judge) only its top-k are scored;
    the dropped candidates follow, valid_acc None, best prefilter score first."""
    pool = candidates(sampler, cfg.prefilter_samples if cfg.prefilter else cfg.num_samples, cfg.include_greedy)
    if not pool:
        raise ValueError("derive has nothing to score: derive.num_samples is 0 and the sampler has no most "
                         "likely architecture (random search); set derive.num_samples >= 1")
    dropped, prefilter_scores = [], {}
    if cfg.prefilter:
        if prefilter is None:
            raise ValueError(f"derive.prefilter={cfg.prefilter} needs its judge (enas.training_free.prefilter_judge)")
        pool, dropped, prefilter_scores = prefilter_pool(pool, prefilter, cfg.prefilter_top_k, cfg.prefilter)
    log.info("scoring %d candidate architectures on %d validation images", len(pool),
             min(len(data.valid), cfg.max_valid_images or len(data.valid)))
    scores = supernet_scores(net, [arch for arch, _ in pool], data.valid, data.mean, data.std, cfg.batch_size,
                             memory_format, cfg.max_valid_images)
    pre = lambda arch: prefilter_scores.get(arch.to_enas_string())  # noqa: E731
    scored = [Candidate(arch, acc, source, pre(arch), loss) for (arch, source), (acc, loss) in zip(pool, scores)]
    return (sorted(scored, key=lambda c: -c.score(cfg.score))
            + [Candidate(arch, None, source, pre(arch)) for arch, source in dropped])


def prefilter_pool(pool: list[tuple[object, str]], judge, top_k: int, name: str):
    """(the top_k of `pool` by the judge's score, the rest, {enas string: score}); both lists best first."""
    log.info("prefilter: %s-scoring %d candidate architectures, keeping the best %d", name, len(pool), top_k)
    scored = judge([arch for arch, _ in pool])
    order = sorted(range(len(pool)), key=lambda i: -scored[i].score)
    scores = {pool[i][0].to_enas_string(): scored[i].score for i in order}
    return [pool[i] for i in order[:top_k]], [pool[i] for i in order[top_k:]], scores


def kendall_tau(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b of two score lists (ties as in scipy.stats.kendalltau; -inf compares as the lowest);
    None when fewer than two items or either list is constant."""
    a, b = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    sign_a = ((a[:, None] > a[None]).int() - (a[:, None] < a[None]).int()).triu(1)
    sign_b = ((b[:, None] > b[None]).int() - (b[:, None] < b[None]).int()).triu(1)
    untied_a, untied_b = sign_a.count_nonzero().item(), sign_b.count_nonzero().item()
    if not untied_a or not untied_b:
        return None
    return (sign_a * sign_b).sum().item() / (untied_a * untied_b) ** 0.5


def write_derived(run_dir: str | Path, ranked: list[Candidate], cfg: DeriveConfig, describe=lambda arch: {},
                  rank_check: dict | None = None) -> dict[str, str]:
    """`derived.json` (the top derive.top_k with their scores, the ranking score, and the rank check when one ran) and
    `best_arch.json` (the winner, loadable as an architecture file). `describe(arch)` adds to each candidate's record
    (NAS-Bench-201 accuracies)."""
    run_dir = Path(run_dir)
    judged = [c for c in ranked if c.valid_acc is not None]
    derived = {"num_scored": len(judged), "score": cfg.score,
               "top": [{**c.to_json(r, cfg.prefilter), **describe(c.arch)}
                       for r, c in enumerate(judged[:cfg.top_k], 1)]}
    if rank_check is not None:
        derived["rank_check"] = rank_check
    if cfg.prefilter:
        tau = kendall_tau([c.score(cfg.score) for c in judged], [c.prefilter_score for c in judged])
        derived["prefilter"] = {"method": cfg.prefilter, "num_candidates": len(ranked), "num_kept": len(judged),
                                "kendall_tau": tau,  # the shared-weight score vs the prefilter's, over the kept ones
                                "candidates": [c.to_json(r, cfg.prefilter) for r, c in enumerate(ranked, 1)]}
        log.info("prefilter: Kendall tau between the shared-weight %s and the %s score over the %d kept: %s",
                 cfg.score, cfg.prefilter, len(judged), "n/a" if tau is None else f"{tau:.3f}")
    write_json_atomic(run_dir / DERIVED_NAME, derived)
    best = ranked[0]
    write_json_atomic(run_dir / BEST_ARCH_NAME, {**best.arch.to_json(), "valid_acc": best.valid_acc,
                                                 "valid_loss": best.valid_loss, "source": best.source,
                                                 **describe(best.arch)})
    return {"derived": str(run_dir / DERIVED_NAME), "best_arch": str(run_dir / BEST_ARCH_NAME)}
