"""The ENAS macro search space: its controller steps, choices <-> architecture, uniform sampling, networks.

Reference: enas_reference.md §3.3 (GeneralController._build_sampler, search_whole_channels=True). Per layer i:
an LSTM step that picks the op, then the anchor step; for i > 0 that anchor step also decides skip_0..skip_{i-1}
by attention over the anchors of layers 0..i-1. The choices of one rollout are therefore the ENAS arc itself:
`op skip_0 .. skip_{i-1}` per layer, L(L+1)/2 integers.
"""
from __future__ import annotations

from typing import Sequence

import torch

from enas.spaces.base import ArchError, Step
from enas.spaces.macro_arch import OPS, MacroArch
from enas.spaces.macro_supernet import MacroNetwork, MacroSupernet


class MacroSpace:
    name = "macro"
    op_names = OPS

    def __init__(self, num_layers: int = 12, channels: int = 36, num_classes: int = 10, in_channels: int = 3,
                 dropout: float = 0.1):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.num_layers = num_layers
        self.net_args = dict(num_layers=num_layers, channels=channels, num_classes=num_classes,
                             in_channels=in_channels, dropout=dropout)

    @property
    def num_choices(self) -> int:
        return self.num_layers * (self.num_layers + 1) // 2

    def steps(self) -> list[Step]:
        plan: list[Step] = []
        for i in range(self.num_layers):
            plan += [Step("op", len(OPS)), Step("skip", i) if i > 0 else Step("anchor")]
        return plan

    def from_choices(self, choices: Sequence[int]) -> MacroArch:
        if len(choices) != self.num_choices:
            raise ArchError(f"a macro rollout of {self.num_layers} layers has {self.num_choices} choices, "
                            f"got {len(choices)}")
        return MacroArch.from_ints([int(c) for c in choices])

    def to_choices(self, arch: MacroArch) -> list[int]:
        if arch.num_layers != self.num_layers:
            raise ArchError(f"architecture has {arch.num_layers} layers; this space has {self.num_layers}")
        return arch.to_ints()

    def sample_uniform(self, generator: torch.Generator) -> MacroArch:
        """Each op uniform over the six, each skip a fair coin: uniform over the whole space."""
        draws = torch.rand(self.num_choices, generator=generator, device=generator.device, dtype=torch.float64)
        sizes = torch.tensor([n for i in range(self.num_layers) for n in (len(OPS), *[2] * i)], dtype=torch.float64)
        return self.from_choices((draws.cpu() * sizes).long().clamp_max(sizes.long() - 1).tolist())

    def supernet(self) -> MacroSupernet:
        return MacroSupernet(**self.net_args)

    def network(self, arch: MacroArch, **overrides) -> MacroNetwork:
        """The fixed network of `arch` for final training; depth from the architecture, classes and input
        channels from the space, the rest from MacroNetwork's final-training defaults unless overridden."""
        args = dict(num_layers=arch.num_layers, num_classes=self.net_args["num_classes"],
                    in_channels=self.net_args["in_channels"])
        return MacroNetwork(arch, **{**args, **overrides})
