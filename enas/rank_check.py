"""Does the supernet rank architectures? Kendall tau between the shared-weight scores of derive's top candidates and a
reference: their NAS-Bench-201 accuracy when a benchmark is configured, otherwise their accuracy after a short
standalone proxy retrain (the retrain recipe at the search skeleton for derive.rank_check_epochs epochs, evaluated
on the validation split). On by `derive.rank_check_k=<k>`; the result lands in derived.json and result.json.
`derive.proxy_epochs=<n>` trains every strategy's winner the same way (`proxy_acc` in result.json), so that a
sweep's report compares strategies on one standalone measure.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from enas.build import skeleton_kwargs
from enas.checkpoint import CHECKPOINT_NAME, load_checkpoint
from enas.config import Config
from enas.data import Dataset
from enas.derive import Candidate, kendall_tau
from enas.networks import build_network
from enas.retrain import RetrainLoop
from enas.tracking import Tracker

log = logging.getLogger(__name__)
BENCHMARK_REFERENCE = ("cifar10_valid", "cifar10_test")  # the first one the benchmark holds


def proxy_accuracy(cfg: Config, data: Dataset, arch, run_dir: Path, epochs: int) -> float:
    """Validation accuracy of `arch` trained from scratch at the search skeleton (aux head and drop-path off) for
    `epochs` epochs of the retrain recipe, seeded with cfg.seed; its run directory resumes like any training."""
    recipe = dataclasses.replace(cfg.retrain, epochs=epochs, aux_weight=0.0, drop_path_keep=1.0, train_on_valid=False)
    with torch.random.fork_rng([data.train.x.device] if data.train.x.device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        net = build_network(arch, **skeleton_kwargs(cfg, data)).to(data.train.x.device)
        checkpoint = run_dir / CHECKPOINT_NAME
        state = load_checkpoint(checkpoint, data.train.x.device) if checkpoint.exists() else None
        tracker = Tracker(run_dir, resume_epoch=state["epoch"] if state else None)
        try:
            loop = RetrainLoop(net, data, data.valid, "valid", recipe, run_dir, tracker, seed=cfg.seed)
            if state is not None:
                loop.load_state_dict(state)
            record = loop.run()
        finally:
            tracker.finish()
    return float(record["valid/acc"])


def rank_check(cfg: Config, data: Dataset, ranked: list[Candidate], describe, run_dir: Path) -> dict:
    """Tau over the top derive.rank_check_k candidates (by shared-weight accuracy) against the reference."""
    judged = [c for c in ranked if c.valid_acc is not None][:cfg.derive.rank_check_k]
    looked_up = [describe(c.arch).get("benchmark") for c in judged]
    key = next((k for k in BENCHMARK_REFERENCE if looked_up and looked_up[0] and k in looked_up[0]), None)
    if key is not None:
        reference, name = [acc[key] for acc in looked_up], f"benchmark {key}"
    else:
        name = f"proxy retrain ({cfg.derive.rank_check_epochs} epochs at the search skeleton, validation accuracy)"
        reference = []
        for i, c in enumerate(judged):
            reference.append(proxy_accuracy(cfg, data, c.arch, run_dir / "rank_check" / f"{i:03d}",
                                            cfg.derive.rank_check_epochs))
            log.info("rank check %d/%d: shared-weight %.4f, proxy %.4f  %s", i + 1, len(judged), c.valid_acc,
                     reference[-1], c.arch.to_enas_string())
    tau = kendall_tau([c.valid_acc for c in judged], reference)
    log.info("rank check: Kendall tau %s between shared-weight accuracy and %s over %d candidates",
             "n/a" if tau is None else f"{tau:.3f}", name, len(judged))
    return {"kendall_tau": tau, "reference": name, "num_candidates": len(judged),
            "candidates": [{"enas_string": c.arch.to_enas_string(), "valid_acc": c.valid_acc, "reference": r}
                           for c, r in zip(judged, reference)]}


def proxy_result(cfg: Config, data: Dataset, arch, run_dir: Path) -> dict:
    """{"proxy_acc", "proxy_epochs", "proxy_time_s"} for the winner when derive.proxy_epochs > 0, else {}."""
    if not cfg.derive.proxy_epochs:
        return {}
    start = time.perf_counter()
    accuracy = proxy_accuracy(cfg, data, arch, run_dir / "proxy", cfg.derive.proxy_epochs)
    log.info("proxy retrain of the winner: validation accuracy %.4f after %d epochs at the search skeleton", accuracy,
             cfg.derive.proxy_epochs)
    return {"proxy_acc": accuracy, "proxy_epochs": cfg.derive.proxy_epochs,
            "proxy_time_s": round(time.perf_counter() - start, 2)}
