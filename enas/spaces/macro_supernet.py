"""The ENAS macro search child (a supernet of which each sampled architecture runs only its path) and the fixed
macro network a found architecture is retrained as.

Reference: enas_reference.md §2 and §9 (melodyguan/enas src/cifar10/general_child.py: `_model`, `_enas_layer`,
`_fixed_layer`, `_conv_branch`, `_pool_branch`, `_factorized_reduction`). The skip indexing is the child's
(macro_arch.py): skip_j of layer i reads entry j of [stem, layer 0, ..., layer i-1].

Search graph: stem conv 3x3 + BN; every layer owns all six branches (conv: 1x1 conv-BN-ReLU, then kxk conv or
depthwise-separable kxk, BN, ReLU; pool: 1x1 conv-BN-ReLU, 3x3 pool at stride 1); for i > 0
out = BN(op_out + sum of the selected skips); after layers pool_distance-1 and 2*pool_distance-1 every earlier
output (stem included) gets its own factorized reduction; C stays constant; head: global average pool, dropout,
FC (no bias). All BNs use batch statistics. Unlike the official graph, the sampled op really runs: its `tf.case`
branches were `lambda: y` closures that all returned the last `y`, the max-pool branch (§2, pitfall 10).
Reductions of earlier outputs are computed on demand, only for entries a later layer reads: the same forward.
"""
from __future__ import annotations

import torch
from torch import nn

from enas.ops import DepthwiseConv2d, FactorizedReduce, batch_norm, he_init_, pool
from enas.spaces.base import ArchError
from enas.spaces.macro_arch import OPS, MacroArch, reduction_layers


def conv1x1_bn(c_in: int, c_out: int, track_running_stats: bool) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, 1, bias=False)
    he_init_(conv.weight, c_in)
    return nn.Sequential(conv, batch_norm(c_out, track_running_stats))


def kxk_conv(channels: int, kernel: int, separable: bool) -> nn.Sequential:
    """kxk conv, or depthwise kxk (multiplier 1) followed by pointwise 1x1 (`tf.nn.separable_conv2d`); no bias.
    He init with TF's fan-in of the stored shapes: [k, k, C, C] and [k, k, C, 1] give k*k*C, [C, C] gives C."""
    if not separable:
        conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False)
        he_init_(conv.weight, kernel * kernel * channels)
        return nn.Sequential(conv)
    depthwise = DepthwiseConv2d(channels, kernel)
    pointwise = nn.Conv2d(channels, channels, 1, bias=False)
    he_init_(depthwise.weight, kernel * kernel * channels)
    he_init_(pointwise.weight, channels)
    return nn.Sequential(depthwise, pointwise)


def op_kernel(op: str) -> int:
    return 5 if op.endswith("5x5") else 3


