"""Searches without training, beside ENAS in the same harness:
- `naswot` (Mellor et al. 2021, naswot.md §7a): naswot.num_samples uniform architectures, each scored at a fresh
  initialisation on one training minibatch; the best score wins;
- `params`: the largest of naswot.num_samples uniform architectures at the search skeleton. A baseline every
  search should beat: no zero-cost proxy beats parameter count consistently (issue 14, naswot.md);
- `random_pick`: one uniform architecture. The chance level.
Each writes best_arch.json and result.json like a search (and scores.jsonl), so the report compares them all.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Sequence

from enas.artefacts import pictures, publish, write_result
from enas.build import (benchmark_lookup, build_dataset, build_sampler, build_space, configure_backends,
                        naswot_judge, resolve_device, skeleton_kwargs, skeleton_params)
from enas.config import Config
from enas.data import Dataset
from enas.derive import BEST_ARCH_NAME
from enas.drawing import plot_histogram
from enas.files import write_json_atomic
from enas.naswot import SCORES_NAME, Scored, rank, score_json, write_scores
from enas.rank_check import proxy_result
from enas.tracking import Tracker

log = logging.getLogger(__name__)
TRAINING_FREE = ("naswot", "params", "random_pick")
SCORE_NAMES = {"naswot": "NASWOT score (log|det K|)", "params": "parameters at the search skeleton",
               "random_pick": "parameters at the search skeleton"}


class ParamsJudge:
    """Architectures scored by their parameter count, `count_params(arch)` (build.skeleton_params)."""

    def __init__(self, count_params: Callable[[object], int]):
        self.count_params = count_params

    def __call__(self, archs: Sequence, on_scored: Callable[[int, Scored], None] | None = None) -> list[Scored]:
        results = []
        for i, arch in enumerate(archs):
            start = time.perf_counter()
            params = self.count_params(arch)
            results.append(Scored(arch, float(params), params, time.perf_counter() - start))
            if on_scored is not None:
                on_scored(i, results[-1])
        return results


def score_judge(name: str, cfg: Config, data: Dataset):
    """The training-free judge `name`: "naswot" (NASWOT at the search skeleton) or "params" (the parameter count
    there)."""
    return naswot_judge(cfg, data) if name == "naswot" else ParamsJudge(lambda arch: skeleton_params(cfg, data, arch))


def prefilter_judge(cfg: Config, data: Dataset):
    """derive.prefilter's judge, None when off."""
    return score_judge(cfg.derive.prefilter, cfg, data) if cfg.derive.prefilter else None


def run_training_free(cfg: Config, resolved_config: dict) -> dict:
    start, strategy = time.perf_counter(), cfg.trainer.strategy
    run_dir = Path(cfg.paths.output_dir)
    device = resolve_device(cfg.device)
    configure_backends(device, cfg.deterministic)
    data = build_dataset(cfg.data, device)
    describe = benchmark_lookup(cfg)
    sampler = build_sampler(cfg, build_space(cfg, data), device)
    judge = score_judge("naswot" if strategy == "naswot" else "params", cfg, data)  # random_pick: counted only
    tracker = Tracker(run_dir, cfg.logger, resolved_config)
    try:
        archs, _ = sampler.sample(1 if strategy == "random_pick" else cfg.naswot.num_samples)
        log.info("%s: %d uniform %s architecture(s), skeleton %s, on %s", strategy, len(archs),
                 cfg.search_space.name, skeleton_kwargs(cfg, data), device)
        best = [float("-inf")]

        def on_scored(i: int, s: Scored) -> None:
            best[0] = max(best[0], s.score)
            tracker.log(_metrics(strategy, s, best[0]), step=i)
            if (i + 1) % max(1, len(archs) // 10) == 0:
                log.info("%s %d/%d  best score %.4g", strategy, i + 1, len(archs), best[0])

        return _report(cfg, data, judge(archs, on_scored), describe, run_dir, tracker, start)
    finally:
        tracker.finish()


def _metrics(strategy: str, s: Scored, best: float) -> dict:
    """One candidate's record; -inf scores (singular K) are left out rather than written as non-standard JSON."""
    scores = {f"{strategy}/score": s.score, f"{strategy}/best_score": best}
    singular = {f"{strategy}/singular": int(s.score == float("-inf"))} if strategy == "naswot" else {}
    return {**{k: v for k, v in scores.items() if v > float("-inf")}, **singular,
            f"{strategy}/params": s.params, f"{strategy}/time_s": s.time_s}


def _report(cfg: Config, data: Dataset, scored: list[Scored], describe, run_dir: Path, tracker: Tracker,
            start: float) -> dict:
    strategy = cfg.trainer.strategy
    best, singular = rank(scored)[0], sum(s.score == float("-inf") for s in scored)
    looked_up = describe(best.arch)
    log.info("best architecture (%s %.6g, %s parameters at the search skeleton%s):\n%s", SCORE_NAMES[strategy],
             best.score, f"{best.params:,}", f"; {singular} of {len(scored)} singular" if strategy == "naswot" else "",
             best.arch)
    write_json_atomic(run_dir / BEST_ARCH_NAME, {**best.arch.to_json(), f"{strategy}_score": score_json(best.score),
                                                 "params": best.params, "source": strategy, **looked_up})
    tracker.summary({f"{strategy}/best_score": score_json(best.score), f"{strategy}/best_params": best.params,
                     **({"naswot/num_singular": singular} if strategy == "naswot" else {})})
    histogram = plot_histogram([s.score for s in scored], run_dir / f"{strategy}_scores.png", SCORE_NAMES[strategy],
                               f"{len(scored)} {cfg.search_space.name} architectures") if len(scored) > 1 else None
    artefacts = {"metrics": str(run_dir / "metrics.jsonl"), "scores": str(write_scores(run_dir / SCORES_NAME, scored, describe)),
                 "best_arch": str(run_dir / BEST_ARCH_NAME), **({"histogram": str(histogram)} if histogram else {}),
                 **pictures(run_dir, best.arch, "best_arch")}
    wall_time = round(time.perf_counter() - start, 2)  # the search, not the proxy retrain
    result = write_result(run_dir, {
        "mode": cfg.mode, "space": cfg.search_space.name, "strategy": strategy,
        "best_arch": best.arch.to_enas_string(), "best_score": score_json(best.score), "best_params": best.params,
        **looked_up, **proxy_result(cfg, data, best.arch, run_dir), "num_scored": len(scored), "seed": cfg.seed,
        "skeleton": skeleton_kwargs(cfg, data),
        **({"num_singular": singular, "batch_size": cfg.naswot.batch_size} if strategy == "naswot" else {}),
        "scoring_time_s": round(sum(s.time_s for s in scored), 2), "wall_time_s": wall_time, "artefacts": artefacts})
    tracker.log_images({f"{strategy}_scores": histogram} if histogram else {})
    publish(tracker, run_dir, result["artefacts"], ("best_arch", "scores"))
    return result
