"""NAS-Bench-201 networks: the weight-sharing supernet, and the fixed network the benchmark trained for one cell.

Reference: shared/reference/nb201.md §1 (D-X-Y/AutoDL-Projects `TinyNetwork`, `InferCell`, `ResNetBasicblock`,
`ReLUConvBN`) and §3 (the search supernets' `NAS201SearchCell`, `forward_dynamic`). Skeleton, C=16, N=5:
stem conv3x3 (3 -> C) + BN; N cells at C; ResNet block (C -> 2C, stride 2); N cells at 2C; ResNet block
(2C -> 4C); N cells at 4C; BN -> ReLU -> global average pool -> linear. All cells share the one genotype.
Ops: `nor_conv_kxk` = ReLU -> conv (stride 1, pad k//2, no bias) -> BN; `skip_connect` = identity;
`avg_pool_3x3` = stride 1, pad 1, padding not counted; `none` = zero. Weights use PyTorch's default init, as the
benchmark's networks do (no explicit init in `TinyNetwork`).
Unlike the benchmark, which multiplies by zero, a `none` edge runs nothing and adds nothing, and edges into a node
that cannot reach the output are skipped: the output is the same (a node with no incoming op is zeros, and an op
reading it still runs, so a conv edge from it adds its BN shift as in the benchmark).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from enas.spaces.nb201_arch import EDGES, NUM_NODES, OUTPUT_NODE, Nb201Arch

CONV_KERNELS = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}  # the ops with weights


def relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int, affine: bool,
                 track_running_stats: bool) -> nn.Sequential:
    # the benchmark gives the conv a bias when BN is not affine; in front of a BN on batch statistics a bias
    # cancels out (and gets a zero gradient), so it is left out
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track_running_stats))


class ResBlock(nn.Module):
    """`ResNetBasicblock` at stride 2: ReLUConvBN 3x3/s2 -> ReLUConvBN 3x3, plus avgpool 2x2 -> conv 1x1 (no BN);
    summed, no ReLU after the sum."""

    def __init__(self, c_in: int, c_out: int, track_running_stats: bool):
        super().__init__()
        self.conv_a = relu_conv_bn(c_in, c_out, 3, 2, True, track_running_stats)
        self.conv_b = relu_conv_bn(c_out, c_out, 3, 1, True, track_running_stats)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class Head(nn.Module):
    """BN -> ReLU -> global average pool -> linear (the BN-ReLU is easy to miss, nb201.md §1)."""

    def __init__(self, channels: int, num_classes: int, track_running_stats: bool):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, track_running_stats=track_running_stats)
        self.relu = nn.ReLU()  # a module, not F.relu: NASWOT hooks nn.ReLU
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.relu(self.bn(x)).mean((2, 3)))


def stem(in_channels: int, channels: int, track_running_stats: bool) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(channels, track_running_stats=track_running_stats))


def build_layers(make_cell: Callable[[int], nn.Module], channels: int, cells_per_stage: int,
                 track_running_stats: bool) -> tuple[nn.ModuleList, int]:
    """The 3 stages of cells with a ResNet block between them; and the final width (4 x channels)."""
    if channels < 1 or cells_per_stage < 1:
        raise ValueError(f"channels and cells_per_stage must be >= 1, got {channels} and {cells_per_stage}")
    layers, c = [], channels
    for stage in range(3):
        if stage:
            layers.append(ResBlock(c, 2 * c, track_running_stats))
            c *= 2
        layers += [make_cell(c) for _ in range(cells_per_stage)]
    return nn.ModuleList(layers), c


EdgeFn = Callable[[int, str, torch.Tensor], torch.Tensor]


def run_cell(x: torch.Tensor, arch: Nb201Arch, edge_op: EdgeFn) -> torch.Tensor:
    """Node j = sum over the used edges i -> j of edge_op(edge, op, node i); the output is node 3."""
    nodes: list[torch.Tensor | None] = [x] + [None] * (NUM_NODES - 1)
    for k in arch.used_edges():  # ascending: every source node is complete before it is read
        target, source = EDGES[k]
        if nodes[source] is None:  # reached only through `none`: the benchmark's zero tensor
            nodes[source] = torch.zeros_like(x)
        out = edge_op(k, arch.ops[k], nodes[source])
        nodes[target] = out if nodes[target] is None else nodes[target] + out
    return nodes[OUTPUT_NODE] if nodes[OUTPUT_NODE] is not None else torch.zeros_like(x)


def weight_free_op(op: str, x: torch.Tensor) -> torch.Tensor:
    if op == "skip_connect":
        return x
    if op == "avg_pool_3x3":
        return F.avg_pool2d(x, 3, 1, padding=1, count_include_pad=False)
    raise ValueError(f"op {op!r} has weights or is `none`; only skip_connect and avg_pool_3x3 run here")


class SearchCell(nn.Module):
    """One cell position of the supernet: a 1x1 and a 3x3 ReLU-conv-BN per edge (`edges[k][op]`)."""

    def __init__(self, channels: int, affine: bool, track_running_stats: bool):
        super().__init__()
        self.edges = nn.ModuleList(
            nn.ModuleDict({op: relu_conv_bn(channels, channels, k, 1, affine, track_running_stats)
                           for op, k in CONV_KERNELS.items()})
            for _ in EDGES)

    def _edge(self, k: int, op: str, x: torch.Tensor) -> torch.Tensor:
        return self.edges[k][op](x) if op in CONV_KERNELS else weight_free_op(op, x)

    def forward(self, x: torch.Tensor, arch: Nb201Arch) -> torch.Tensor:
        return run_cell(x, arch, self._edge)


class Nb201Supernet(nn.Module):
    """The NB201 skeleton with every conv op of every edge of every cell; `net(x, arch)` runs only `arch`'s ops.

    affine: whether the cells' op BNs learn a scale and shift. Default False, as all of NB201's search supernets
    (nb201.md §3); the stem, ResNet blocks and head BN stay affine, as in AutoDL's `TinyNetwork*` supernets.
    track_running_stats: for every BN. Default False (batch statistics, in eval mode too): running statistics
    averaged over many sampled cells fit none of them, NB201's maintainer found BN=0 "much better" for weight
    sharing and credits it for NATS-Bench's better ENAS/RSPS numbers (AutoDL #70, #115; nb201.md §3, §7), and
    this project's judges score supernets in eval mode expecting batch statistics.
    """

    def __init__(self, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10, in_channels: int = 3,
                 affine: bool = False, track_running_stats: bool = False):
        super().__init__()
        self.stem = stem(in_channels, channels, track_running_stats)
        self.layers, width = build_layers(lambda c: SearchCell(c, affine, track_running_stats), channels,
                                          cells_per_stage, track_running_stats)
        self.head = Head(width, num_classes, track_running_stats)

    def forward(self, x: torch.Tensor, arch: Nb201Arch) -> tuple[torch.Tensor, None]:
        if not isinstance(arch, Nb201Arch):
            raise TypeError(f"the NB201 supernet runs an Nb201Arch, got {type(arch).__name__}")
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x, arch) if isinstance(layer, SearchCell) else layer(x)
        return self.head(x), None


class FixedCell(nn.Module):
    """`InferCell`: the ops of one cell only (`edges[str(k)]` for each conv edge k), affine BN, running stats."""

    def __init__(self, arch: Nb201Arch, channels: int):
        super().__init__()
        self.arch = arch
        self.edges = nn.ModuleDict({str(k): relu_conv_bn(channels, channels, CONV_KERNELS[op], 1, True, True)
                                    for k, op in enumerate(arch.ops) if op in CONV_KERNELS})

    def _edge(self, k: int, op: str, x: torch.Tensor) -> torch.Tensor:
        return self.edges[str(k)](x) if op in CONV_KERNELS else weight_free_op(op, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_cell(x, self.arch, self._edge)


class Nb201Network(nn.Module):
    """The network the benchmark trained for `arch` (`TinyNetwork`): `forward(x) -> (logits, None)`.

    Every BN affine with running statistics. Parameters at C=16, N=5, 10 classes: 1,531,546 for the all-conv3x3
    cell and 73,306 for any cell without a conv (the benchmark's largest and smallest CIFAR-10 `params`).
    """

    def __init__(self, arch: Nb201Arch, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10,
                 in_channels: int = 3):
        super().__init__()
        self.arch = arch
        self.stem = stem(in_channels, channels, True)
        self.layers, width = build_layers(lambda c: FixedCell(arch, c), channels, cells_per_stage, True)
        self.head = Head(width, num_classes, True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x), None
