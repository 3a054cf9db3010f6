"""Hydra entry point: compose the config, check it, run one mode.

    python run.py                          # the paper's micro search on CIFAR-10
    python run.py experiment=smoke         # the whole pipeline on generated data, offline, ~1 minute on CPU
    python run.py mode=derive load_from=outputs/<date>/<time>
    python run.py mode=train arch=outputs/<date>/<time>/best_arch.json   # retrain from scratch (or arch=enas_micro_paper)
    python run.py mode=eval checkpoint=outputs/<date>/<time>/final.pt
    python run.py experiment=bench_nni     # speed benchmark (also bench_small, bench_paper)
    python run.py resume=outputs/<date>/<time>   # continue an interrupted run (Ctrl-C / SIGTERM save it first)
    python run.py dist=ddp dist.nproc_per_node=4  # one search data-parallel over 4 GPUs (or: torchrun ... run.py)
    python run.py -m hydra/launcher=slurm hydra.launcher.partition=gpu seed=0,1,2   # a sweep as SLURM jobs
    python run.py -m trainer.strategy=enas,random,naswot,params seed=0,1,2   # a comparison sweep, then its report:
    python run.py mode=report load_from=multirun/<date>/<time>             # (or python -m enas.report <dir>)
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

if __name__ == "__main__":  # first, before torch loads: glibc reads its malloc tunables only when a process starts
    from enas.huge_pages import relaunch_with_huge_pages
    relaunch_with_huge_pages()

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from enas.bench import run_bench
from enas.config import Config, register_configs
from enas.validation import validate
from enas.data import DataError
from enas.files import write_json_atomic, write_text_atomic
from enas.interrupt import RunInterrupted
from enas.launch import check_supported, hand_on, search, share_run_dir
from enas.pipeline import run_derive, run_eval, run_report, run_train
from enas.rank_check import run_rank_check
from enas.resume import ResumeError, expand_resume
from enas.spaces.base import ArchError

log = logging.getLogger("enas")
register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # .hydra/config.yaml keeps interpolations; this is what the run actually used
    write_text_atomic(Path(cfg.paths.output_dir) / "config_resolved.yaml", OmegaConf.to_yaml(resolved))
    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        config: Config = OmegaConf.to_object(cfg)
        validate(config)
        check_supported(config, sweeping)
        if sweeping and config.logger.group is None:
            # the runs of one sweep share a W&B group named after the sweep directory
            config.logger.group = str(Path(hydra_cfg.sweep.dir)).strip("/").replace("/", "_")
        mode = {"search": search, "derive": run_derive, "train": run_train, "eval": run_eval,
                "bench": run_bench, "report": run_report, "rank_check": run_rank_check}[config.mode]
        result = mode(config, resolved)
    except RunInterrupted as e:
        log.warning("%s; continue with: python run.py resume=%s", e, cfg.paths.output_dir)
        hand_on(e.signum)  # SIGUSR2 in a submitit job: submitit requeues it, and it resumes from last.pt
        sys.exit(e.exit_code)
    except (DataError, ArchError, ValueError, FileNotFoundError) as e:
        log.error("%s", e)  # bad input: one clear message, no traceback, non-zero exit
        if sweeping:  # the sweep's other jobs still run; this job's folder says why it failed
            write_json_atomic(Path(cfg.paths.output_dir) / "result.json", {"error": str(e)})
            return None
        sys.exit(2)
    # what an optimising sweeper maximises
    return next((result[k] for k in ("best_valid_acc", "test_acc", "valid_acc") if k in result), None)


if __name__ == "__main__":
    try:
        sys.argv = expand_resume(sys.argv)
    except ResumeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.argv = share_run_dir(sys.argv)  # under torchrun: one run directory for all ranks
    main()
