"""What every search space provides, and the step list a controller walks.

DESIGN.md: every strategy is a sampler plus a judge over a search space. The controller knows decision
steps, never spaces; a space turns a sequence of sampled choices into its architecture value and back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
from torch import nn


class ArchError(ValueError):
    """An architecture (string, JSON or value) that the space does not allow; the message says where and why."""


@dataclass(frozen=True)
class Step:
    """One step of a controller rollout.

    kind:
      "anchor": an LSTM step whose output becomes an attention anchor (a node the later input choices can
                point at); the next step's input is the start embedding again. `feed_zero` anchors feed back a
                zero vector when chosen (the ENAS micro controller's two cell inputs).
      "input":  choose one of the first `num_choices` anchors of the current block by additive attention;
                the chosen anchor is the next input.
      "op":     choose one of `num_choices` operations; the op's embedding is the next input.
    block: anchors are reset when the block changes (one block per cell).
    logit_bias: a fixed bias added after the tanh shaping (ENAS micro normal cell), or None.
    """

    kind: str
    num_choices: int = 0
    block: int = 0
    feed_zero: bool = False
    logit_bias: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("anchor", "input", "op"):
            raise ValueError(f"step kind {self.kind!r} is not one of 'anchor', 'input', 'op'")
        if self.kind != "anchor" and self.num_choices < 1:
            raise ValueError(f"a {self.kind!r} step needs num_choices >= 1, got {self.num_choices}")
        if self.logit_bias is not None and len(self.logit_bias) != self.num_choices:
            raise ValueError(f"logit_bias has {len(self.logit_bias)} entries for {self.num_choices} choices")

    @property
    def is_choice(self) -> bool:
        return self.kind != "anchor"


class SearchSpace(Protocol):
    """The contract between a space and the samplers, judges and loops."""

    name: str

    def steps(self) -> Sequence[Step]:
        """The controller's rollout plan; the choice steps, in order, are what `from_choices` reads."""

    def from_choices(self, choices: Sequence[int]):
        """Architecture value from one rollout's choices (in the order of the choice steps)."""

    def to_choices(self, arch) -> list[int]:
        """Inverse of `from_choices`: the choices a controller would have made for `arch`."""

    def sample_uniform(self, generator: torch.Generator):
        """A uniformly random architecture."""

    def supernet(self) -> nn.Module:
        """The shared-weights network; `net(x, arch)` runs only the sampled path."""
