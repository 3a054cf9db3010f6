"""The run modes, built from the typed config that run.py composes: search (then derive) and derive alone.

Every run directory ends up with: the resolved config (.hydra/), a log, metrics.jsonl, last.pt, derived.json,
best_arch.json and result.json (mode, best architecture, its validation accuracy, wall time, artefact paths).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from enas.checkpoint import CHECKPOINT_NAME, load_checkpoint
from enas.config import Config
from enas.controller import Controller
from enas.data import Dataset, load_cifar10, load_npz, make_synthetic
from enas.derive import derive, write_derived
from enas.files import write_json_atomic
from enas.reinforce import Reinforce
from enas.samplers import ControllerSampler, UniformSampler
from enas.search import ControllerSchedule, SearchLoop
from enas.spaces.micro import MicroSpace
from enas.tracking import Tracker

log = logging.getLogger(__name__)
RESULT_NAME = "result.json"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(name)


def build_dataset(cfg, device: torch.device) -> Dataset:
    if cfg.name == "cifar10":
        return load_cifar10(cfg.root, num_valid=cfg.num_valid, download=cfg.download, device=device)
    if cfg.name == "npz":
        return load_npz(cfg.path, valid_fraction=cfg.valid_fraction, num_classes=cfg.num_classes, device=device)
    return make_synthetic(cfg.num_train, cfg.num_valid, cfg.num_test, cfg.num_classes, cfg.image_size, cfg.seed,
                          device=device)


def build_space(cfg: Config, data: Dataset) -> MicroSpace:
    s = cfg.search_space
    return MicroSpace(num_nodes=s.num_nodes, num_layers=s.num_layers, channels=s.channels,
                      num_classes=data.num_classes, image_size=data.train.x.shape[-1],
                      in_channels=data.train.x.shape[1], dropout=s.dropout, aux_head=s.aux_weight > 0,
                      normal_op_bias=s.normal_op_bias)


def build_sampler(cfg: Config, space, device: torch.device):
    generator = torch.Generator(device).manual_seed(cfg.seed + 4)
    if cfg.trainer.strategy == "random":
        return UniformSampler(space, generator)
    c = cfg.controller
    controller = Controller(space.steps(), lstm_size=c.lstm_size, tanh_input=c.tanh_input, tanh_op=c.tanh_op,
                            temperature=c.temperature, op_bias_init=c.op_bias_init, init_range=c.init_range).to(device)
    reinforce = Reinforce(controller, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps,
                          baseline_decay=c.baseline_decay, entropy_weight=c.entropy_weight)
    return ControllerSampler(space, controller, reinforce, generator)


def build_components(cfg: Config):
    """Data, space, supernet and sampler, built in a fixed order so that a seed fixes every initial weight."""
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # few distinct conv shapes recur across architectures
    data = build_dataset(cfg.data, device)
    torch.manual_seed(cfg.seed)  # weights and controller init; dropout draws from this state too
    space = build_space(cfg, data)
    net = space.supernet().to(device)
    sampler = build_sampler(cfg, space, device)
    log.info("data: %d train / %d valid images, %d classes; supernet: %s parameters on %s", len(data.train),
             len(data.valid), data.num_classes, f"{sum(p.numel() for p in net.parameters()):,}", device)
    return data, space, net, sampler


def run_search(cfg: Config, resolved_config: dict) -> dict:
    start = time.perf_counter()
    run_dir = Path(cfg.paths.output_dir)
    data, _, net, sampler = build_components(cfg)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    state = load_checkpoint(checkpoint_path, data.train.x.device) if cfg.resume and checkpoint_path.exists() else None
    tracker = Tracker(run_dir, cfg.logger, resolved_config, resume_epoch=state["epoch"] if state else None,
                      wandb_id=state.get("wandb_id") if state else None)
    try:
        loop = SearchLoop(net, sampler, data, cfg.trainer,
                          ControllerSchedule(cfg.controller.num_updates, cfg.controller.num_aggregate),
                          cfg.search_space.aux_weight, run_dir, tracker, seed=cfg.seed)
        if state is not None:
            loop.load_state_dict(state)
            log.info("resuming from %s at epoch %d", checkpoint_path, loop.epoch)
        loop.run(cfg.trainer.epochs)
        return _derive_and_report(cfg, net, sampler, data, run_dir, tracker, start, loop.memory_format)
    finally:
        tracker.finish()


def run_derive(cfg: Config, resolved_config: dict) -> dict:
    """Derive from a saved search run (`load_from`: its directory or last.pt) into this run's directory."""
    start = time.perf_counter()
    if not cfg.load_from:
        raise ValueError("mode=derive needs load_from=<search run directory or its last.pt>")
    source = Path(cfg.load_from)
    source = source / CHECKPOINT_NAME if source.is_dir() else source
    data, _, net, sampler = build_components(cfg)
    state = load_checkpoint(source, data.train.x.device)
    net.load_state_dict(state["net"])
    sampler.load_state_dict(state["sampler"])
    run_dir = Path(cfg.paths.output_dir)
    tracker = Tracker(run_dir, cfg.logger, resolved_config)
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    try:
        return _derive_and_report(cfg, net.to(memory_format=memory_format), sampler, data, run_dir, tracker, start,
                                  memory_format)
    finally:
        tracker.finish()


def _derive_and_report(cfg: Config, net, sampler, data, run_dir: Path, tracker: Tracker, start: float,
                       memory_format) -> dict:
    ranked = derive(net, sampler, data, cfg.derive, memory_format)
    paths = write_derived(run_dir, ranked, cfg.derive.top_k)
    best = ranked[0]
    log.info("best architecture (validation accuracy %.4f with the shared weights, %s):\n%s",
             best.valid_acc, best.source, best.arch)
    tracker.summary({"derive/best_valid_acc": best.valid_acc})
    artefacts = {"metrics": str(run_dir / "metrics.jsonl"), "checkpoint": str(run_dir / CHECKPOINT_NAME), **paths}
    result = {"mode": cfg.mode, "space": cfg.search_space.name, "strategy": cfg.trainer.strategy,
              "best_arch": best.arch.to_enas_string(), "best_valid_acc": best.valid_acc,
              "wall_time_s": round(time.perf_counter() - start, 2),
              "artefacts": {k: v for k, v in artefacts.items() if Path(v).exists()}}
    write_json_atomic(run_dir / RESULT_NAME, result)
    log.info("artefacts in %s", run_dir)
    return result
