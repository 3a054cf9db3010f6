"""The run modes, built from the typed config that run.py composes: search (then derive), derive alone,
train (one architecture from scratch) and eval (a trained network). The training-free strategies (naswot, params,
random_pick) run in enas.training_free.

Every run directory ends up with: the resolved config (.hydra/ and config_resolved.yaml), a log, metrics.jsonl,
last.pt and result.json (mode, architecture, accuracy, wall time, artefact paths); a search adds derived.json
and best_arch.json, a final training final.pt.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from enas.artefacts import NETWORK_NAME, pictures, publish, write_result
from enas.build import (benchmark_lookup, build_components, build_dataset, configure_backends,
                        network_kwargs, resolve_device, skeleton_params)
from enas.checkpoint import CHECKPOINT_NAME, load_checkpoint
from enas.config import Config
from enas.data import Dataset, DataError, with_valid_in_train
from enas.derive import derive, write_derived
from enas.distributed import SINGLE, World
from enas.judges import network_accuracy
from enas.nas_rl import run_nas_rl
from enas.networks import build_network, load_arch, load_network, save_network, space_of
from enas.optim import load_search_weights
from enas.progress import ProgressBars
from enas.rank_check import proxy_result, rank_check
from enas.report import build_report
from enas.retrain import RetrainLoop
from enas.search import ControllerSchedule, SearchLoop
from enas.tracking import Tracker
from enas.training_free import TRAINING_FREE, prefilter_judge, run_training_free

log = logging.getLogger(__name__)


def run_search(cfg: Config, resolved_config: dict, world: World = SINGLE) -> dict:
    """world: this process's rank in a data-parallel search (enas.launch starts those); rank 0 alone writes the
    run directory and derives, the others return {} after the last epoch."""
    if cfg.trainer.strategy in TRAINING_FREE:
        return run_training_free(cfg, resolved_config)
    if cfg.trainer.strategy == "nas_rl":  # ranks share out the children (enas.nas_rl_ranks)
        return run_nas_rl(cfg, resolved_config, world)
    start = time.perf_counter()
    run_dir = Path(cfg.paths.output_dir)
    describe = benchmark_lookup(cfg)
    data, _, net, sampler = build_components(cfg)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    state = load_checkpoint(checkpoint_path, data.train.x.device) if cfg.resume and checkpoint_path.exists() else None
    tracker = Tracker(run_dir, cfg.logger, resolved_config, resume_epoch=state["epoch"] if state else None,
                      wandb_id=state.get("wandb_id") if state else None, enabled=world.is_main)
    try:
        loop = SearchLoop(net, sampler, data, cfg.trainer,
                          ControllerSchedule(cfg.controller.num_updates, cfg.controller.num_aggregate),
                          cfg.search_space.aux_weight, run_dir, tracker, seed=cfg.seed,
                          progress=ProgressBars() if world.is_main else None, describe=describe, world=world)
        if state is not None:
            loop.load_state_dict(state)
            log.info("resuming from %s at epoch %d", checkpoint_path, loop.epoch)
        loop.run(cfg.trainer.epochs)
        if not world.is_main:
            return {}
        return _derive_and_report(cfg, net, sampler, data, run_dir, tracker, start, loop.memory_format, describe)
    finally:
        tracker.finish()


def run_derive(cfg: Config, resolved_config: dict) -> dict:
    """Derive from a saved search run (`load_from`: its directory or last.pt) into this run's directory."""
    start = time.perf_counter()
    if not cfg.load_from:
        raise ValueError("mode=derive needs load_from=<search run directory or its last.pt>")
    source = Path(cfg.load_from)
    source = source / CHECKPOINT_NAME if source.is_dir() else source
    describe = benchmark_lookup(cfg)
    data, _, net, sampler = build_components(cfg)
    state = load_checkpoint(source, data.train.x.device)
    load_search_weights(net, state)
    sampler.load_state_dict(state["sampler"])
    run_dir = Path(cfg.paths.output_dir)
    tracker = Tracker(run_dir, cfg.logger, resolved_config)
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    try:
        return _derive_and_report(cfg, net.to(memory_format=memory_format), sampler, data, run_dir, tracker, start,
                                  memory_format, describe)
    finally:
        tracker.finish()


