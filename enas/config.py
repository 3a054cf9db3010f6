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
    shared_sampling: str = "policy"  # the shared pass trains the sampler's archs (policy) or uniform ones (uniform)
    reward: str = "acc"  # a rewarded child's score on its validation minibatch: acc | loss (exp(-cross-entropy))
    few_shot_epoch: int = 0  # > 0: at this epoch the supernet splits into one copy per first op choice (few_shot)


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
    score: str = "loss"  # rank candidates by validation "loss" (lower mean cross-entropy first) or "acc" (ENAS)
    prefilter: Optional[str] = "naswot"  # or "params": keep the prefilter_top_k of prefilter_samples by that score
    prefilter_samples: int = 200
    prefilter_top_k: int = 20
    rank_check_k: int = 0  # > 0: Kendall tau of the shared-weight scores against a reference for the top k
    rank_check_epochs: int = 5  # the proxy retrain's epochs when no benchmark is configured
    proxy_epochs: int = 0  # > 0: retrain the winner at the search skeleton, report proxy_acc (every strategy)
    proxy_seeds: int = 1  # that retrain with seeds seed, seed+1, ...: proxy_acc is their mean


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
    depth_start: Optional[int] = None  # nasrl_conv: growing depth from this many layers; null: search_space.num_layers
    depth_step: int = 2  # layers added every depth_every_children children (Zoph & Le §4.1: 2)
    depth_every_children: int = 1600  # children sampled between depth steps (Zoph & Le §4.1: 1,600)


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
