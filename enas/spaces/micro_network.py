"""The fixed micro network of one architecture: what a found cell pair is retrained as, from scratch.

Reference: enas_reference.md §1.2-§1.8 and §9 (melodyguan/enas src/cifar10/micro_child.py with a fixed arc:
`_model`, `_fixed_layer`, `_fixed_conv`, `_fixed_combine`, `_maybe_calibrate_size`). Unlike the search graph:
- cell i takes [h_{i-2}, h_{i-1}]; reduction cells stride 2 on the ops that read the cell inputs, channels double;
- input 0 is calibrated (ReLU + factorized reduction when it is at twice the resolution, else ReLU-1x1-BN when
  its width differs); input 1 passes ReLU-1x1-BN when its width differs, then always the `layer_base`
  ReLU-1x1-BN (so two in a row, §9);
- the cell output concatenates the loose ends without projection (an unused input still at the larger
  resolution is factor-reduced first), so a cell is (#loose ends) x C wide;
- drop-path on the output of every op but identity, with the per-cell and per-step keep schedule of §1.8;
- BNs keep running statistics (eval mode uses them); the aux head trains (the official code froze it, §1.7).
"""
from __future__ import annotations

import torch
from torch import nn

from enas.ops import AuxHead, FactorizedReduce, ReLUFactorizedReduce, SepConv, batch_norm, conv_bn, he_init_, pool
from enas.spaces.micro_arch import NUM_INPUT_NODES, Cell, MicroArch
from enas.spaces.micro_supernet import reduction_positions


def drop_path(x: torch.Tensor, keep_prob: float) -> torch.Tensor:
    """Zero whole samples with probability 1 - keep_prob and rescale the rest: E[out] = x."""
    if keep_prob >= 1.0:
        return x
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep_prob)
    return x * mask / keep_prob


def drop_path_keep(cell_index: int, num_cells: int, final_keep: float, progress: float) -> float:
    """Keep probability of cell `cell_index` (0-based, reduction cells included) after `progress` (0..1) of
    training: deeper cells drop more, and the drop ramps up linearly over training (§1.8, §9)."""
    layer_keep = 1.0 - (cell_index + 1) / num_cells * (1.0 - final_keep)
    return 1.0 - min(1.0, progress) * (1.0 - layer_keep)


