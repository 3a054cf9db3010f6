"""The ENAS micro (cell) search space: its controller steps, choices ↔ architecture, uniform sampling, supernet.

Reference: enas_reference.md §3.2 (MicroController._build_sampler). Per cell: two warm-up LSTM steps whose
outputs are the anchors of the two cell inputs (fed back as zeros when chosen); then per computed node:
index_1, index_2 (attention over the anchors so far), op_1, op_2, and one more LSTM step whose output is the
node's anchor. The reduction cell continues the normal cell's LSTM state. Sampling order per node is
idx, idx, op, op; the ENAS string stores idx1 op1 idx2 op2.
"""
from __future__ import annotations

from typing import Sequence

import torch

from enas.spaces.base import ArchError, Step
from enas.spaces.micro_arch import NUM_INPUT_NODES, OPS, MicroArch
from enas.spaces.micro_supernet import MicroSupernet

NORMAL_OP_BIAS = (0.25, 0.25, -0.25, -0.25, -0.25)  # micro_controller.py `b_soft_no_learn`, normal cell only


class MicroSpace:
    name = "micro"
    op_names = OPS

    def __init__(self, num_nodes: int = 5, num_layers: int = 6, channels: int = 20, num_classes: int = 10,
                 image_size: int = 32, in_channels: int = 3, dropout: float = 0.1, aux_head: bool = False,
                 normal_op_bias: Sequence[float] | None = NORMAL_OP_BIAS):
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        if normal_op_bias is not None and len(normal_op_bias) != len(OPS):
            raise ValueError(f"normal_op_bias needs {len(OPS)} values (one per op: {', '.join(OPS)}), "
                             f"got {len(normal_op_bias)}")
        self.num_nodes = num_nodes
        self.normal_op_bias = tuple(normal_op_bias) if normal_op_bias is not None else None
        self.net_args = dict(num_layers=num_layers, channels=channels, num_nodes=num_nodes, num_classes=num_classes,
                             image_size=image_size, in_channels=in_channels, dropout=dropout, aux_head=aux_head)

    @property
    def num_choices(self) -> int:
        return 8 * self.num_nodes

    def steps(self) -> list[Step]:
        plan: list[Step] = []
        for block, bias in enumerate((self.normal_op_bias, None)):
            plan += [Step("anchor", block=block, feed_zero=True)] * NUM_INPUT_NODES
            for j in range(self.num_nodes):
                plan += [Step("input", NUM_INPUT_NODES + j, block)] * 2
                plan += [Step("op", len(OPS), block, logit_bias=bias)] * 2
                plan.append(Step("anchor", block=block))
        return plan

    def from_choices(self, choices: Sequence[int]) -> MicroArch:
        if len(choices) != self.num_choices:
            raise ArchError(f"a micro rollout has {self.num_choices} choices, got {len(choices)}")
        ints = []  # sampling order idx, idx, op, op → ENAS order idx, op, idx, op
        for k in range(0, len(choices), 4):
            ia, ib, oa, ob = (int(c) for c in choices[k:k + 4])
            ints += [ia, oa, ib, ob]
        return MicroArch.from_ints(ints, self.num_nodes)

    def to_choices(self, arch: MicroArch) -> list[int]:
        if arch.num_nodes != self.num_nodes:
            raise ArchError(f"architecture has {arch.num_nodes} nodes per cell; this space has {self.num_nodes}")
        return [v for cell in (arch.normal, arch.reduce) for n in cell.nodes
                for v in (n.input_a, n.input_b, OPS.index(n.op_a), OPS.index(n.op_b))]

    def sample_uniform(self, generator: torch.Generator) -> MicroArch:
        sizes = torch.tensor([s.num_choices for s in self.steps() if s.is_choice], dtype=torch.float64)
        uniform = torch.rand(len(sizes), generator=generator, device=generator.device, dtype=torch.float64)
        return self.from_choices((uniform.cpu() * sizes).long().clamp_max(sizes.long() - 1).tolist())

    def supernet(self) -> MicroSupernet:
        return MicroSupernet(**self.net_args)
