"""Builders: the typed config turned into the objects a run needs (device, data, search space, supernet, sampler,
fixed-network arguments, benchmark lookups), in a fixed order so that one seed fixes every initial weight."""
from __future__ import annotations

import ctypes
import logging
import os
from typing import Callable

import torch
from torch import nn

from enas.benchmark import open_benchmark
from enas.config import Config
from enas.controller import Controller
from enas.data import Dataset, load_cifar10, load_npz, make_synthetic
from enas.few_shot import FewShotSupernet
from enas.naswot import NaswotJudge, scoring_batch
from enas.networks import build_network, space_of
from enas.reinforce import Reinforce
from enas.samplers import ControllerSampler, UniformSampler
from enas.spaces.macro import MacroSpace
from enas.spaces.micro import MicroSpace
from enas.spaces.nasrl_conv import NasrlConvSpace
from enas.spaces.nb201 import Nb201Space

log = logging.getLogger(__name__)
UNIFORM_STRATEGIES = ("random", "naswot", "params", "random_pick")  # sample uniformly; no controller


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """cudnn autotuning for speed, or deterministic kernels only (deterministic=true); on CPU, freed tensor memory
    stays with the process (keep_freed_memory)."""
    torch.use_deterministic_algorithms(deterministic)  # process-wide: set both ways, so one run never leaks
    if device.type == "cpu":
        keep_freed_memory()
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # few distinct conv shapes recur across architectures


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory in the process: blocks up to 32 MiB come from the heap, and the heap
    is never trimmed. A CPU training step frees and re-allocates the same few-MiB activations hundreds of times; each
    one handed back to the OS page-faults afresh when next written (micro search, `experiment=bench_nni`, on the
    project's 2-core CPU: 2,400 faults and 295 ms per step, against 1,000 faults and 287 ms with this). The
    process keeps its peak memory instead of returning it. Returns False where there is no glibc (nothing changes)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


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
    if s.name == "nasrl_conv":
        return NasrlConvSpace(num_layers=s.num_layers, stem_channels=s.channels, dropout=s.dropout, **shape)
    return MicroSpace(num_nodes=s.num_nodes, num_layers=s.num_layers, channels=s.channels,
                      image_size=data.train.x.shape[-1], dropout=s.dropout, aux_head=s.aux_weight > 0,
                      normal_op_bias=s.normal_op_bias, **shape)


def build_sampler(cfg: Config, space, device: torch.device):
    generator = torch.Generator(device).manual_seed(cfg.seed + 4)
    if cfg.trainer.strategy in UNIFORM_STRATEGIES:
        return UniformSampler(space, generator)
    c = cfg.controller
    controller = Controller(space.steps(), lstm_size=c.lstm_size, tanh_input=c.tanh_input, tanh_op=c.tanh_op,
                            temperature=c.temperature, op_bias=c.op_bias, op_bias_init=c.op_bias_init,
                            init_range=c.init_range, skip_target=c.skip_target).to(device)
    reinforce = Reinforce(controller, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps,
                          baseline_decay=c.baseline_decay, entropy_weight=c.entropy_weight)
    return ControllerSampler(space, controller, reinforce, generator, skip_weight=c.skip_weight)


def build_supernet(cfg: Config, space) -> nn.Module:
    """The space's supernet, or its few-shot version when trainer.few_shot_epoch > 0 (enas.few_shot)."""
    return FewShotSupernet(space) if cfg.trainer.few_shot_epoch else space.supernet()


def build_components(cfg: Config):
    """Data, space, supernet and sampler, built in a fixed order so that a seed fixes every initial weight."""
    device = resolve_device(cfg.device)
    configure_backends(device, cfg.deterministic)
    data = build_dataset(cfg.data, device)
    torch.manual_seed(cfg.seed)  # weights and controller init; dropout draws from this state too
    space = build_space(cfg, data)
    net = build_supernet(cfg, space).to(device)
    sampler = build_sampler(cfg, space, device)
    log.info("data: %d train / %d valid images, %d classes; supernet: %s parameters on %s", len(data.train),
             len(data.valid), data.num_classes, f"{sum(p.numel() for p in net.parameters()):,}", device)
    return data, space, net, sampler



def fixed_network_kwargs(space: str, data: Dataset, num_layers: int, channels: int, dropout: float,
                         aux_head: bool = False, drop_path_keep: float = 1.0) -> dict:
    """Constructor arguments of a space's fixed network at this depth and width, sized for the data. nb201 takes
    num_layers // 3 cells per stage; macro ignores the aux head and drop-path (it has neither); nasrl_conv's depth is
    the architecture's (num_layers must match it) and its channels are the stem's width (0: no stem)."""
    shape = dict(num_classes=data.num_classes, in_channels=data.train.x.shape[1])
    if space == "nasrl_conv":
        return dict(num_layers=num_layers, stem_channels=channels, dropout=dropout, **shape)
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


def skeleton_params(cfg: Config, data: Dataset, arch) -> int:
    """Parameters of `arch`'s fixed network at the search skeleton, built on the meta device (shapes only: no
    memory, no initialisation): the `params` baseline's score and a column of every search's result."""
    with torch.device("meta"):
        return sum(p.numel() for p in build_network(arch, **skeleton_kwargs(cfg, data)).parameters())


def naswot_judge(cfg: Config, data: Dataset) -> NaswotJudge:
    """Fresh networks at the search skeleton, each scored on the same naswot.batch_size training images."""
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    kwargs = skeleton_kwargs(cfg, data)
    images = scoring_batch(data, cfg.naswot.batch_size, cfg.seed + 5, memory_format)
    return NaswotJudge(lambda arch: build_network(arch, **kwargs), images, cfg.seed, memory_format)


def network_kwargs(arch, cfg, data: Dataset) -> dict:
    """Constructor arguments of `arch`'s fixed network from the retrain config and the data's shape."""
    space = space_of(arch)
    # a macro network's depth is the architecture's own (a configured depth must agree); micro 15, nb201 5 x 3
    depth = cfg.num_layers or (arch.num_layers if space in ("macro", "nasrl_conv") else 15)
    return fixed_network_kwargs(space, data, depth, cfg.channels, cfg.dropout, cfg.aux_weight > 0,
                                cfg.drop_path_keep)


def benchmark_lookup(cfg: Config) -> Callable[[object], dict]:
    """`describe(arch)`: {"benchmark": accuracies} for every nb201 architecture a run reports when benchmark.path is
    set (opened once, up front, so a bad path fails before any training), else {}."""
    if not cfg.benchmark.path:
        return lambda arch: {}
    benchmark = open_benchmark(cfg.benchmark.path)
    log.info("NAS-Bench-201 lookups from %s (%d architectures; 200-epoch seed means)", cfg.benchmark.path,
             len(benchmark))
    return lambda arch: {"benchmark": benchmark.accuracies(arch)}
