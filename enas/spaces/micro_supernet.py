"""The ENAS micro search child: one shared supernet, of which each sampled architecture runs only its path.

Reference: enas_reference.md §1.2-§1.6 and §9 (melodyguan/enas src/cifar10/micro_child.py, `_model`,
`_enas_layer`, `_enas_cell`, `_enas_conv`, `_maybe_calibrate_size`). As in the official search graph:
- every cell position has its own weights, kept separately per (node, input slot x/y, input source, op);
- all BNs normalise with batch statistics;
- a reduction cell r takes [h_{r-1}, FR(h_{r-1})] and runs at stride 1; cell r+1 takes [FR(h_{r-1}), h_r];
- the cell output is ReLU → 1x1 conv → BN over the concatenation of the unused nodes ("loose ends").
Unlike the official graph (which computes all five ops per node and keeps one) only the chosen ops run; the
forward pass and data gradients are identical (§1.2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from enas.ops import AuxHead, FactorizedReduce, ReLUFactorizedReduce, SepConv, batch_norm, conv_bn, he_init_, pool
from enas.spaces.micro_arch import NUM_INPUT_NODES, Cell, MicroArch


def reduction_positions(num_layers: int) -> tuple[int, int]:
    """Two reduction cells at [L//3, 2*(L//3)+1] of the L+2 cells (§1.5, melodyguan/enas#87)."""
    distance = num_layers // 3
    return distance, 2 * distance + 1


class EdgeOps(nn.Module):
    """The weighted ops of one (node, slot, source) edge: sep 3x3 and sep 5x5 (pools and identity have none)."""

    def __init__(self, channels: int, table_rows: int):
        super().__init__()
        self.sep_conv_3x3 = SepConv(channels, 3, fan_in=table_rows)
        self.sep_conv_5x5 = SepConv(channels, 5, fan_in=table_rows)

    def forward(self, x: torch.Tensor, op: str) -> torch.Tensor:
        if op == "sep_conv_3x3":
            return self.sep_conv_3x3(x)
        if op == "sep_conv_5x5":
            return self.sep_conv_5x5(x)
        if op == "avg_pool_3x3":
            return pool(x, "avg")
        if op == "max_pool_3x3":
            return pool(x, "max")
        return x  # identity


class SearchCell(nn.Module):
    """One cell position of the search child with its own weight set.

    in_shapes: (channels, spatial size) of the two inputs; the first may be at twice the resolution
    (the cell after a reduction's factorized reduction).
    """

    def __init__(self, in_shapes: tuple[tuple[int, int], tuple[int, int]], channels: int, num_nodes: int):
        super().__init__()
        (c0, s0), (c1, s1) = in_shapes
        if s0 == 2 * s1:
            self.calibrate_x: nn.Module = ReLUFactorizedReduce(c0, channels)
        elif c0 != channels:
            self.calibrate_x = conv_bn(c0, channels, 1, track_running_stats=False)
        else:
            self.calibrate_x = nn.Identity()
        self.calibrate_y = conv_bn(c1, channels, 1, track_running_stats=False) if c1 != channels else nn.Identity()
        # edges[node][slot][source]: the official `cell_{j}/{x,y}` tables, one row per possible input
        self.edges = nn.ModuleList(
            nn.ModuleList(nn.ModuleList(EdgeOps(channels, NUM_INPUT_NODES + j) for _ in range(NUM_INPUT_NODES + j))
                          for _slot in "xy")
            for j in range(num_nodes))
        # the `final_conv` table [B+2, C*C]: one 1x1 projection block per node, used when that node is a loose end
        self.projection = nn.ParameterList(
            nn.Parameter(he_init_(torch.empty(channels, channels, 1, 1), NUM_INPUT_NODES + num_nodes))
            for _ in range(NUM_INPUT_NODES + num_nodes))
        self.bn = batch_norm(channels, track_running_stats=False)

    def forward(self, h0: torch.Tensor, h1: torch.Tensor, cell: Cell) -> torch.Tensor:
        states = [self.calibrate_x(h0), self.calibrate_y(h1)]
        for j, node in enumerate(cell.nodes):
            x_edge, y_edge = self.edges[j]
            states.append(x_edge[node.input_a](states[node.input_a], node.op_a)
                          + y_edge[node.input_b](states[node.input_b], node.op_b))
        # conv1x1(ReLU(concat(loose ends))) computed as a sum of per-node 1x1 convs: the same maths, without
        # torch.cat's channel-sliced gradients, which made BN backward ~4x slower in channels_last (performance.md §6)
        out = None
        for k in cell.loose_ends():
            term = F.conv2d(F.relu(states[k]), self.projection[k])
            out = term if out is None else out + term
        return self.bn(out)


class MicroSupernet(nn.Module):
    """Stem → num_layers normal + 2 reduction search cells → ReLU, global pool, dropout, FC (no bias)."""

    def __init__(self, num_layers: int = 6, channels: int = 20, num_nodes: int = 5, num_classes: int = 10,
                 image_size: int = 32, in_channels: int = 3, dropout: float = 0.1, aux_head: bool = False):
        super().__init__()
        self.reductions = reduction_positions(num_layers)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 3 * channels, 3, padding=1, bias=False),
                                  batch_norm(3 * channels, track_running_stats=False))
        he_init_(self.stem[0].weight, 9 * in_channels)
        self.cells, self.reduce_inputs = nn.ModuleList(), nn.ModuleDict()
        shapes = [(3 * channels, image_size)] * 2
        c, size = channels, image_size
        self.aux_position = self.reductions[-1] + 1 if aux_head else None
        for i in range(num_layers + 2):
            if i in self.reductions:
                # the search graph reduces h_{i-1} first, then runs the reduction cell at stride 1 (§1.4, §1.5)
                self.reduce_inputs[str(i)] = FactorizedReduce(shapes[1][0], 2 * c)
                c, size = 2 * c, size // 2
                shapes = [shapes[1], (c, size)]
            self.cells.append(SearchCell((shapes[0], shapes[1]), c, num_nodes))
            shapes = [shapes[1], (c, size)]
            if i == self.aux_position:
                self.aux_head = AuxHead(c, size, num_classes)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c, num_classes, bias=False)
        he_init_(self.classifier.weight, c)

    def forward(self, x: torch.Tensor, arch: MicroArch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits of the child `arch`, and the aux head's logits in training mode (None otherwise)."""
        stem = self.stem(x)
        h0, h1, aux_logits = stem, stem, None
        for i, cell in enumerate(self.cells):
            if i in self.reductions:
                reduced = self.reduce_inputs[str(i)](h1)
                h0, h1 = h1, reduced
                out = cell(h0, h1, arch.reduce)
            else:
                out = cell(h0, h1, arch.normal)
            h0, h1 = h1, out
            if i == self.aux_position and self.training:
                aux_logits = self.aux_head(out)
        logits = self.classifier(self.dropout(F.relu(h1).mean((2, 3))))
        return logits, aux_logits

    def num_params(self, include_aux: bool = False) -> int:
        return sum(p.numel() for name, p in self.named_parameters() if include_aux or not name.startswith("aux_head"))
