"""The NAS-RL layer-wise CNN search space: its controller steps, choices <-> architecture, uniform sampling, network.

Reference: Zoph & Le, ICLR 2017, §3.1-3.3 (the CIFAR-10 search of §4.1 with strides fixed to 1). Per layer i the
controller picks filter height, filter width and number of filters, each from its own vocabulary (its own
embedding and softmax, Step.vocab), then an anchor step; for i > 0 that anchor step decides skip_0 .. skip_{i-1},
P(skip_j) from the sigmoid of the attention v^T tanh(W_prev h_j + W_curr h_i) over the anchors of layers 0..i-1
(the controller's "skip" step, which pairs skip_j with layer j's anchor, as this space means it).
"""
from __future__ import annotations

from typing import Sequence

import torch

from enas.spaces.base import ArchError, Step
from enas.spaces.nasrl_conv_arch import CHOICES, SPACE, NasrlConvArch, num_choices_of
from enas.spaces.nasrl_conv_network import NasrlConvNetwork


class NasrlConvSpace:
    name = SPACE
    op_names = None  # three vocabularies, no single op list: the op-share diagnostics skip this space

    def __init__(self, num_layers: int = 6, num_classes: int = 10, in_channels: int = 3, stem_channels: int = 0,
                 dropout: float = 0.0):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.num_layers = num_layers
        self.net_args = dict(num_classes=num_classes, in_channels=in_channels, stem_channels=stem_channels,
                             dropout=dropout)

    def at_depth(self, num_layers: int) -> "NasrlConvSpace":
        """This space with `num_layers` layers: its steps are the first of this space's when it is shallower (a
        layer's decisions never depend on later layers), so one controller samples every depth (NAS-RL's growing
        depth, nas_rl.depth_start)."""
        return self if num_layers == self.num_layers else NasrlConvSpace(num_layers, **self.net_args)

    @property
    def num_choices(self) -> int:
        return num_choices_of(self.num_layers)

    def steps(self) -> list[Step]:
        plan: list[Step] = []
        for i in range(self.num_layers):
            plan += [Step("op", len(allowed), vocab=name) for name, allowed in CHOICES.items()]
            plan.append(Step("skip", i) if i > 0 else Step("anchor"))
        return plan

    def from_choices(self, choices: Sequence[int]) -> NasrlConvArch:
        if len(choices) != self.num_choices:
            raise ArchError(f"a nasrl_conv rollout of {self.num_layers} layers has {self.num_choices} choices "
                            f"(height, width, filters and i skips for layer i), got {len(choices)}")
        return NasrlConvArch.from_ints([int(c) for c in choices])

    def to_choices(self, arch: NasrlConvArch) -> list[int]:
        if arch.num_layers != self.num_layers:
            raise ArchError(f"architecture has {arch.num_layers} layers; this space has {self.num_layers}")
        return arch.to_ints()

    def sample_uniform(self, generator: torch.Generator) -> NasrlConvArch:
        """Each size uniform over its four values, each skip a fair coin: uniform over the whole space."""
        sizes = torch.tensor([n for s in self.steps() if s.is_choice
                              for n in ([2] * s.num_choices if s.kind == "skip" else [s.num_choices])],
                             dtype=torch.float64)
        draws = torch.rand(len(sizes), generator=generator, device=generator.device, dtype=torch.float64)
        return self.from_choices((draws.cpu() * sizes).long().clamp_max(sizes.long() - 1).tolist())

    def supernet(self):
        raise ValueError("search space nasrl_conv has no shared weights (NAS-RL trains every child from scratch); "
                         "search it with strategy nas_rl")

    def network(self, arch: NasrlConvArch, **overrides) -> NasrlConvNetwork:
        """The fixed network of `arch`: depth from the architecture, the rest from the space unless overridden."""
        return NasrlConvNetwork(arch, **{**self.net_args, **overrides})
