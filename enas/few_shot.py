"""Few-shot supernet (Zhao et al., "Few-shot Neural Architecture Search", ICML 2021): one shared supernet trains
until `trainer.few_shot_epoch`, then it is split into one copy per choice of the space's first op decision (nb201:
the op of edge 1<-0, 5 copies; micro: the first op of the conv cell's node 0; macro: layer 0's op). Each copy starts
from the one-shot weights and its optimiser state, and from then on trains and scores only the architectures that
make its choice, so that weights no longer have to serve architectures that disagree on that decision.

`FewShotSupernet(space)` stands wherever a supernet does (`net(x, arch)`); before the split every architecture runs
on copy 0. Whether the split happened is part of the state dict (extra state), so a resumed run routes the same way.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def split_decision(space) -> tuple[int, int]:
    """(column of the first op decision in a rollout's choices, its number of choices)."""
    column = 0
    for step in space.steps():
        if step.kind == "op":
            return column, step.num_choices
        column += step.num_columns
    raise ValueError(f"search space {space.name!r} has no op decision to split a few-shot supernet by")


class FewShotSupernet(nn.Module):
    """`parts[k]` serves the architectures whose first op decision is k (after `split`); copy 0 serves all before."""

    def __init__(self, space):
        super().__init__()
        self.space = space
        self.column, num_parts = split_decision(space)
        one_shot = space.supernet()
        # the copies are exact until the split overwrites them anyway; deepcopy draws nothing from the global RNG,
        # so the one-shot weights are those a plain supernet of the same seed starts from
        self.parts = nn.ModuleList([one_shot] + [copy.deepcopy(one_shot) for _ in range(num_parts - 1)])
        self.is_split = False

    def part_of(self, arch) -> int:
        return int(self.space.to_choices(arch)[self.column]) if self.is_split else 0

    def forward(self, x: torch.Tensor, arch):
        return self.parts[self.part_of(arch)](x, arch)

    @torch.no_grad()
    def split(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Copy the one-shot weights (and, given the optimiser, their momentum buffers) into every other part."""
        if self.is_split:
            raise RuntimeError("the few-shot supernet is already split")
        source, one_shot = list(self.parts[0].parameters()), self.parts[0].state_dict()
        for part in self.parts[1:]:
            part.load_state_dict(one_shot)
            if optimizer is not None:
                for p, q in zip(source, part.parameters()):
                    if p in optimizer.state:
                        optimizer.state[q] = {k: v.clone() if torch.is_tensor(v) else v
                                              for k, v in optimizer.state[p].items()}
                    else:
                        optimizer.state.pop(q, None)
        self.is_split = True

    def get_extra_state(self) -> torch.Tensor:  # a tensor, so that state dicts hold tensors only
        return torch.tensor(self.is_split)

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.is_split = bool(state)

    def extra_repr(self) -> str:
        return f"split by rollout column {self.column} into {len(self.parts)} parts, is_split={self.is_split}"