def _derive_and_report(cfg: Config, net, sampler, data, run_dir: Path, tracker: Tracker, start: float,
                       memory_format, describe) -> dict:
    ranked = derive(net, sampler, data, cfg.derive, memory_format, prefilter=prefilter_judge(cfg, data))
    ranking = rank_check(cfg, data, ranked, describe, run_dir) if cfg.derive.rank_check_k else None
    paths = write_derived(run_dir, ranked, cfg.derive, describe, ranking)
    best = ranked[0]
    looked_up = describe(best.arch)
    log.info("best architecture (validation accuracy %.4f with the shared weights, %s%s):\n%s",
             best.valid_acc, best.source, "".join(f", {k} {v:.2f}" for k, v in looked_up.get("benchmark", {}).items()),
             best.arch)
    tracker.summary({"derive/best_valid_acc": best.valid_acc,
                     **{f"benchmark/{k}": v for k, v in looked_up.get("benchmark", {}).items()},
                     **({"derive/kendall_tau": ranking["kendall_tau"]} if ranking else {})})
    artefacts = {"metrics": str(run_dir / "metrics.jsonl"), "checkpoint": str(run_dir / CHECKPOINT_NAME), **paths,
                 **pictures(run_dir, best.arch, "best_arch")}
    wall_time = round(time.perf_counter() - start, 2)  # search and derive (and rank check), not the proxy retrain
    result = write_result(run_dir, {
        "mode": cfg.mode, "space": cfg.search_space.name, "strategy": cfg.trainer.strategy,
        "best_arch": best.arch.to_enas_string(), "best_valid_acc": best.valid_acc,
        "best_params": skeleton_params(cfg, data, best.arch), **looked_up, **proxy_result(cfg, data, best.arch, run_dir),
        **({"rank_check": {k: v for k, v in ranking.items() if k != "candidates"}} if ranking else {}),
        "seed": cfg.seed, "wall_time_s": wall_time, "artefacts": artefacts})
    publish(tracker, run_dir, result["artefacts"], ("best_arch", "derived"))
    return result


# --- final training -------------------------------------------------------------------------------------------
def _held_out(data: Dataset, train_on_valid: bool):
    """Training data and the split to report: test when the data has one, else the (kept-out) validation split."""
    if data.test is not None:
        return (with_valid_in_train(data) if train_on_valid else data), data.test, "test"
    if train_on_valid:
        raise DataError("this dataset has no test split, so with retrain.train_on_valid=true nothing would be held "
                        "out; set retrain.train_on_valid=false to report the validation split (or use data with a "
                        "test split: data=cifar10, or an npz with x_test/y_test)")
    return data, data.valid, "valid"


def run_train(cfg: Config, resolved_config: dict) -> dict:
    """Train `cfg.arch` from scratch with the retrain recipe; write final.pt and result.json."""
    start = time.perf_counter()
    run_dir = Path(cfg.paths.output_dir)
    arch = load_arch(cfg.arch)
    if space_of(arch) != cfg.search_space.name:
        raise ValueError(f"arch={cfg.arch!r} is a {space_of(arch)} architecture but search_space="
                         f"{cfg.search_space.name}; add search_space={space_of(arch)} (it also picks that space's "
                         "retrain recipe)")
    looked_up = benchmark_lookup(cfg)(arch)  # before training: an architecture missing from the benchmark fails now
    device = resolve_device(cfg.device)
    configure_backends(device, cfg.deterministic)
    data, eval_split, eval_name = _held_out(build_dataset(cfg.data, device), cfg.retrain.train_on_valid)
    torch.manual_seed(cfg.seed)
    kwargs = network_kwargs(arch, cfg.retrain, data)
    net = build_network(arch, **kwargs).to(device)
    num_params = sum(p.numel() for p in net.parameters())
    trunk_params = net.num_params() if hasattr(net, "num_params") else num_params
    log.info("training %s architecture from scratch:\n%s\n%s parameters (%s without the aux head) on %s; "
             "%d train images, reporting %s (%d images)", space_of(arch), arch, f"{num_params:,}",
             f"{trunk_params:,}", device, len(data.train), eval_name, len(eval_split))
    checkpoint_path = run_dir / CHECKPOINT_NAME
    state = load_checkpoint(checkpoint_path, device) if cfg.resume and checkpoint_path.exists() else None
    tracker = Tracker(run_dir, cfg.logger, resolved_config, resume_epoch=state["epoch"] if state else None,
                      wandb_id=state.get("wandb_id") if state else None)
    try:
        loop = RetrainLoop(net, data, eval_split, eval_name, cfg.retrain, run_dir, tracker, seed=cfg.seed,
                           progress=ProgressBars())
        if state is not None:
            loop.load_state_dict(state)
            log.info("resuming from %s at epoch %d", checkpoint_path, loop.epoch)
        record = loop.run()
        stats = {"mean": list(data.mean), "std": list(data.std)}
        save_network(run_dir / NETWORK_NAME, net, arch, kwargs, stats)
        accuracy = record[f"{eval_name}/acc"]
        tracker.summary({f"final/{eval_name}_acc": accuracy, "final/params": num_params})
        result = {"mode": "train", "space": space_of(arch), "arch": arch.to_enas_string(),
                  f"{eval_name}_acc": accuracy, "evaluated_on": f"{eval_name} split, {len(eval_split)} images",
                  "params": num_params, "params_without_aux": trunk_params, "epochs": loop.epoch,
                  "wall_time_s": round(time.perf_counter() - start, 2),
                  "artefacts": {"network": str(run_dir / NETWORK_NAME), "checkpoint": str(checkpoint_path),
                                "metrics": str(run_dir / "metrics.jsonl")}}
        result["artefacts"].update(pictures(run_dir, arch, "arch"))
        result = write_result(run_dir, {**result, **looked_up})
        log.info("%s accuracy %.4f after %d epochs (%s parameters)", eval_name, accuracy, loop.epoch,
                 f"{num_params:,}")
        publish(tracker, run_dir, result["artefacts"], ())
        return result
    finally:
        tracker.finish()


