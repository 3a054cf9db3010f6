"""The run modes, built from the typed config that run.py composes: search (then derive), derive alone,
train (one architecture from scratch) and eval (a trained network).

Every run directory ends up with: the resolved config (.hydra/ and config_resolved.yaml), a log, metrics.jsonl,
last.pt and result.json (mode, architecture, accuracy, wall time, artefact paths); a search adds derived.json
and best_arch.json, a final training final.pt.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from enas.checkpoint import CHECKPOINT_NAME, load_checkpoint
from enas.config import Config
from enas.controller import Controller
from enas.data import Dataset, DataError, load_cifar10, load_npz, make_synthetic, with_valid_in_train
from enas.derive import BEST_ARCH_NAME, derive, write_derived
from enas.drawing import draw_arch, plot_curves, plot_histogram
from enas.files import write_json_atomic
from enas.judges import network_accuracy
from enas.naswot import SCORES_NAME, NaswotJudge, Scored, rank, score_json, scoring_batch, write_scores
from enas.networks import build_network, load_arch, load_network, save_network, space_of
from enas.progress import ProgressBars
from enas.reinforce import Reinforce
from enas.retrain import RetrainLoop
from enas.samplers import ControllerSampler, UniformSampler
from enas.search import ControllerSchedule, SearchLoop
from enas.spaces.macro import MacroSpace
from enas.spaces.micro import MicroSpace
from enas.spaces.nb201 import Nb201Space
from enas.tracking import Tracker

log = logging.getLogger(__name__)
RESULT_NAME, NETWORK_NAME = "result.json", "final.pt"


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """cudnn autotuning for speed, or deterministic kernels only (deterministic=true)."""
    torch.use_deterministic_algorithms(deterministic)  # process-wide: set both ways, so one run never leaks
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # few distinct conv shapes recur across architectures


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


def build_space(cfg: Config, data: Dataset):
    s, shape = cfg.search_space, dict(num_classes=data.num_classes, in_channels=data.train.x.shape[1])
    if s.name == "macro":
        return MacroSpace(num_layers=s.num_layers, channels=s.channels, dropout=s.dropout, **shape)
    if s.name == "nb201":
        return Nb201Space(channels=s.channels, cells_per_stage=s.num_layers // 3, affine=s.affine,
                          track_running_stats=s.track_running_stats, **shape)
    return MicroSpace(num_nodes=s.num_nodes, num_layers=s.num_layers, channels=s.channels,
                      image_size=data.train.x.shape[-1], dropout=s.dropout, aux_head=s.aux_weight > 0,
                      normal_op_bias=s.normal_op_bias, **shape)


def build_sampler(cfg: Config, space, device: torch.device):
    generator = torch.Generator(device).manual_seed(cfg.seed + 4)
    if cfg.trainer.strategy in ("random", "naswot"):
        return UniformSampler(space, generator)
    c = cfg.controller
    controller = Controller(space.steps(), lstm_size=c.lstm_size, tanh_input=c.tanh_input, tanh_op=c.tanh_op,
                            temperature=c.temperature, op_bias=c.op_bias, op_bias_init=c.op_bias_init,
                            init_range=c.init_range, skip_target=c.skip_target).to(device)
    reinforce = Reinforce(controller, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps,
                          baseline_decay=c.baseline_decay, entropy_weight=c.entropy_weight)
    return ControllerSampler(space, controller, reinforce, generator, skip_weight=c.skip_weight)


def build_components(cfg: Config):
    """Data, space, supernet and sampler, built in a fixed order so that a seed fixes every initial weight."""
    device = resolve_device(cfg.device)
    configure_backends(device, cfg.deterministic)
    data = build_dataset(cfg.data, device)
    torch.manual_seed(cfg.seed)  # weights and controller init; dropout draws from this state too
    space = build_space(cfg, data)
    net = space.supernet().to(device)
    sampler = build_sampler(cfg, space, device)
    log.info("data: %d train / %d valid images, %d classes; supernet: %s parameters on %s", len(data.train),
             len(data.valid), data.num_classes, f"{sum(p.numel() for p in net.parameters()):,}", device)
    return data, space, net, sampler


def run_search(cfg: Config, resolved_config: dict) -> dict:
    if cfg.trainer.strategy == "naswot":
        return run_naswot(cfg, resolved_config)
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
                          cfg.search_space.aux_weight, run_dir, tracker, seed=cfg.seed, progress=ProgressBars())
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
    ranked = derive(net, sampler, data, cfg.derive, memory_format,
                    naswot=naswot_judge(cfg, data) if cfg.derive.prefilter == "naswot" else None)
    paths = write_derived(run_dir, ranked, cfg.derive.top_k)
    best = ranked[0]
    log.info("best architecture (validation accuracy %.4f with the shared weights, %s):\n%s",
             best.valid_acc, best.source, best.arch)
    tracker.summary({"derive/best_valid_acc": best.valid_acc})
    artefacts = {"metrics": str(run_dir / "metrics.jsonl"), "checkpoint": str(run_dir / CHECKPOINT_NAME), **paths,
                 **_pictures(run_dir, best.arch, "best_arch")}
    result = {"mode": cfg.mode, "space": cfg.search_space.name, "strategy": cfg.trainer.strategy,
              "best_arch": best.arch.to_enas_string(), "best_valid_acc": best.valid_acc,
              "wall_time_s": round(time.perf_counter() - start, 2),
              "artefacts": {k: v for k, v in artefacts.items() if Path(v).exists()}}
    write_json_atomic(run_dir / RESULT_NAME, result)
    _publish(tracker, run_dir, result["artefacts"], ("best_arch", "derived"))
    return result


def _pictures(run_dir: Path, arch, stem: str) -> dict[str, str]:
    """The architecture's drawings and the run's curves (never fatal: drawing failures only log a warning)."""
    pictures = {f"drawing_{p.stem.removeprefix(stem + '_')}": str(p) for p in draw_arch(arch, run_dir, stem)
                if p.suffix == ".png"}
    curves = plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
    return {**pictures, **({"curves": str(curves)} if curves else {})}


def _publish(tracker: Tracker, run_dir: Path, artefacts: dict[str, str], arch_files: tuple[str, ...]) -> None:
    """The run's last words: artefacts to W&B (architecture, checkpoint, network, pictures) and their paths logged."""
    tracker.log_files("architecture", "architecture", [artefacts[k] for k in arch_files if k in artefacts])
    tracker.log_files("checkpoint", "checkpoint", [artefacts["checkpoint"]] if "checkpoint" in artefacts else [])
    if "network" in artefacts:
        tracker.log_files("network", "model", [artefacts["network"]])
    tracker.log_images({k: v for k, v in artefacts.items() if k.startswith("drawing_") or k == "curves"})
    _log_artefacts(run_dir, artefacts)


