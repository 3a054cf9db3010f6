"""SGD with Nesterov momentum and per-epoch cosine annealing with warm restarts (SGDR): the schedule of every
ENAS child, search and final (enas_reference.md §4: lr_min + ½(lr_max − lr_min)(1 + cos(π T_cur / T_i)),
T_0 = 10, T_mul = 2, stepped once per epoch). `LazyDecaySGD`: the search's faithful optimiser, in which weight decay
and momentum reach the weights off the sampled path every step, as TF's dense gradients do (§1.2), at the cost of
a step over the sampled weights only."""
from __future__ import annotations

import copy
import functools
from typing import Iterable

import torch
from torch import nn

PARAMETER_CONTAINERS = (nn.ParameterList, nn.ParameterDict)


def sgd_with_restarts(params: Iterable[torch.nn.Parameter], cfg, lazy_decay: bool = False, **kernel):
    """`cfg` holds lr_max, lr_min, lr_t0_epochs, lr_t_mult, momentum, nesterov, weight_decay (PyTorch's
    convention: 2 x the official l2_reg). lazy_decay: a `LazyDecaySGD`. `kernel`: fused=True or foreach=True."""
    optimizer = (LazyDecaySGD if lazy_decay else torch.optim.SGD)(
        params, lr=cfg.lr_max, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay, **kernel)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=cfg.lr_t0_epochs, T_mult=cfg.lr_t_mult, eta_min=cfg.lr_min)
    return optimizer, scheduler


def _decay_matrix(lr: float, momentum: float, weight_decay: float, nesterov: bool) -> tuple[float, ...]:
    """One SGD step of a weight whose loss gradient is zero, as a linear map of (w, buf): g = wd·w,
    buf' = μ·buf + g, w' = w − lr·(g + μ·buf') (Nesterov) or w − lr·buf'. Returns (a, b, c, d):
    w' = a·w + b·buf, buf' = c·w + d·buf."""
    if nesterov:
        return 1 - lr * weight_decay * (1 + momentum), -lr * momentum * momentum, weight_decay, momentum
    return 1 - lr * weight_decay, -lr * momentum, weight_decay, momentum


def _matrix_power(m: tuple[float, ...], k: int) -> tuple[float, ...]:
    a, b, c, d = 1.0, 0.0, 0.0, 1.0  # identity; square-and-multiply in float64
    while k:
        if k & 1:
            a, b, c, d = a * m[0] + b * m[2], a * m[1] + b * m[3], c * m[0] + d * m[2], c * m[1] + d * m[3]
        m = (m[0] * m[0] + m[1] * m[2], m[0] * m[1] + m[1] * m[3], m[2] * m[0] + m[3] * m[2], m[2] * m[1] + m[3] * m[3])
        k >>= 1
    return a, b, c, d