def run_eval(cfg: Config, resolved_config: dict) -> dict:
    """Re-evaluate a trained network (`checkpoint`: a final.pt) on the configured data's held-out split."""
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    net = load_network(cfg.checkpoint, device)
    data = build_dataset(cfg.data, device)
    split, name = (data.test, "test") if data.test is not None else (data.valid, "valid")
    stats = net.data_stats or {"mean": data.mean, "std": data.std}
    memory_format = torch.channels_last if cfg.retrain.channels_last else torch.contiguous_format
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.retrain.bf16):
        accuracy = network_accuracy(net.to(memory_format=memory_format), split, tuple(stats["mean"]),
                                    tuple(stats["std"]), cfg.retrain.eval_batch_size, memory_format).item()
    result = {"mode": "eval", "checkpoint": str(cfg.checkpoint), "space": space_of(net.arch),
              "arch": net.arch.to_enas_string(), f"{name}_acc": accuracy,
              "evaluated_on": f"{name} split, {len(split)} images", "params": sum(p.numel() for p in net.parameters()),
              "wall_time_s": round(time.perf_counter() - start, 2)}
    write_result(Path(cfg.paths.output_dir), result)
    log.info("%s accuracy %.4f (%s)", name, accuracy, result["evaluated_on"])
    return result


def run_report(cfg: Config, resolved_config: dict) -> dict:
    """The comparison report of a sweep (`load_from`: multirun/<date>/<time>) written into that directory; with
    logger=wandb its table and plots go to W&B too."""
    if not cfg.load_from:
        raise ValueError("mode=report needs load_from=<sweep directory, e.g. multirun/<date>/<time>>")
    path = build_report(cfg.load_from)
    report = json.loads((path.parent / "report.json").read_text())
    run_dir = Path(cfg.paths.output_dir)
    tracker = Tracker(run_dir, cfg.logger, resolved_config)
    try:
        flat = [{"job": r["job"], "strategy": r["strategy"], "seed": r["seed"], "space": r["space"],
                 "best_arch": r["best_arch"], "error": r["error"], **r["values"]} for r in report["rows"]]
        columns = list(dict.fromkeys(k for row in flat for k in row))
        tracker.log_rows("report", [{c: row.get(c) for c in columns} for row in flat], step=0)
        tracker.log_images({Path(name).stem: str(path.parent / name) for name in report["plots"]})
        log.info("report of %d runs: %s (ranking by %s: %s)", len(flat), path,
                 (report["metric"] or {}).get("label", "nothing"), ", ".join(report["ranking"]) or "n/a")
        return write_result(run_dir, {"mode": "report", "sweep_dir": str(cfg.load_from), "report": str(path),
                                      "ranking": report["ranking"], "metric": report["metric"]})
    finally:
        tracker.finish()
