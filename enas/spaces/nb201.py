"""The NAS-Bench-201 cell search space: controller steps, choices <-> architecture, uniform sampling, networks.

Reference: shared/reference/nb201.md §1 and §3. A rollout is six op choices, one per edge in the benchmark's
order (1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2), each over the five ops; no input choices (the DAG is complete).
NB201's own ENAS controller works the same way: one categorical per edge with the chosen op's embedding fed back.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from enas.spaces.base import ArchError, Step
from enas.spaces.nb201_arch import EDGES, OPS, Nb201Arch
from enas.spaces.nb201_supernet import Nb201Network, Nb201Supernet


class Nb201Space:
    """affine and track_running_stats set the supernet's BNs (see Nb201Supernet); the fixed network always has
    the benchmark's affine BNs with running statistics."""

    name = "nb201"
    op_names = OPS

    def __init__(self, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10, in_channels: int = 3,
                 affine: bool = False, track_running_stats: bool = False):
        self.net_args = dict(channels=channels, cells_per_stage=cells_per_stage, num_classes=num_classes,
                             in_channels=in_channels)
        self.bn_args = dict(affine=affine, track_running_stats=track_running_stats)

    @property
    def num_choices(self) -> int:
        return len(EDGES)

    def steps(self) -> list[Step]:
        return [Step("op", len(OPS))] * len(EDGES)

    def from_choices(self, choices: Sequence[int]) -> Nb201Arch:
        if len(choices) != self.num_choices:
            raise ArchError(f"an nb201 rollout has {self.num_choices} choices (one op per edge), got {len(choices)}")
        return Nb201Arch.from_ints([int(c) for c in choices])

    def to_choices(self, arch: Nb201Arch) -> list[int]:
        return arch.to_ints()

    def sample_uniform(self, generator: torch.Generator) -> Nb201Arch:
        """Each edge's op uniform over the five, independently: uniform over the 15,625 cells (dead ones too)."""
        draws = torch.randint(len(OPS), (len(EDGES),), generator=generator, device=generator.device)
        return self.from_choices(draws.tolist())

    def supernet(self) -> Nb201Supernet:
        return Nb201Supernet(**self.net_args, **self.bn_args)

    def network(self, arch: Nb201Arch, **overrides) -> Nb201Network:
        """The benchmark's fixed network of `arch`, from the space's settings unless overridden."""
        return Nb201Network(arch, **{**self.net_args, **overrides})
