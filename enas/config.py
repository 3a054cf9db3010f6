"""Typed config schemas, registered in Hydra's ConfigStore: a bad key or a wrong type fails at compose time.

The YAML files under conf/ hold the defaults with their meaning, units and source; these dataclasses hold the
types. `run.py` turns the composed config into these objects (OmegaConf.to_object) and passes plain values on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class Cifar10Data:
    name: str = "cifar10"
    root: str = MISSING
    download: bool = False
    num_valid: int = 5000


@dataclass
class NpzData:
    name: str = "npz"
    path: str = MISSING
    valid_fraction: float = 0.1
    num_classes: Optional[int] = None


@dataclass
class SyntheticData:
    name: str = "synthetic"
    num_train: int = 2000
    num_valid: int = 500
    num_test: int = 0
    num_classes: int = 10
    image_size: int = 32
    seed: int = 0


@dataclass
class MicroSpaceConfig:
    name: str = "micro"
    num_nodes: int = 5
    num_layers: int = 6
    channels: int = 20
    dropout: float = 0.1
    aux_weight: float = 0.4
    normal_op_bias: Optional[list[float]] = None


@dataclass
class MacroSpaceConfig:
    name: str = "macro"
    num_layers: int = 12
    channels: int = 36
    dropout: float = 0.1
    aux_weight: float = 0.0  # the macro child has no aux head


@dataclass
class Nb201SpaceConfig:
    name: str = "nb201"
    num_layers: int = 15  # cells in all, num_layers // 3 per stage (as micro's num_layers counts normal cells)
    channels: int = 16
    affine: bool = False
    track_running_stats: bool = False
    aux_weight: float = 0.0  # no aux head


SPACE_NAMES = ("micro", "macro", "nb201")


@dataclass
class ControllerConfig:
    lstm_size: int = 64
    tanh_input: Optional[float] = 1.10
    tanh_op: Optional[float] = 0.44
    temperature: Optional[float] = None
    op_bias: bool = True
    op_bias_init: Optional[list[float]] = None
    init_range: float = 0.1
    lr: float = 0.0035
    beta1: float = 0.0
    beta2: float = 0.999
    eps: float = 1e-3
    baseline_decay: float = 0.99
    entropy_weight: float = 1e-4
    skip_target: float = 0.4
    skip_weight: float = 0.0
    num_updates: int = 30
    num_aggregate: int = 10


@dataclass
class SearchTrainerConfig:
    strategy: str = "enas"
    epochs: int = 150
    batch_size: int = 160
    lr_max: float = 0.05
    lr_min: float = 0.0005
    lr_t0_epochs: int = 10
    lr_t_mult: int = 2
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 2e-4
    decay_unsampled: bool = True
    reward_dropout: bool = True
    crop_padding: int = 4
    flip: bool = True
    cutout_size: int = 0
    eval_every_epochs: int = 1
    log_every_steps: int = 50
    channels_last: bool = True
    bf16: bool = False
    collapse_entropy: float = 0.3  # warn when op decisions keep less than this share of their maximum entropy


@dataclass
class RetrainConfig:
    """Final training of one fixed architecture from scratch (mode=train); the group follows the search space."""

    num_layers: Optional[int] = 15
    channels: int = 36
    dropout: float = 0.2
    drop_path_keep: float = 0.6
    aux_weight: float = 0.4
    epochs: int = 630
    batch_size: int = 144
    eval_batch_size: int = 500
    lr_max: float = 0.05
    lr_min: float = 0.0001
    lr_t0_epochs: int = 10
    lr_t_mult: int = 2
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-4
    grad_clip_norm: Optional[float] = None
    crop_padding: int = 4
    flip: bool = True
    cutout_size: int = 16
    train_on_valid: bool = True
    eval_every_epochs: int = 1
    log_every_steps: int = 50
    channels_last: bool = True
    bf16: bool = False


@dataclass
class DeriveConfig:
    num_samples: int = 100
    include_greedy: bool = True
    top_k: int = 10
    batch_size: int = 500
    max_valid_images: Optional[int] = None
    prefilter: Optional[str] = None  # "naswot": keep the prefilter_top_k of prefilter_samples by NASWOT score
    prefilter_samples: int = 1000
    prefilter_top_k: int = 50
    rank_check_k: int = 0  # > 0: Kendall tau of the shared-weight scores against a reference for the top k
    rank_check_epochs: int = 5  # the proxy retrain's epochs when no benchmark is configured
    proxy_epochs: int = 0  # > 0: retrain the winner at the search skeleton, report proxy_acc (every strategy)


@dataclass
class BenchmarkConfig:
    """NAS-Bench-201 accuracies for every nb201 architecture a run reports (enas.benchmark)."""

    path: Optional[str] = None


@dataclass
class NaswotConfig:
    """trainer.strategy=naswot (training-free search) and the NASWOT scoring of derive.prefilter=naswot."""

    num_samples: int = 100
    batch_size: int = 128


@dataclass
class BenchConfig:
    warmup_steps: int = 3
    timed_steps: int = 30
    num_sample_archs: int = 300
    measure_epoch: bool = True


@dataclass
class LoggerConfig:
    name: str = "none"
    project: str = "enas"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    mode: Optional[str] = None


@dataclass
class PathsConfig:
    data_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class Config:
    mode: str = "search"
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False
    resume: bool = True
    load_from: Optional[str] = None
    data: Any = MISSING
    search_space: Any = MISSING  # MicroSpaceConfig | MacroSpaceConfig | Nb201SpaceConfig
    controller: ControllerConfig = MISSING
    trainer: SearchTrainerConfig = MISSING
    retrain: RetrainConfig = MISSING
    arch: Optional[str] = None
    checkpoint: Optional[str] = None
    derive: DeriveConfig = field(default_factory=DeriveConfig)
    naswot: NaswotConfig = field(default_factory=NaswotConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    logger: LoggerConfig = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)


MODES = ("search", "derive", "train", "eval", "bench", "report")
STRATEGIES = ("enas", "random", "naswot", "params", "random_pick")
PREFILTERS = ("naswot",)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="data", name="cifar10_schema", node=Cifar10Data)
    cs.store(group="data", name="npz_schema", node=NpzData)
    cs.store(group="data", name="synthetic_schema", node=SyntheticData)
    cs.store(group="search_space", name="micro_schema", node=MicroSpaceConfig)
    cs.store(group="search_space", name="macro_schema", node=MacroSpaceConfig)
    cs.store(group="search_space", name="nb201_schema", node=Nb201SpaceConfig)
    cs.store(group="controller", name="controller_schema", node=ControllerConfig)
    cs.store(group="trainer", name="search_schema", node=SearchTrainerConfig)
    cs.store(group="retrain", name="retrain_schema", node=RetrainConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)


def validate(cfg: Config) -> None:
    """Checks that types alone cannot express; each message names the bad value and what is allowed."""
    checks = [
        (cfg.mode in MODES, f"mode={cfg.mode!r} is not one of {', '.join(MODES)}"),
        (cfg.device in ("auto", "cpu") or cfg.device.startswith("cuda"),
         f"device={cfg.device!r}; allowed: auto, cpu, cuda, cuda:N"),
        (cfg.trainer.strategy in STRATEGIES, f"trainer.strategy={cfg.trainer.strategy!r} is not one of "
                                             f"{', '.join(STRATEGIES)}"),
        (cfg.trainer.epochs >= 1, f"trainer.epochs={cfg.trainer.epochs}; must be >= 1"),
        (cfg.trainer.batch_size >= 1, f"trainer.batch_size={cfg.trainer.batch_size}; must be >= 1"),
        (cfg.trainer.lr_max >= cfg.trainer.lr_min >= 0, f"trainer.lr_max={cfg.trainer.lr_max} and lr_min="
                                                        f"{cfg.trainer.lr_min}; need lr_max >= lr_min >= 0"),
        (cfg.search_space.name in SPACE_NAMES, f"search_space.name={cfg.search_space.name!r} is not one of "
                                               f"{', '.join(SPACE_NAMES)}"),
        (cfg.search_space.channels % 2 == 0 and cfg.search_space.channels > 0,
         f"search_space.channels={cfg.search_space.channels}; must be a positive even number "
         "(factorized reduction splits channels in two)"),
        (getattr(cfg.search_space, "num_layers", 3) >= 3,
         f"search_space.num_layers={getattr(cfg.search_space, 'num_layers', None)}; must be >= 3"),
        (cfg.search_space.name != "nb201" or cfg.search_space.num_layers % 3 == 0,
         f"search_space.num_layers={cfg.search_space.num_layers}; nb201 needs a multiple of 3 (cells in 3 stages)"),
        (0 <= getattr(cfg.search_space, "dropout", 0) < 1,
         f"search_space.dropout={getattr(cfg.search_space, 'dropout', None)}; allowed [0, 1)"),
        (0 < cfg.controller.skip_target < 1 and cfg.controller.skip_weight >= 0,
         f"controller.skip_target={cfg.controller.skip_target}, skip_weight={cfg.controller.skip_weight}; need "
         "0 < skip_target < 1 and skip_weight >= 0"),
        (cfg.controller.num_updates >= 0 and cfg.controller.num_aggregate >= 1,
         f"controller.num_updates={cfg.controller.num_updates}, num_aggregate={cfg.controller.num_aggregate}; "
         "need num_updates >= 0 and num_aggregate >= 1"),
        (cfg.derive.num_samples >= 0 and cfg.derive.top_k >= 1,
         f"derive.num_samples={cfg.derive.num_samples}, top_k={cfg.derive.top_k}; need >= 0 and >= 1"),
        (cfg.derive.prefilter is None or cfg.derive.prefilter in PREFILTERS,
         f"derive.prefilter={cfg.derive.prefilter!r}; allowed null (none) or {', '.join(PREFILTERS)}"),
        (cfg.derive.prefilter_samples >= 1 and cfg.derive.prefilter_top_k >= 1,
         f"derive.prefilter_samples={cfg.derive.prefilter_samples}, prefilter_top_k={cfg.derive.prefilter_top_k}; "
         "each must be >= 1"),
        (cfg.derive.rank_check_k >= 0 and cfg.derive.rank_check_epochs >= 1 and cfg.derive.proxy_epochs >= 0,
         f"derive.rank_check_k={cfg.derive.rank_check_k}, rank_check_epochs={cfg.derive.rank_check_epochs}, "
         f"proxy_epochs={cfg.derive.proxy_epochs}; need rank_check_k >= 0 (0: off), rank_check_epochs >= 1 and "
         "proxy_epochs >= 0 (0: off)"),
        (0 <= cfg.trainer.collapse_entropy <= 1, f"trainer.collapse_entropy={cfg.trainer.collapse_entropy}; allowed "
                                                 "[0, 1] (a share of the maximum entropy)"),
        (cfg.benchmark.path is None or cfg.search_space.name == "nb201",
         f"benchmark.path={cfg.benchmark.path!r} is set but search_space={cfg.search_space.name}; NAS-Bench-201 "
         "lookups exist only for search_space=nb201"),
        (cfg.naswot.num_samples >= 1, f"naswot.num_samples={cfg.naswot.num_samples}; must be >= 1"),
        (cfg.naswot.batch_size >= 2, f"naswot.batch_size={cfg.naswot.batch_size}; must be >= 2 (the score compares "
                                     "images with each other)"),
        (cfg.retrain.epochs >= 1 and cfg.retrain.batch_size >= 1 and cfg.retrain.eval_batch_size >= 1,
         f"retrain.epochs={cfg.retrain.epochs}, batch_size={cfg.retrain.batch_size}, eval_batch_size="
         f"{cfg.retrain.eval_batch_size}; each must be >= 1"),
        (0 < cfg.retrain.drop_path_keep <= 1, f"retrain.drop_path_keep={cfg.retrain.drop_path_keep}; allowed (0, 1] "
                                              "(1 turns drop-path off)"),
        (0 <= cfg.retrain.dropout < 1, f"retrain.dropout={cfg.retrain.dropout}; allowed [0, 1)"),
        (cfg.retrain.lr_max >= cfg.retrain.lr_min >= 0, f"retrain.lr_max={cfg.retrain.lr_max} and lr_min="
                                                        f"{cfg.retrain.lr_min}; need lr_max >= lr_min >= 0"),
        (cfg.mode != "train" or cfg.arch, "mode=train needs arch=<best_arch.json path or a published name: "
                                          "enas_micro_paper, enas_macro_paper>"),
        (cfg.mode != "eval" or cfg.checkpoint, "mode=eval needs checkpoint=<final.pt of a mode=train run>"),
        (cfg.logger.name in ("none", "wandb"), f"logger.name={cfg.logger.name!r}; allowed none, wandb"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