class _CatChannels(torch.autograd.Function):
    """torch.cat along channels whose backward hands each input a dense gradient. Plain cat's backward gives
    channel slices of a channels_last gradient, on which the BN and ReLU backward kernels run ~4x slower
    (performance.md §6); the copy costs far less than that."""

    @staticmethod
    def forward(ctx, *xs: torch.Tensor) -> torch.Tensor:
        ctx.sizes = [x.shape[1] for x in xs]
        ctx.formats = [torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                       and not x.is_contiguous() else torch.contiguous_format for x in xs]
        return torch.cat(xs, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return tuple(g.contiguous(memory_format=f) for g, f in zip(grad.split(ctx.sizes, dim=1), ctx.formats))


def cat_channels(xs: list[torch.Tensor]) -> torch.Tensor:
    return xs[0] if len(xs) == 1 else _CatChannels.apply(*xs)


class FixedOp(nn.Module):
    """One op of a fixed cell; `stride` 2 only on ops that read a cell input of a reduction cell."""

    def __init__(self, op: str, channels: int, stride: int):
        super().__init__()
        self.op, self.stride = op, stride
        if op in ("sep_conv_3x3", "sep_conv_5x5"):
            self.conv = SepConv(channels, 3 if op == "sep_conv_3x3" else 5, stride, track_running_stats=True)
        elif op == "identity" and stride > 1:
            self.reduce = FactorizedReduce(channels, channels, track_running_stats=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op in ("sep_conv_3x3", "sep_conv_5x5"):
            return self.conv(x)
        if self.op in ("avg_pool_3x3", "max_pool_3x3"):
            return pool(x, self.op[:3], self.stride)
        return self.reduce(x) if self.stride > 1 else x


class FixedCell(nn.Module):
    def __init__(self, cell: Cell, in_shapes: tuple[tuple[int, int], tuple[int, int]], channels: int,
                 reduction: bool):
        super().__init__()
        self.cell = cell
        (c0, s0), (c1, s1) = in_shapes
        if s0 == 2 * s1:
            self.calibrate_x: nn.Module = ReLUFactorizedReduce(c0, channels, track_running_stats=True)
        elif c0 != channels:
            self.calibrate_x = conv_bn(c0, channels, 1, track_running_stats=True)
        else:
            self.calibrate_x = nn.Identity()
        calibrate_y = [conv_bn(c1, channels, 1, track_running_stats=True)] if c1 != channels else []
        self.calibrate_y = nn.Sequential(*calibrate_y, conv_bn(channels, channels, 1, track_running_stats=True))
        stride = lambda source: 2 if reduction and source < NUM_INPUT_NODES else 1  # noqa: E731
        self.ops = nn.ModuleList(nn.ModuleList([FixedOp(n.op_a, channels, stride(n.input_a)),
                                                FixedOp(n.op_b, channels, stride(n.input_b))]) for n in cell.nodes)
        # loose-end inputs still at the input resolution are factor-reduced before the concatenation
        self.reduce_loose = nn.ModuleDict({str(k): FactorizedReduce(channels, channels, track_running_stats=True)
                                           for k in cell.loose_ends() if reduction and k < NUM_INPUT_NODES})
        self.out_channels = len(cell.loose_ends()) * channels

    def forward(self, h0: torch.Tensor, h1: torch.Tensor, keep_prob: float) -> torch.Tensor:
        states = [self.calibrate_x(h0), self.calibrate_y(h1)]
        for node, (op_a, op_b) in zip(self.cell.nodes, self.ops):
            a, b = op_a(states[node.input_a]), op_b(states[node.input_b])
            if self.training:
                a = a if node.op_a == "identity" else drop_path(a, keep_prob)
                b = b if node.op_b == "identity" else drop_path(b, keep_prob)
            states.append(a + b)
        loose = [self.reduce_loose[str(k)](states[k]) if str(k) in self.reduce_loose else states[k]
                 for k in self.cell.loose_ends()]
        return cat_channels(loose)


class MicroNetwork(nn.Module):
    """Stem → num_layers normal + 2 reduction fixed cells → ReLU, global pool, dropout, FC (no bias).

    `forward(x)` returns (logits, aux logits in training mode when the aux head exists, else None). The
    training loop sets `drop_path_progress` (fraction of training done) before each step.
    """

    def __init__(self, arch: MicroArch, num_layers: int = 15, channels: int = 36, num_classes: int = 10,
                 image_size: int = 32, in_channels: int = 3, dropout: float = 0.2, aux_head: bool = True,
                 drop_path_keep: float = 0.6):
        super().__init__()
        if not 0.0 < drop_path_keep <= 1.0:
            raise ValueError(f"drop_path_keep={drop_path_keep}; allowed (0, 1] (1 turns drop-path off)")
        self.arch, self.drop_path_keep_final, self.drop_path_progress = arch, drop_path_keep, 0.0
        self.reductions = reduction_positions(num_layers)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 3 * channels, 3, padding=1, bias=False),
                                  batch_norm(3 * channels, track_running_stats=True))
        he_init_(self.stem[0].weight, 9 * in_channels)
        self.cells = nn.ModuleList()
        shapes = [(3 * channels, image_size)] * 2
        c, size = channels, image_size
        self.aux_position = self.reductions[-1] + 1 if aux_head else None
        for i in range(num_layers + 2):
            reduction = i in self.reductions
            if reduction:
                c, size = 2 * c, (size + 1) // 2
            cell = FixedCell(arch.reduce if reduction else arch.normal, (shapes[0], shapes[1]), c, reduction)
            self.cells.append(cell)
            shapes = [shapes[1], (cell.out_channels, size)]
            if i == self.aux_position:
                self.aux_head = AuxHead(cell.out_channels, size, num_classes, track_running_stats=True)
        self.relu = nn.ReLU()  # a module, not F.relu: NASWOT hooks nn.ReLU
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(shapes[1][0], num_classes, bias=False)
        he_init_(self.classifier.weight, shapes[1][0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h0 = h1 = self.stem(x)
        aux_logits = None
        for i, cell in enumerate(self.cells):
            keep = drop_path_keep(i, len(self.cells), self.drop_path_keep_final, self.drop_path_progress)
            h0, h1 = h1, cell(h0, h1, keep)
            if i == self.aux_position and self.training:
                aux_logits = self.aux_head(h1)
        logits = self.classifier(self.dropout(self.relu(h1).mean((2, 3))))
        return logits, aux_logits

    def num_params(self, include_aux: bool = False) -> int:
        return sum(p.numel() for name, p in self.named_parameters() if include_aux or not name.startswith("aux_head"))