class LazyDecaySGD(torch.optim.SGD):
    """SGD in which a weight without a gradient in a step is still decayed and carried by its momentum, exactly
    as if its gradient were zero, but lazily: with a zero loss gradient k steps of SGD are the k-th power of one 2x2
    linear map of (weight, momentum buffer) (`_decay_matrix`), so each weight stores the step it is current at and
    catches up in one update when it is next read. A step then touches only the sampled path's weights (~10% of a
    micro supernet's) instead of every weight.

    `watch(net)` catches up each module's weights as the module is called (forward pre-hooks), so a child's
    forward pass reads current weights; `catch_up()` brings every weight up to date (before a checkpoint is read
    elsewhere, say). A step refuses weights that got a gradient but were read behind: a forward that read a weight
    other than through its module's call. The step counts live in the state dict, so a checkpoint taken between
    catch-ups resumes bit for bit. A learning-rate change first catches every weight up at the old rate."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 **kernel):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, **kernel)
        if self.defaults["dampening"] or self.defaults["maximize"]:
            raise ValueError("LazyDecaySGD defers plain SGD steps: dampening must be 0 and maximize False, got "
                             f"dampening={self.defaults['dampening']}, maximize={self.defaults['maximize']}")
        self._group_index: dict[torch.Tensor, int] = {}
        for i, group in enumerate(self.param_groups):
            group["lazy_steps"], group["lazy_rate"] = 0, group["lr"]
            for p in group["params"]:
                self._group_index[p] = i
                state = self.state[p]
                state["lazy_step"] = 0
                if momentum:  # a zero buffer followed by buf = μ·buf + g is torch's first step buf = g
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        # after watch(): the weights autograd accumulated a gradient into since the last zero_grad, so that step
        # and zero_grad touch those (a child's path, ~6% of a micro supernet's weights) instead of scanning all
        self._with_gradient: dict[torch.Tensor, None] | None = None

    def watch(self, net: nn.Module) -> list:
        """Catch up a module's weights when it is called: one hook per module that reads all its weights on every
        call (an nn.Sequential, a leaf, or a module with `reads_all_weights = True`), else one per module with
        weights of its own (and of its ParameterList/Dict children, which it reads itself). Also notes each weight
        autograd accumulates a gradient into, so that `step` and `zero_grad` visit those only (a `.grad` assigned
        by hand is then not seen: assign it before watching, or use `catch_up` and plain SGD). Returns the
        handles."""
        handles = []

        def hook(module: nn.Module, read) -> None:
            read = [p for p in read if p in self._group_index]
            if read:
                handles.append(module.register_forward_pre_hook(functools.partial(self._catch_up_hook, read)))

        def visit(module: nn.Module) -> None:
            children = [c for c in module.children() if not isinstance(c, PARAMETER_CONTAINERS)]
            if getattr(module, "reads_all_weights", isinstance(module, nn.Sequential)) or not children:
                hook(module, list(module.parameters()))
                return
            hook(module, [*module.parameters(recurse=False),
                          *(p for c in module.children() if isinstance(c, PARAMETER_CONTAINERS) for p in c.parameters())])
            for child in children:
                visit(child)

        visit(net)
        if self._with_gradient is None:
            self._with_gradient = {p: None for p in self._group_index if p.grad is not None}
            handles += [p.register_post_accumulate_grad_hook(self._note_gradient) for p in self._group_index]
        return handles

    def _catch_up_hook(self, params: list, module: nn.Module, args) -> None:
        self.catch_up(params)

    def _note_gradient(self, p: torch.Tensor) -> None:
        self._with_gradient[p] = None

    def _weights_with_gradient(self) -> list[list[torch.Tensor]]:
        """Per group, the weights that hold a gradient (in any order: SGD updates each weight on its own)."""
        if self._with_gradient is None:
            return [[p for p in group["params"] if p.grad is not None] for group in self.param_groups]
        found: list[list] = [[] for _ in self.param_groups]
        for p in self._with_gradient:
            if p.grad is not None:
                found[self._group_index[p]].append(p)
        return found

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self._with_gradient is None or not set_to_none:
            super().zero_grad(set_to_none)
            if self._with_gradient is not None:
                self._with_gradient.clear()  # a zero gradient steps as the deferred decay does: nothing to note
            return
        for p in self._with_gradient:
            p.grad = None
        self._with_gradient.clear()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        stepped = self._weights_with_gradient()  # per group: the weights this step brings up to date
        for group, params in zip(self.param_groups, stepped):
            if group["lr"] != group["lazy_rate"]:  # the deferred steps ran at the old rate
                self.catch_up(group["params"])
                group["lazy_rate"] = group["lr"]
            stale = [tuple(p.shape) for p in params if self.state[p]["lazy_step"] != group["lazy_steps"]]
            if stale:
                raise RuntimeError(f"{len(stale)} weights (shapes {stale[:3]}...) have a gradient but were read "
                                   "before they were caught up: read them through their module's call after "
                                   "LazyDecaySGD.watch(net), or call catch_up() before the forward pass")
        everything = [group["params"] for group in self.param_groups]
        try:  # SGD's step scans its groups' weights for gradients: hand it only those that have one
            for group, params in zip(self.param_groups, stepped):
                group["params"] = params
            super().step()
        finally:
            for group, params in zip(self.param_groups, everything):
                group["params"] = params
        for group, params in zip(self.param_groups, stepped):
            group["lazy_steps"] += 1
            for p in params:
                self.state[p]["lazy_step"] = group["lazy_steps"]
        return loss

    @torch.no_grad()
    def catch_up(self, params: Iterable[torch.Tensor] | None = None) -> None:
        """Bring `params` (default: every weight) and their momentum buffers to where eager SGD with zero loss
        gradients would have them."""
        behind: dict[int, dict[int, list]] = {}  # group → steps behind → weights
        for p in self._group_index if params is None else params:
            i = self._group_index[p]
            steps = self.param_groups[i]["lazy_steps"] - self.state[p]["lazy_step"]
            if steps:
                behind.setdefault(i, {}).setdefault(steps, []).append(p)
        for i, by_steps in behind.items():
            self._catch_up_group(self.param_groups[i], by_steps)

    def _catch_up_group(self, group: dict, by_steps: dict[int, list]) -> None:
        one_step = _decay_matrix(group["lazy_rate"], group["momentum"], group["weight_decay"], group["nesterov"])
        for steps, weights in by_steps.items():
            for p in weights:
                self.state[p]["lazy_step"] = group["lazy_steps"]
            a, b, c, d = (_scalar(v, weights) for v in _matrix_power(one_step, steps))
            if not group["momentum"]:
                torch._foreach_mul_(weights, a)
                continue
            buffers = [self.state[p]["momentum_buffer"] for p in weights]
            carried = torch._foreach_mul(buffers, b)
            torch._foreach_mul_(buffers, d)
            torch._foreach_add_(buffers, torch._foreach_mul(weights, c))  # buf' = c·w + d·buf
            torch._foreach_mul_(weights, a)
            torch._foreach_add_(weights, carried)  # w' = a·w + b·buf


def _scalar(value: float, weights: list[torch.Tensor]) -> float | torch.Tensor:
    """A coefficient for the `_foreach` ops over `weights`: on CPU, when they share one dtype, a 0-dim tensor of it,
    which the ops use as it is (a Python float is converted again for every weight, 4x slower over a path's ~300
    small weights; the product is the same, as the float is rounded to that dtype either way); else the float itself
    (on a GPU: no copy to the device)."""
    dtype = weights[0].dtype
    if weights[0].device.type == "cpu" and all(w.dtype == dtype for w in weights):
        return torch.tensor(value, dtype=dtype)
    return value


def load_search_weights(net: torch.nn.Module, state: dict) -> None:
    """A search checkpoint's shared weights into `net`, up to date: if its optimiser was a `LazyDecaySGD` saved
    between catch-ups (an interrupted epoch), the deferred decay is applied (derive and rank_check read them)."""
    net.load_state_dict(state["net"])
    groups = state["optimizer"].get("param_groups", [])
    if not groups or "lazy_steps" not in groups[0]:
        return
    group = groups[0]
    optimizer = LazyDecaySGD(net.parameters(), lr=group["lazy_rate"], momentum=group["momentum"],
                             weight_decay=group["weight_decay"], nesterov=group["nesterov"])
    optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))  # the catch-up writes into the momentum buffers
    optimizer.catch_up()
