"""Samplers: which architectures to try next. The controller-backed one learns from rewards; the uniform one
(random search with weight sharing, Li & Talwalkar 2019) does not. Both speak the same interface."""
from __future__ import annotations

import torch

from enas.controller import Controller, Rollout
from enas.reinforce import Reinforce


class ControllerSampler:
    learns_from_rewards = True

    def __init__(self, space, controller: Controller, reinforce: Reinforce, generator: torch.Generator,
                 skip_weight: float = 0.0):
        """skip_weight: weight of the macro skip penalty in the controller loss (0.8 in the official macro
        search, enas_reference.md §3.3); 0 adds nothing."""
        if skip_weight < 0:
            raise ValueError(f"skip_weight must be >= 0, got {skip_weight}")
        self.space, self.controller, self.reinforce, self.generator = space, controller, reinforce, generator
        self.skip_weight = skip_weight

    def sample(self, k: int, with_grad: bool = False, space=None) -> tuple[list, Rollout]:
        """k architectures from one batched controller call (one host sync to build the architecture values).
        space: a space whose steps begin this controller's (nasrl_conv at a smaller depth): only those are walked."""
        space = space or self.space
        with torch.set_grad_enabled(with_grad):
            rollout = self.controller(k, generator=self.generator, num_steps=self._prefix(space))
        return [space.from_choices(c) for c in rollout.choices.tolist()], rollout

    def update(self, rollout: Rollout, rewards: torch.Tensor) -> dict:
        extra_loss = None
        if self.skip_weight and rollout.skip_penalty is not None:
            extra_loss = self.skip_weight * rollout.skip_penalty.mean()
        return self.reinforce.update(rollout, rewards, extra_loss=extra_loss)

    @torch.no_grad()
    def most_likely(self, space=None):
        space = space or self.space
        return space.from_choices(self.controller(1, greedy=True, num_steps=self._prefix(space)).choices[0].tolist())

    def _prefix(self, space) -> int | None:
        """How many of the controller's steps `space` walks: None for all; a shorter list must be their prefix."""
        if space is self.space:
            return None
        steps = space.steps()
        if steps != self.controller.steps[:len(steps)]:
            raise ValueError(f"search space {space.name}'s {len(steps)} decision steps are not the first of the "
                             f"controller's {len(self.controller.steps)}; it cannot sample that space")
        return len(steps)

    def state_dict(self) -> dict:
        return {"controller": self.controller.state_dict(), "reinforce": self.reinforce.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.controller.load_state_dict(state["controller"])
        self.reinforce.load_state_dict(state["reinforce"])
        self.generator.set_state(state["generator"])


class UniformSampler:
    learns_from_rewards = False  # the search loop skips its sampler phase

    def __init__(self, space, generator: torch.Generator):
        self.space, self.generator = space, generator

    def sample(self, k: int, with_grad: bool = False) -> tuple[list, None]:
        return [self.space.sample_uniform(self.generator) for _ in range(k)], None

    def update(self, rollout, rewards: torch.Tensor) -> dict:
        return {"controller/reward": rewards.mean()}

    def most_likely(self):
        return None

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
