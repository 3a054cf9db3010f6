"""REINFORCE for the ENAS controller: EMA baseline, entropy bonus in the reward, TF-style Adam.

Reference: enas_reference.md §3.1 and §9 (melodyguan/enas src/cifar10/micro_controller.py `build_trainer`,
src/utils.py `get_train_ops`). For each sampled architecture i of an aggregate of K:
    R_i = reward_i + entropy_weight * H_i            (H stop-gradient)
    b  <- b - (1 - decay) * (b - R_i)                (updated before the advantage, sample by sample)
    loss_i = -log pi(arch_i) * (R_i - b)
and one Adam step on the mean of the K losses (SyncReplicasOptimizer averages K gradients). An `extra_loss` is
added to that mean: the macro skip penalty, skip_weight * mean_i(penalty_i) (general_controller.py, §3.3).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from enas.controller import Rollout


class TFAdam(torch.optim.Optimizer):
    """Adam as TensorFlow 1.x computes it: theta -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps).

    TF's eps is "eps-hat": it sits next to the uncorrected sqrt(v), not the bias-corrected one as in
    torch.optim.Adam, which with ENAS's eps=1e-3 and few steps is a very different update (§9).
    """

    def __init__(self, params, lr: float = 0.0035, betas: tuple[float, float] = (0.0, 0.999), eps: float = 1e-3):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                state["m"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                state["v"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                lr_t = group["lr"] * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                p.addcdiv_(state["m"], state["v"].sqrt().add_(group["eps"]), value=-lr_t)


class Reinforce:
    """Holds the EMA baseline and the controller's optimiser, and applies one update."""

    def __init__(self, controller: nn.Module, lr: float = 0.0035, betas: tuple[float, float] = (0.0, 0.999),
                 eps: float = 1e-3, baseline_decay: float = 0.99, entropy_weight: float = 1e-4):
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay}")
        self.controller = controller
        self.baseline_decay, self.entropy_weight = baseline_decay, entropy_weight
        self.baseline = torch.zeros((), device=next(controller.parameters()).device)
        self.optimizer = TFAdam(controller.parameters(), lr=lr, betas=betas, eps=eps)

    def update(self, rollout: Rollout, rewards: torch.Tensor, extra_loss: torch.Tensor | None = None) -> dict:
        """One Adam step from K rollouts (sampled with grad) and their rewards [K]. Returns device tensors."""
        shaped = rewards.detach() + self.entropy_weight * rollout.entropy.detach()
        baseline, advantages = self.baseline, []
        for r in shaped:  # sequential EMA: each sample's advantage sees a different baseline (§9)
            baseline = baseline - (1 - self.baseline_decay) * (baseline - r)
            advantages.append(r - baseline)
        self.baseline = baseline.detach()
        advantage = torch.stack(advantages)
        loss = -(rollout.log_prob * advantage).mean()
        if extra_loss is not None:
            loss = loss + extra_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        metrics = {"controller/loss": loss.detach(), "controller/reward": rewards.detach().mean(),
                   "controller/entropy": rollout.entropy.detach().mean(), "controller/baseline": baseline.detach(),
                   "controller/advantage": advantage.mean()}
        for kind, relative in rollout.entropy_by_kind.items():  # 1 = uniform, 0 = certain (collapse diagnostics)
            metrics[f"controller/entropy_{kind}"] = relative.mean()
        if rollout.skip_rate is not None:  # spaces with skip decisions (macro)
            metrics["controller/skip_rate"] = rollout.skip_rate.detach().mean()
            metrics["controller/skip_penalty"] = rollout.skip_penalty.detach().mean()
        return metrics

    def state_dict(self) -> dict:
        return {"baseline": self.baseline, "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.baseline = state["baseline"].to(self.baseline.device)
        self.optimizer.load_state_dict(state["optimizer"])
