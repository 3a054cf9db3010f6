"""Does the supernet rank architectures? Kendall tau between the shared-weight scores of derive's top candidates and a
reference: their NAS-Bench-201 accuracy when a benchmark is configured, otherwise their accuracy after a short
standalone proxy retrain (the retrain recipe at the search skeleton for derive.rank_check_epochs epochs, evaluated
on the validation split). On by `derive.rank_check_k=<k>`; the result lands in derived.json and result.json.
`derive.proxy_epochs=<n>` trains every strategy's winner the same way (`proxy_acc` in result.json), so that a
sweep's report compares strategies on one standalone measure.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import time
from pathlib import Path

import torch

from enas.artefacts import write_result
from enas.build import (build_dataset, build_space, build_supernet, configure_backends, resolve_device,
                        skeleton_kwargs)
from enas.checkpoint import CHECKPOINT_NAME, load_checkpoint
from enas.config import Config
from enas.data import Dataset
from enas.derive import Candidate, kendall_tau
from enas.files import write_json_atomic
from enas.judges import supernet_scores
from enas.networks import arch_from_json, build_network
from enas.optim import load_search_weights
from enas.retrain import RetrainLoop, short_recipe
from enas.tracking import Tracker

log = logging.getLogger(__name__)
BENCHMARK_REFERENCE = ("cifar10_valid", "cifar10_test")  # the first one the benchmark holds
REFERENCE_NAME = "reference.json"


def proxy_accuracy(cfg: Config, data: Dataset, arch, run_dir: Path, epochs: int, seed: int | None = None) -> float:
    """Validation accuracy of `arch` trained from scratch at the search skeleton (aux head and drop-path off) for
    `epochs` epochs of the retrain recipe with its learning rate in one cosine cycle over those epochs, seeded with
    `seed` (default cfg.seed); its run directory resumes like any training."""
    seed = cfg.seed if seed is None else seed
    recipe = short_recipe(cfg.retrain, epochs)
    with torch.random.fork_rng([data.train.x.device] if data.train.x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        net = build_network(arch, **skeleton_kwargs(cfg, data)).to(data.train.x.device)
        checkpoint = run_dir / CHECKPOINT_NAME
        state = load_checkpoint(checkpoint, data.train.x.device) if checkpoint.exists() else None
        tracker = Tracker(run_dir, resume_epoch=state["epoch"] if state else None)
        try:
            loop = RetrainLoop(net, data, data.valid, "valid", recipe, run_dir, tracker, seed=seed)
            if state is not None:
                loop.load_state_dict(state)
            record = loop.run() or _last_record(run_dir)  # a finished run (resumed after it ended) trains nothing
        finally:
            tracker.finish()
    return float(record["valid/acc"])


def _last_record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def rank_check(cfg: Config, data: Dataset, ranked: list[Candidate], describe, run_dir: Path) -> dict:
    """Tau over the top derive.rank_check_k candidates (by shared-weight accuracy) against the reference."""
    judged = [c for c in ranked if c.valid_acc is not None][:cfg.derive.rank_check_k]
    by = cfg.derive.score
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
            log.info("rank check %d/%d: shared-weight %s %.4f, proxy %.4f  %s", i + 1, len(judged), by, c.score(by),
                     reference[-1], c.arch.to_enas_string())
    tau = kendall_tau([c.score(by) for c in judged], reference)
    log.info("rank check: Kendall tau %s between the shared-weight %s and %s over %d candidates",
             "n/a" if tau is None else f"{tau:.3f}", by, name, len(judged))
    return {"kendall_tau": tau, "score": by, "reference": name, "num_candidates": len(judged),
            "candidates": [{"enas_string": c.arch.to_enas_string(), "valid_acc": c.valid_acc,
                            "valid_loss": c.valid_loss, "reference": r} for c, r in zip(judged, reference)]}


def proxy_result(cfg: Config, data: Dataset, arch, run_dir: Path) -> dict:
    """{"proxy_acc", "proxy_epochs", "proxy_time_s"} for the winner when derive.proxy_epochs > 0, else {}. With
    derive.proxy_seeds = n > 1 the winner trains n times (seeds cfg.seed, cfg.seed + 1, ...; the first in
    run_dir/proxy, the others in proxy_seed<k>): proxy_acc is their mean, with "proxy_accs" and "proxy_acc_std"."""
    if not cfg.derive.proxy_epochs:
        return {}
    start, epochs = time.perf_counter(), cfg.derive.proxy_epochs
    accuracies = [proxy_accuracy(cfg, data, arch, run_dir / ("proxy" if k == 0 else f"proxy_seed{k}"), epochs,
                                 seed=cfg.seed + k) for k in range(cfg.derive.proxy_seeds)]
    mean = statistics.fmean(accuracies)
    spread = {"proxy_accs": accuracies, "proxy_acc_std": statistics.stdev(accuracies)} if len(accuracies) > 1 else {}
    log.info("proxy retrain of the winner: validation accuracy %.4f after %d epochs at the search skeleton (seeds "
             "from %d: %s)", mean, epochs, cfg.seed, ", ".join(f"{a:.4f}" for a in accuracies))
    return {"proxy_acc": mean, **spread, "proxy_epochs": epochs, "proxy_time_s": round(time.perf_counter() - start, 2)}


# --- mode=rank_check ----------------------------------------------------------------------------------------------
def run_rank_check(cfg: Config, resolved_config: dict) -> dict:
    """`rank_check.num_archs` uniform architectures (fixed by `rank_check.seed`), each trained standalone with the
    proxy recipe, their accuracies written to a reference JSON (or read from `rank_check.reference` when it exists:
    a reference set is trained once and reused for every supernet); with `load_from=<search run>` the supernet of
    that run scores the same architectures on the validation split and the Kendall tau between the two is reported."""
    start, run_dir = time.perf_counter(), Path(cfg.paths.output_dir)
    device = resolve_device(cfg.device)
    configure_backends(device, cfg.deterministic)
    data = build_dataset(cfg.data, device)
    space = build_space(cfg, data)
    reference_path = Path(cfg.rank_check.reference) if cfg.rank_check.reference else run_dir / REFERENCE_NAME
    reference = _standalone_reference(cfg, data, space, reference_path, run_dir)
    archs = [arch_from_json(entry["arch"]) for entry in reference["archs"]]
    standalone = [entry["valid_acc"] for entry in reference["archs"]]
    result = {"mode": "rank_check", "space": cfg.search_space.name, "num_archs": len(archs),
              "reference": str(reference_path), "recipe": reference["recipe"],
              "standalone_valid_acc": {"mean": sum(standalone) / len(standalone), "min": min(standalone),
                                       "max": max(standalone)}}
    if cfg.load_from:
        accs, losses = zip(*_shared_weight_scores(cfg, data, space, archs))
        taus = {"acc": kendall_tau(list(accs), standalone), "loss": kendall_tau([-v for v in losses], standalone)}
        for by, tau in taus.items():
            log.info("Kendall tau %s between the shared-weight %s of %s and standalone accuracy over %d architectures",
                     "n/a" if tau is None else f"{tau:.3f}", by, cfg.load_from, len(archs))
        result.update({"supernet": str(cfg.load_from), "kendall_tau": taus[cfg.derive.score],
                       "score": cfg.derive.score, "kendall_tau_acc": taus["acc"], "kendall_tau_loss": taus["loss"]})
        write_json_atomic(run_dir / "rank_check.json", {**result, "archs": [
            {"enas_string": a.to_enas_string(), "standalone_valid_acc": r, "shared_valid_acc": acc,
             "shared_valid_loss": loss} for a, r, acc, loss in zip(archs, standalone, accs, losses)]})
    return write_result(run_dir, {**result, "wall_time_s": round(time.perf_counter() - start, 2)})


def _standalone_reference(cfg: Config, data: Dataset, space, path: Path, run_dir: Path) -> dict:
    """The reference set: read from `path`, or trained now (each architecture resumable in its own folder) and
    written there, entry by entry, so an interrupted run keeps what it finished."""
    recipe = {"space": cfg.search_space.name, "skeleton": skeleton_kwargs(cfg, data), "epochs": cfg.rank_check.epochs,
              "retrain": dataclasses.asdict(cfg.retrain), "seed": cfg.rank_check.seed,
              "train_images": len(data.train), "valid_images": len(data.valid)}
    done = json.loads(path.read_text()) if path.exists() else {"recipe": recipe, "archs": []}
    if done["recipe"]["space"] != cfg.search_space.name:
        raise ValueError(f"rank_check.reference={str(path)!r} holds {done['recipe']['space']} architectures but "
                         f"search_space={cfg.search_space.name}")
    if len(done["archs"]) >= cfg.rank_check.num_archs:
        return {**done, "archs": done["archs"][:cfg.rank_check.num_archs]}
    generator = torch.Generator().manual_seed(cfg.rank_check.seed)
    archs = [space.sample_uniform(generator) for _ in range(cfg.rank_check.num_archs)]
    for i, arch in enumerate(archs[len(done["archs"]):], start=len(done["archs"])):
        t0 = time.perf_counter()
        accuracy = proxy_accuracy(cfg, data, arch, run_dir / "standalone" / f"{i:03d}", cfg.rank_check.epochs)
        done["archs"].append({"arch": arch.to_json(), "enas_string": arch.to_enas_string(), "valid_acc": accuracy,
                              "train_time_s": round(time.perf_counter() - t0, 2)})
        write_json_atomic(path, done)
        log.info("standalone %d/%d: validation accuracy %.4f in %.0f s  %s", i + 1, len(archs), accuracy,
                 done["archs"][-1]["train_time_s"], arch.to_enas_string())
    return done


def _shared_weight_scores(cfg: Config, data: Dataset, space, archs: list) -> list[list[float]]:
    """[accuracy, mean cross-entropy] of each architecture on the validation split, with the saved shared weights."""
    source = Path(cfg.load_from)
    state = load_checkpoint(source / CHECKPOINT_NAME if source.is_dir() else source, data.train.x.device)
    net = build_supernet(cfg, space).to(data.train.x.device)
    load_search_weights(net, state)
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    net.to(memory_format=memory_format)
    return supernet_scores(net, archs, data.valid, data.mean, data.std, cfg.derive.batch_size, memory_format)
