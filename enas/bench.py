"""Speed benchmark of the search: shared-weights images/s, controller sampling and update cost, one whole search
epoch broken down by phase, and peak memory. Presets live in conf/experiment/bench_*.yaml:

    python run.py experiment=bench_small     # CI smoke, seconds
    python run.py experiment=bench_nni       # the NNI peer harness's config: C=16, 6N+2R, batch 64, 4,653 images
    python run.py experiment=bench_paper     # the paper's search child: C=20, batch 160, 45,000 / 5,000 images

Shared steps are timed on the same uniformly random architectures (seeded) for every variant, since a step's
cost varies ~20% with the architecture; the GPU is synchronised around each timed call only.
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from enas.config import Config
from enas.files import write_json_atomic
from enas.huge_pages import hugetlb_setting, thp_mode
from enas.build import build_components
from enas.search import ControllerSchedule, SearchLoop
from enas.tracking import Tracker

BENCH_NAME = "bench.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _shared_steps(loop: SearchLoop, space, warmup: int, timed: int) -> list[float]:
    generator = torch.Generator().manual_seed(0)  # the same architectures for every variant
    archs = [space.sample_uniform(generator) for _ in range(warmup + timed)]
    loop.net.train()
    times = []
    for i, arch in enumerate(archs):
        idx = loop.train_batches.next_batch()
        seconds = _timed(lambda: loop.shared_step(idx, arch), loop.device)
        if i >= warmup:
            times.append(seconds)
    return times


def run_bench(cfg: Config, resolved_config: dict) -> dict:
    b = cfg.bench
    run_dir = Path(cfg.paths.output_dir)
    data, space, net, sampler = build_components(cfg)
    device = data.train.x.device
    tracker = Tracker(run_dir / "bench_epoch")
    loop = SearchLoop(net, sampler, data, cfg.trainer,
                      ControllerSchedule(cfg.controller.num_updates, cfg.controller.num_aggregate),
                      cfg.search_space.aux_weight, run_dir / "bench_epoch", tracker, seed=cfg.seed)
    figures: dict = {}
    with Progress(transient=True) as progress:
        task = progress.add_task("shared steps", total=4)
        step_times = _shared_steps(loop, space, b.warmup_steps, b.timed_steps)
        figures["shared_step_ms_median"] = 1000 * statistics.median(step_times)
        figures["shared_images_per_s"] = cfg.trainer.batch_size / statistics.median(step_times)
        progress.update(task, advance=1, description="controller sampling")
        figures["sample_archs"] = b.num_sample_archs
        figures["sample_archs_s"] = _timed(lambda: sampler.sample(b.num_sample_archs), device)
        progress.update(task, advance=1, description="controller update")
        one_update = ControllerSchedule(1, cfg.controller.num_aggregate)
        loop.schedule, full_schedule = one_update, loop.schedule
        figures["controller_update_s"] = statistics.median(
            _timed(loop.train_sampler, device) for _ in range(3))
        loop.schedule = full_schedule
        progress.update(task, advance=1, description="one search epoch")
        if b.measure_epoch:
            loop.epoch = 0
            record = loop.run(1)
            tracker.finish()
            figures.update({k.replace("time/", "epoch_"): v for k, v in record.items() if k.startswith("time/")})
            figures["epoch_total_s"] = sum(v for k, v in record.items()  # phases only, not images_per_s
                                           if k.startswith("time/") and k.endswith("_s") and not k.endswith("per_s"))
        progress.update(task, advance=1)
    figures["peak_memory_mib"] = _peak_memory_mib(device)
    report = {"figures": figures, "environment": _environment(device), "config": {
        "channels": cfg.search_space.channels, "num_layers": cfg.search_space.num_layers,
        "num_nodes": cfg.search_space.num_nodes, "batch_size": cfg.trainer.batch_size,
        "num_train": len(data.train), "num_valid": len(data.valid), "aux_weight": cfg.search_space.aux_weight,
        "decay_unsampled": cfg.trainer.decay_unsampled, "channels_last": cfg.trainer.channels_last,
        "bf16": cfg.trainer.bf16, "controller_updates": cfg.controller.num_updates,
        "controller_aggregate": cfg.controller.num_aggregate, "bench": asdict(b)}}
    write_json_atomic(run_dir / BENCH_NAME, report)
    _print_table(report, run_dir / BENCH_NAME)
    return report


def _environment(device: torch.device) -> dict:
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
            "device_type": device.type, "torch": torch.__version__, "threads": torch.get_num_threads(),
            # huge pages move CPU figures by a few percent (enas/huge_pages.py)
            "thp_mode": thp_mode(), "malloc_hugetlb": hugetlb_setting(os.environ.get("GLIBC_TUNABLES")),
            "date": time.strftime("%Y-%m-%d")}


def _cpu_name() -> str:
    """The CPU's model name (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def _print_table(report: dict, path: Path) -> None:
    table = Table(title=f"enas search speed ({report['environment']['device_type']}, "
                        f"torch {report['environment']['torch']}, {report['environment']['threads']} threads)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in report["figures"].items():
        table.add_row(key, f"{value:,.4g}" if isinstance(value, float) else str(value))
    console = Console()
    console.print(table)
    console.print(f"JSON: {path}")