def _log_artefacts(run_dir: Path, artefacts: dict[str, str]) -> None:
    width = max(map(len, artefacts), default=0)
    log.info("artefacts in %s:\n%s", run_dir, "\n".join(f"  {k:<{width}}  {v}" for k, v in artefacts.items()))


# --- training-free search (NASWOT) ----------------------------------------------------------------------------
def fixed_network_kwargs(space: str, data: Dataset, num_layers: int, channels: int, dropout: float,
                         aux_head: bool = False, drop_path_keep: float = 1.0) -> dict:
    """Constructor arguments of a space's fixed network at this depth and width, sized for the data. nb201 takes
    num_layers // 3 cells per stage; macro ignores the aux head and drop-path (it has neither)."""
    shape = dict(num_classes=data.num_classes, in_channels=data.train.x.shape[1])
    if space == "macro":
        return dict(num_layers=num_layers, channels=channels, dropout=dropout, **shape)
    if space == "nb201":
        return dict(channels=channels, cells_per_stage=num_layers // 3, **shape)
    return dict(num_layers=num_layers, channels=channels, image_size=data.train.x.shape[-1], dropout=dropout,
                aux_head=aux_head, drop_path_keep=drop_path_keep, **shape)


def skeleton_kwargs(cfg: Config, data: Dataset) -> dict:
    """Constructor arguments of the fixed network at the search skeleton (search_space widths and depths; aux head
    and drop-path off): the one skeleton every NASWOT candidate is built at (scores compare only there, naswot.md
    §6.6). Micro: the final-graph cells at the search C and num_layers; macro: channels double at reductions."""
    s = cfg.search_space
    return fixed_network_kwargs(s.name, data, s.num_layers, s.channels, getattr(s, "dropout", 0.0))


def naswot_judge(cfg: Config, data: Dataset) -> NaswotJudge:
    """Fresh networks at the search skeleton, each scored on the same naswot.batch_size training images."""
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    kwargs = skeleton_kwargs(cfg, data)
    images = scoring_batch(data, cfg.naswot.batch_size, cfg.seed + 5, memory_format)
    return NaswotJudge(lambda arch: build_network(arch, **kwargs), images, cfg.seed, memory_format)


def run_naswot(cfg: Config, resolved_config: dict) -> dict:
    """Training-free search (naswot.md §7a): naswot.num_samples uniform architectures, each scored by NASWOT at a
    fresh initialisation; every score goes to scores.jsonl, the best is written like any search's winner."""
    start = time.perf_counter()
    run_dir = Path(cfg.paths.output_dir)
    device = resolve_device(cfg.device)
    configure_backends(device, cfg.deterministic)
    data = build_dataset(cfg.data, device)
    sampler = build_sampler(cfg, build_space(cfg, data), device)
    judge = naswot_judge(cfg, data)
    tracker = Tracker(run_dir, cfg.logger, resolved_config)
    try:
        archs, _ = sampler.sample(cfg.naswot.num_samples)
        log.info("NASWOT: scoring %d uniform %s architectures on %d training images, skeleton %s, on %s",
                 len(archs), cfg.search_space.name, cfg.naswot.batch_size, skeleton_kwargs(cfg, data), device)
        best = [float("-inf")]

        def on_scored(i: int, s: Scored) -> None:
            best[0] = max(best[0], s.score)
            tracker.log(_naswot_metrics(s, best[0]), step=i)
            if (i + 1) % max(1, len(archs) // 10) == 0:
                log.info("NASWOT %d/%d  best score %.3f", i + 1, len(archs), best[0])

        return _report_naswot(cfg, data, judge(archs, on_scored), run_dir, tracker, start)
    finally:
        tracker.finish()


def _naswot_metrics(s: Scored, best: float) -> dict:
    """One candidate's record; -inf scores (singular K) are left out rather than written as non-standard JSON."""
    scores = {"naswot/score": s.score, "naswot/best_score": best}
    return {**{k: v for k, v in scores.items() if v > float("-inf")}, "naswot/singular": int(s.score == float("-inf")),
            "naswot/params": s.params, "naswot/time_s": s.time_s}


def _report_naswot(cfg: Config, data: Dataset, scored: list[Scored], run_dir: Path, tracker: Tracker,
                   start: float) -> dict:
    best, singular = rank(scored)[0], sum(s.score == float("-inf") for s in scored)
    log.info("best architecture (NASWOT score %.3f, %s parameters at the search skeleton; %d of %d singular):\n%s",
             best.score, f"{best.params:,}", singular, len(scored), best.arch)
    write_json_atomic(run_dir / BEST_ARCH_NAME, {**best.arch.to_json(), "naswot_score": score_json(best.score),
                                                 "params": best.params, "source": "naswot"})
    tracker.summary({"naswot/best_score": score_json(best.score), "naswot/best_params": best.params,
                     "naswot/num_singular": singular})
    histogram = plot_histogram([s.score for s in scored], run_dir / "naswot_scores.png", "NASWOT score (log|det K|)",
                               f"{len(scored)} {cfg.search_space.name} architectures, {cfg.naswot.batch_size} images")
    artefacts = {"metrics": str(run_dir / "metrics.jsonl"), "scores": str(write_scores(run_dir / SCORES_NAME, scored)),
                 "best_arch": str(run_dir / BEST_ARCH_NAME), **({"histogram": str(histogram)} if histogram else {}),
                 **_pictures(run_dir, best.arch, "best_arch")}
    result = {"mode": cfg.mode, "space": cfg.search_space.name, "strategy": "naswot",
              "best_arch": best.arch.to_enas_string(), "best_score": score_json(best.score),
              "best_params": best.params, "num_scored": len(scored), "num_singular": singular,
              "batch_size": cfg.naswot.batch_size, "seed": cfg.seed, "skeleton": skeleton_kwargs(cfg, data),
              "scoring_time_s": round(sum(s.time_s for s in scored), 2),
              "wall_time_s": round(time.perf_counter() - start, 2),
              "artefacts": {k: v for k, v in artefacts.items() if Path(v).exists()}}
    write_json_atomic(run_dir / RESULT_NAME, result)
    tracker.log_images({"naswot_scores": histogram} if histogram else {})
    _publish(tracker, run_dir, result["artefacts"], ("best_arch", "scores"))
    return result


# --- final training -------------------------------------------------------------------------------------------
def network_kwargs(arch, cfg, data: Dataset) -> dict:
    """Constructor arguments of `arch`'s fixed network from the retrain config and the data's shape."""
    space = space_of(arch)
    # a macro network's depth is the architecture's own (a configured depth must agree); micro 15, nb201 5 x 3
    depth = cfg.num_layers or (arch.num_layers if space == "macro" else 15)
    return fixed_network_kwargs(space, data, depth, cfg.channels, cfg.dropout, cfg.aux_weight > 0,
                                cfg.drop_path_keep)


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
        result["artefacts"].update(_pictures(run_dir, arch, "arch"))
        write_json_atomic(run_dir / RESULT_NAME, result)
        log.info("%s accuracy %.4f after %d epochs (%s parameters)", eval_name, accuracy, loop.epoch,
                 f"{num_params:,}")
        _publish(tracker, run_dir, result["artefacts"], ())
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
    write_json_atomic(Path(cfg.paths.output_dir) / RESULT_NAME, result)
    log.info("%s accuracy %.4f (%s)", name, accuracy, result["evaluated_on"])
    return result
