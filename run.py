"""Hydra entry point: compose the config, check it, run one mode.

    python run.py                          # the paper's micro search on CIFAR-10
    python run.py experiment=smoke         # the whole pipeline on generated data, offline, ~1 minute on CPU
    python run.py mode=derive load_from=outputs/<date>/<time>
    python run.py experiment=bench_nni     # speed benchmark (also bench_small, bench_paper)
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from enas.bench import run_bench
from enas.config import Config, register_configs, validate
from enas.data import DataError
from enas.files import write_text_atomic
from enas.pipeline import run_derive, run_search
from enas.spaces.base import ArchError

log = logging.getLogger("enas")
register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # .hydra/config.yaml keeps interpolations; this is what the run actually used
    write_text_atomic(Path(cfg.paths.output_dir) / "config_resolved.yaml", OmegaConf.to_yaml(resolved))
    try:
        config: Config = OmegaConf.to_object(cfg)
        validate(config)
        mode = {"search": run_search, "derive": run_derive, "bench": run_bench}[config.mode]
        result = mode(config, resolved)
    except (DataError, ArchError, ValueError, FileNotFoundError) as e:
        log.error("%s", e)  # bad input: one clear message, no traceback, non-zero exit
        sys.exit(2)
    return result.get("best_valid_acc")  # what an optimising sweeper maximises


if __name__ == "__main__":
    main()
