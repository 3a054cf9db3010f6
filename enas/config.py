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


@dataclass
class NasrlConvSpaceConfig:
    name: str = "nasrl_conv"
    num_layers: int = 6  # conv layers; each picks its filter height, width, count and skips (Zoph & Le §3.1-3.3)
    channels: int = 0  # stem conv width; 0: the layers read the raw image, as in the paper
    dropout: float = 0.0
    aux_weight: float = 0.0  # no aux head


SPACE_NAMES = ("micro", "macro", "nb201", "nasrl_conv")
NO_SUPERNET_SPACES = ("nasrl_conv",)  # searched by nas_rl or a training-free strategy, never with shared weights


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
    warmup_epochs: int = 0  # the first epochs train the shared weights on uniform architectures, no controller


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
class RankCheckConfig:
    """mode=rank_check: a reference set of uniform architectures trained standalone, against a supernet's scores."""

    num_archs: int = 30
    seed: int = 0
    epochs: int = 10
    reference: Optional[str] = None


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
class NasRlConfig:
    """trainer.strategy=nas_rl: the ENAS controller and REINFORCE, every child trained from scratch (enas.nas_rl)."""

    num_updates: int = 50
    children_per_update: int = 8  # m, the paper's minibatch of architectures per controller update
    child_epochs: int = 10
    child_channels: Optional[int] = None  # null: search_space.channels
    child_layers: Optional[int] = None  # null: search_space.num_layers
    reward: str = "train"  # train | benchmark (nb201: the table's cifar10_valid, no training)
    reward_shaping: Optional[str] = None  # null: validation accuracy | zoph: max of the last 5 epochs, cubed
    workers: int = 1  # children trained at once in a process pool on this machine


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
class DistConfig:
    """One search over several processes (enas.distributed, enas.launch): dist=ddp, or torchrun."""

    nproc_per_node: int = 1  # processes this Hydra job starts with torch's elastic launcher (1: none)
    backend: Optional[str] = None  # null: nccl on CUDA, gloo on CPU
    grad_sync: str = "ddp"  # ddp | allreduce_used


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
    search_space: Any = MISSING  # MicroSpaceConfig | MacroSpaceConfig | Nb201SpaceConfig | NasrlConvSpaceConfig
    controller: ControllerConfig = MISSING
    trainer: SearchTrainerConfig = MISSING
    retrain: RetrainConfig = MISSING
    arch: Optional[str] = None
    checkpoint: Optional[str] = None
    derive: DeriveConfig = field(default_factory=DeriveConfig)
    naswot: NaswotConfig = field(default_factory=NaswotConfig)
    nas_rl: NasRlConfig = field(default_factory=NasRlConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    rank_check: RankCheckConfig = field(default_factory=RankCheckConfig)
    logger: LoggerConfig = MISSING
    dist: DistConfig = field(default_factory=DistConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


MODES = ("search", "derive", "train", "eval", "bench", "report", "rank_check")
STRATEGIES = ("enas", "random", "naswot", "params", "random_pick", "nas_rl")
NAS_RL_REWARDS, NAS_RL_SHAPINGS = ("train", "benchmark"), ("zoph",)
PREFILTERS = ("naswot",)
GRAD_SYNCS = ("ddp", "allreduce_used")


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="data", name="cifar10_schema", node=Cifar10Data)
    cs.store(group="data", name="npz_schema", node=NpzData)
    cs.store(group="data", name="synthetic_schema", node=SyntheticData)
    cs.store(group="search_space", name="micro_schema", node=MicroSpaceConfig)
    cs.store(group="search_space", name="macro_schema", node=MacroSpaceConfig)
    cs.store(group="search_space", name="nb201_schema", node=Nb201SpaceConfig)
    cs.store(group="search_space", name="nasrl_conv_schema", node=NasrlConvSpaceConfig)
    cs.store(group="controller", name="controller_schema", node=ControllerConfig)
    cs.store(group="trainer", name="search_schema", node=SearchTrainerConfig)
    cs.store(group="retrain", name="retrain_schema", node=RetrainConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    cs.store(group="dist", name="dist_schema", node=DistConfig)


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
        (cfg.search_space.name == "nasrl_conv"  # its channels are a stem width, 0 allowed: checked below
         or (cfg.search_space.channels % 2 == 0 and cfg.search_space.channels > 0),
         f"search_space.channels={cfg.search_space.channels}; must be a positive even number "
         "(factorized reduction splits channels in two)"),
        (cfg.search_space.name != "nasrl_conv"
         or (cfg.search_space.channels >= 0 and cfg.search_space.num_layers >= 1),
         f"search_space.channels={cfg.search_space.channels}, num_layers={cfg.search_space.num_layers}; nasrl_conv "
         "needs channels >= 0 (the stem width; 0: no stem) and num_layers >= 1"),
        (cfg.search_space.name == "nasrl_conv" or getattr(cfg.search_space, "num_layers", 3) >= 3,
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
        (0 <= cfg.trainer.warmup_epochs, f"trainer.warmup_epochs={cfg.trainer.warmup_epochs}; must be >= 0 (0: off)"),
        (0 <= cfg.trainer.collapse_entropy <= 1, f"trainer.collapse_entropy={cfg.trainer.collapse_entropy}; allowed "
                                                 "[0, 1] (a share of the maximum entropy)"),
        (cfg.benchmark.path is None or cfg.search_space.name == "nb201",
         f"benchmark.path={cfg.benchmark.path!r} is set but search_space={cfg.search_space.name}; NAS-Bench-201 "
         "lookups exist only for search_space=nb201"),
        *_nas_rl_checks(cfg),
        (cfg.rank_check.num_archs >= 2 and cfg.rank_check.epochs >= 1,
         f"rank_check.num_archs={cfg.rank_check.num_archs}, epochs={cfg.rank_check.epochs}; need num_archs >= 2 "
         "(a ranking) and epochs >= 1"),
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
        (cfg.dist.nproc_per_node >= 1 and cfg.dist.grad_sync in GRAD_SYNCS
         and cfg.dist.backend in (None, "gloo", "nccl"),
         f"dist.nproc_per_node={cfg.dist.nproc_per_node}, grad_sync={cfg.dist.grad_sync!r}, backend="
         f"{cfg.dist.backend!r}; need nproc_per_node >= 1, grad_sync one of {', '.join(GRAD_SYNCS)}, backend null "
         "(nccl on CUDA, gloo on CPU), gloo or nccl"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def _nas_rl_checks(cfg: Config) -> list[tuple[bool, str]]:
    """trainer.strategy=nas_rl and search_space=nasrl_conv (a space without shared weights)."""
    n, space = cfg.nas_rl, cfg.search_space.name
    checks = [
        (space not in NO_SUPERNET_SPACES or cfg.mode != "search" or cfg.trainer.strategy not in ("enas", "random"),
         f"trainer.strategy={cfg.trainer.strategy} needs a supernet (shared weights), but search_space={space} has "
         "none; use trainer.strategy=nas_rl (every child trained from scratch) or naswot, params, random_pick"),
        (space not in NO_SUPERNET_SPACES or cfg.mode not in ("derive", "bench"),
         f"mode={cfg.mode} needs a supernet (shared weights), but search_space={space} has none"),
    ]
    if cfg.trainer.strategy != "nas_rl":
        return checks
    return checks + [
        (n.num_updates >= 1 and n.children_per_update >= 1 and n.child_epochs >= 1 and n.workers >= 1,
         f"nas_rl.num_updates={n.num_updates}, children_per_update={n.children_per_update}, child_epochs="
         f"{n.child_epochs}, workers={n.workers}; each must be >= 1"),
        (n.reward in NAS_RL_REWARDS, f"nas_rl.reward={n.reward!r} is not one of {', '.join(NAS_RL_REWARDS)}"),
        (n.reward_shaping is None or n.reward_shaping in NAS_RL_SHAPINGS,
         f"nas_rl.reward_shaping={n.reward_shaping!r}; allowed null (the validation accuracy) or "
         f"{', '.join(NAS_RL_SHAPINGS)} (the max of the last 5 epochs, cubed)"),
        (n.reward != "benchmark" or space == "nb201",
         f"nas_rl.reward=benchmark looks rewards up in NAS-Bench-201, which holds only search_space=nb201, not "
         f"{space}; use nas_rl.reward=train"),
        (n.reward != "benchmark" or bool(cfg.benchmark.path),
         "nas_rl.reward=benchmark needs benchmark.path=<NAS-Bench-201 table or NATS directory> (README: benchmark "
         "file)"),
        (n.child_channels is None or (n.child_channels >= 0 if space == "nasrl_conv" else
                                      n.child_channels > 0 and n.child_channels % 2 == 0),
         f"nas_rl.child_channels={n.child_channels}; allowed null (search_space.channels) or a positive even number "
         "(nasrl_conv: the stem width, >= 0)"),
        (n.child_layers is None or (n.child_layers == cfg.search_space.num_layers if space == "nasrl_conv" else
                                    n.child_layers >= 3 and (space != "nb201" or n.child_layers % 3 == 0)),
         f"nas_rl.child_layers={n.child_layers}; allowed null (search_space.num_layers) or >= 3 (nb201: a multiple "
         "of 3; nasrl_conv: the architecture's depth, search_space.num_layers)"),
    ]
