"""LazyDecaySGD: the faithful search optimiser's weight decay and momentum on weights without a gradient, deferred
and applied exactly when a weight is next read."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from enas.optim import LazyDecaySGD, load_search_weights

SETTINGS = [dict(momentum=0.9, nesterov=True, weight_decay=5e-4), dict(momentum=0.9, nesterov=False, weight_decay=5e-4),
            dict(momentum=0.0, nesterov=False, weight_decay=5e-4), dict(momentum=0.9, nesterov=True, weight_decay=0.0)]


class Branches(nn.Module):
    """Four linear branches; a step runs a subset of them (the sampled path)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.branches = nn.ModuleList(nn.Linear(6, 6) for _ in range(4))
        self.head = nn.ParameterList([nn.Parameter(torch.randn(2, 6))])  # read by forward itself, not called

    def forward(self, x: torch.Tensor, used: list[int]) -> torch.Tensor:
        return F.linear(sum(self.branches[i](x) for i in used), self.head[0])


def train(net: Branches, optimizer, steps: range, lr_drop_at: int | None = None) -> None:
    generator = torch.Generator().manual_seed(1)
    for step in range(steps.stop):
        x = torch.randn(5, 6, generator=generator, dtype=torch.float64)
        used = [i for i in range(4) if torch.rand(1, generator=generator) < 0.4] or [0]
        if step not in steps:
            continue
        if step == lr_drop_at:
            for group in optimizer.param_groups:
                group["lr"] *= 0.3
        optimizer.zero_grad(set_to_none=isinstance(optimizer, LazyDecaySGD))
        net(x, used).square().mean().backward()
        optimizer.step()


def lazy_and_eager(setting: dict) -> tuple[Branches, LazyDecaySGD, Branches, torch.optim.SGD]:
    """Two equal float64 nets: one with a watched LazyDecaySGD, one with plain SGD whose every weight holds a zero
    gradient from the start (TF's dense gradients)."""
    lazy_net, eager_net = Branches().double(), Branches().double()
    lazy = LazyDecaySGD(lazy_net.parameters(), lr=0.01, **setting)
    lazy.watch(lazy_net)
    eager = torch.optim.SGD(eager_net.parameters(), lr=0.01, **setting)
    for p in eager_net.parameters():
        p.grad = torch.zeros_like(p)
    return lazy_net, lazy, eager_net, eager


def assert_caught_up_equal(lazy_net: Branches, lazy: LazyDecaySGD, eager_net: Branches, eager) -> None:
    lazy.catch_up()
    for p, q in zip(lazy_net.parameters(), eager_net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
        if lazy.param_groups[0]["momentum"]:
            torch.testing.assert_close(lazy.state[p]["momentum_buffer"], eager.state[q]["momentum_buffer"],
                                       rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_lazy_steps_equal_sgd_with_a_zero_gradient_on_every_unused_weight(setting):
    lazy_net, lazy, eager_net, eager = lazy_and_eager(setting)
    train(lazy_net, lazy, range(40), lr_drop_at=25)
    train(eager_net, eager, range(40), lr_drop_at=25)
    behind = [p for p in lazy_net.parameters() if lazy.state[p]["lazy_step"] < lazy.param_groups[0]["lazy_steps"]]
    assert behind  # some branch was left out of the last steps: its update is still deferred
    assert_caught_up_equal(lazy_net, lazy, eager_net, eager)


def test_a_weight_read_without_its_modules_call_is_refused_at_the_step():
    net = Branches()
    optimizer = LazyDecaySGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    optimizer.watch(net)
    x = torch.randn(5, 6)
    net(x, [0]).sum().backward()
    optimizer.step()  # branch 1 is now one step behind
    optimizer.zero_grad()
    F.linear(x, net.branches[1].weight).sum().backward()  # read behind the hook's back
    with pytest.raises(RuntimeError, match="read before they were caught up"):
        optimizer.step()
    group = optimizer.param_groups[0]["params"]  # the refused step left its group whole
    assert len(group) == len(list(net.parameters())) and all(p is q for p, q in zip(group, net.parameters()))


def _state_copy(net: nn.Module, optimizer: LazyDecaySGD) -> dict:
    buffer = io.BytesIO()
    torch.save({"net": net.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_a_checkpoint_between_catch_ups_resumes_bit_for_bit_and_loads_caught_up():
    net = Branches().double()
    optimizer = LazyDecaySGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    optimizer.watch(net)
    train(net, optimizer, range(10))
    state = _state_copy(net, optimizer)
    train(net, optimizer, range(10, 20))

    resumed = Branches().double()
    resumed_optimizer = LazyDecaySGD(resumed.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    resumed_optimizer.watch(resumed)
    resumed.load_state_dict(state["net"])
    resumed_optimizer.load_state_dict(state["optimizer"])
    train(resumed, resumed_optimizer, range(10, 20))
    for p, q in zip(net.parameters(), resumed.parameters()):
        assert torch.equal(p, q)

    # a reader of the checkpoint alone (derive, rank_check) gets the weights caught up
    reader = Branches().double()
    load_search_weights(reader, state)
    saved = Branches().double()
    saved.load_state_dict(state["net"])
    saved_optimizer = LazyDecaySGD(saved.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    saved_optimizer.load_state_dict(state["optimizer"])
    saved_optimizer.catch_up()
    changed = False
    for p, q, raw in zip(reader.parameters(), saved.parameters(), state["net"].values()):
        assert torch.equal(p, q)
        changed |= not torch.equal(p, raw)
    assert changed


def test_settings_whose_steps_it_cannot_defer_are_refused_by_name():
    with pytest.raises(ValueError, match="dampening=0.5"):
        LazyDecaySGD(Branches().parameters(), lr=0.1, momentum=0.9, dampening=0.5)


def test_loading_a_plain_sgd_checkpoint_leaves_its_weights_alone():
    net = Branches()
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    load_search_weights(net, {"net": net.state_dict(), "optimizer": optimizer.state_dict()})
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))


def test_watched_steps_equal_sgd_with_gradients_accumulated_over_two_passes_and_zeroed_in_place():
    """After watch() a step and zero_grad visit only the weights autograd accumulated a gradient into: two backward
    passes per step (each weight noted once) and zero_grad(set_to_none=False), which keeps zero gradients on weights
    no later pass reaches, still step as SGD with a zero gradient on every unused weight."""
    lazy_net, lazy, eager_net, eager = lazy_and_eager(SETTINGS[0])
    generator = torch.Generator().manual_seed(2)
    for step in range(30):
        passes = [(torch.randn(5, 6, generator=generator, dtype=torch.float64),
                   [i for i in range(4) if torch.rand(1, generator=generator) < 0.3] or [step % 4])
                  for _ in range(2)]
        lazy.zero_grad(set_to_none=step % 3 != 0)
        eager.zero_grad(set_to_none=False)
        for net in (lazy_net, eager_net):
            for x, used in passes:
                net(x, used).square().mean().backward()
        lazy.step()
        eager.step()
        assert len(lazy.param_groups[0]["params"]) == len(list(lazy_net.parameters()))
    assert_caught_up_equal(lazy_net, lazy, eager_net, eager)
    lazy.zero_grad()
    assert all(p.grad is None for p in lazy_net.parameters())