class SearchBranch(nn.Module):
    """One op of one search layer: 1x1 conv-BN-ReLU, then kxk (separable) conv-BN-ReLU or a 3x3 pool."""

    reads_all_weights = True  # a pool branch has no `out`

    def __init__(self, op: str, channels: int):
        super().__init__()
        self.op = op
        self.inp = conv1x1_bn(channels, channels, track_running_stats=False)
        if op.startswith(("conv", "sep_conv")):
            self.out = nn.Sequential(*kxk_conv(channels, op_kernel(op), op.startswith("sep")),
                                     batch_norm(channels, track_running_stats=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.inp(x))
        if self.op.endswith("pool_3x3"):
            return pool(x, self.op[:3])
        return torch.relu(self.out(x))


class SearchLayer(nn.Module):
    def __init__(self, channels: int, layer_id: int):
        super().__init__()
        self.branches = nn.ModuleDict({op: SearchBranch(op, channels) for op in OPS})
        self.bn = batch_norm(channels, track_running_stats=False) if layer_id > 0 else None

    def forward(self, x: torch.Tensor, op: str, skips: list[torch.Tensor]) -> torch.Tensor:
        out = self.branches[op](x)  # dispatch by name: only the sampled op runs
        if self.bn is None:
            return out
        for s in skips:
            out = out + s
        return self.bn(out)


class Entries:
    """[stem, layer 0, ...] at the current resolution; an entry's factorized reductions run when it is read."""

    def __init__(self, reductions: nn.ModuleList):
        self.reductions, self.tensors, self.levels, self.level = reductions, [], [], 0

    def append(self, x: torch.Tensor) -> None:
        self.tensors.append(x)
        self.levels.append(self.level)

    def __getitem__(self, j: int) -> torch.Tensor:
        while self.levels[j] < self.level:
            self.tensors[j] = self.reductions[self.levels[j]][j](self.tensors[j])
            self.levels[j] += 1
        return self.tensors[j]


def run_layers(layers: nn.ModuleList, arch: MacroArch, reductions, entries: Entries, stem_out: torch.Tensor,
               call) -> torch.Tensor:
    """[stem, layer 0, ...] through the layers: each layer reads the previous output and its skips
    (`call(layer, spec, x, skips)`); after a reduction layer earlier entries are reduced when read. Returns the
    last layer's output."""
    entries.append(stem_out)
    for i, (layer, spec) in enumerate(zip(layers, arch.layers)):
        out = call(layer, spec, entries[i], [entries[j] for j in spec.skip_sources()])
        entries.append(out)
        if i in reductions:
            entries.level += 1
    return out


def check_depth(arch: MacroArch, num_layers: int) -> None:
    if arch.num_layers != num_layers:
        raise ArchError(f"architecture has {arch.num_layers} layers; this network has {num_layers}")


class MacroSupernet(nn.Module):
    """`forward(x, arch) -> (logits, None)`: the macro search child of `arch`, running only its path."""

    def __init__(self, num_layers: int = 12, channels: int = 36, num_classes: int = 10, in_channels: int = 3,
                 dropout: float = 0.1):
        super().__init__()
        self.num_layers, self.reductions = num_layers, reduction_layers(num_layers)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  batch_norm(channels, track_running_stats=False))
        he_init_(self.stem[0].weight, 9 * in_channels)
        self.layers = nn.ModuleList(SearchLayer(channels, i) for i in range(num_layers))
        # reduce[r][j]: the factorized reduction of entry j (0 = stem) at the r-th reduction point
        self.reduce = nn.ModuleList(nn.ModuleList(FactorizedReduce(channels, channels) for _ in range(after + 2))
                                    for after in self.reductions)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes, bias=False)
        he_init_(self.classifier.weight, channels)

    def forward(self, x: torch.Tensor, arch: MacroArch) -> tuple[torch.Tensor, None]:
        check_depth(arch, self.num_layers)
        out = run_layers(self.layers, arch, self.reductions, Entries(self.reduce), self.stem(x),
                         lambda layer, spec, h, skips: layer(h, spec.op, skips))
        return self.classifier(self.dropout(out.mean((2, 3)))), None

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class FixedLayer(nn.Module):
    """A final-graph layer (ReLU before each conv, `_fixed_layer`): ReLU-1x1 conv-BN, then ReLU-kxk conv-BN
    (separable for sep ops: depthwise kxk then pointwise 1x1, unlike the official plain conv) or a 3x3 pool
    (not implemented officially); for i > 0: concat(selected skips, op output) -> ReLU -> 1x1 conv to C -> BN."""

    def __init__(self, op: str, channels: int, num_skips: int | None):
        super().__init__()
        self.op = op
        self.inp = conv1x1_bn(channels, channels, track_running_stats=True)
        if op.startswith(("conv", "sep_conv")):
            self.out = nn.Sequential(*kxk_conv(channels, op_kernel(op), op.startswith("sep")),
                                     batch_norm(channels, track_running_stats=True))
        self.combine = (conv1x1_bn((num_skips + 1) * channels, channels, track_running_stats=True)
                        if num_skips is not None else None)
        # modules, not torch.relu: NASWOT hooks nn.ReLU (no parameters, so the state dict is unchanged)
        self.relu_inp, self.relu_out, self.relu_combine = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        out = self.inp(self.relu_inp(x))
        out = pool(out, self.op[:3]) if self.op.endswith("pool_3x3") else self.out(self.relu_out(out))
        if self.combine is None:
            return out
        return self.combine(self.relu_combine(torch.cat([*skips, out], dim=1)))


class MacroNetwork(nn.Module):
    """The fixed macro network of `arch` for final training: `forward(x) -> (logits, None)`.

    As the official final graph (§2): channels double at each reduction (96 -> 192 -> 384 at C=96), every layer
    i > 0 has the concat-ReLU-1x1-BN skip combination even without skips, BNs keep running statistics, head:
    global average pool, dropout, FC (no bias). Sep ops are real separable convs and the pool ops exist.
    Factorized reductions are built only for entries a later layer reads (the official graph builds one for every
    earlier output; the unread ones never get a gradient).

    Parameters with the published arc (L=24, C=96): 30,947,424. The official final graph has 42,559,392 (§9,
    measured): the same network with its 7 sep layers built as plain kxk convs (+11,611,968); in this arc a
    later layer reads every output that exists at a reduction, so no reduction is left out (tests/test_macro.py
    rebuilds the official count from this network). The paper reports 21.3M for this row (recalled).
    """

    def __init__(self, arch: MacroArch, num_layers: int = 24, channels: int = 96, num_classes: int = 10,
                 in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        check_depth(arch, num_layers)
        self.arch, self.reductions = arch, reduction_layers(num_layers)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  batch_norm(channels, track_running_stats=True))
        he_init_(self.stem[0].weight, 9 * in_channels)
        self.layers, self.reduce = nn.ModuleList(), nn.ModuleList()
        c = channels
        for i, spec in enumerate(arch.layers):
            self.layers.append(FixedLayer(spec.op, c, len(spec.skip_sources()) if i > 0 else None))
            if i in self.reductions:
                read_later = self.entries_read_after(i)
                self.reduce.append(nn.ModuleDict({str(j): FactorizedReduce(c, 2 * c, track_running_stats=True)
                                                  for j in range(i + 2) if j in read_later}))
                c *= 2
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c, num_classes, bias=False)
        he_init_(self.classifier.weight, c)

    def entries_read_after(self, i: int) -> set[int]:
        """Entries (0 = stem) that a layer after layer i reads, as its input or a skip."""
        return {j for k in range(i + 1, self.arch.num_layers) for j in (k, *self.arch.layers[k].skip_sources())}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = run_layers(self.layers, self.arch, self.reductions, Entries([_Lookup(r) for r in self.reduce]),
                         self.stem(x), lambda layer, spec, h, skips: layer(h, skips))
        return self.classifier(self.dropout(out.mean((2, 3)))), None

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class _Lookup:
    """Index a ModuleDict keyed by entry number like a list (what `Entries` expects)."""

    def __init__(self, modules: nn.ModuleDict):
        self.modules = modules

    def __getitem__(self, j: int) -> nn.Module:
        return self.modules[str(j)]
