"""The ENAS LSTM controller (enas/controller.py), its REINFORCE update with TF-style Adam (enas/reinforce.py) and
the samplers built on them (enas/samplers.py)."""

import io
import math

import pytest
import torch

from conftest import gen
from enas.controller import Controller
from enas.reinforce import Reinforce, TFAdam
from enas.samplers import ControllerSampler, UniformSampler
from enas.spaces.micro import MicroSpace
from enas.spaces.micro_arch import NUM_INPUT_NODES, OPS, MicroArch

OP_BIAS_INIT = (10.0, 10.0, 0.0, 0.0, 0.0)  # conf/controller/micro.yaml, enas_reference.md §3.1
NUM_NODES = 5
# choice columns per cell: node j takes idx_1, idx_2, op_1, op_2 at 4j .. 4j+3 (the normal cell first)
NORMAL_OP_COLUMNS = [4 * j + s for j in range(NUM_NODES) for s in (2, 3)]
REDUCE_OP_COLUMNS = [4 * NUM_NODES + c for c in NORMAL_OP_COLUMNS]
MAX_POOL = OPS.index("max_pool_3x3")


def make_controller(seed: int = 0, **overrides) -> Controller:
    """The configured micro controller (faithful defaults: tanh_op 0.44, b_soft init [10, 10, 0, 0, 0])."""
    torch.manual_seed(seed)
    return Controller(MicroSpace().steps(), **{"op_bias_init": OP_BIAS_INIT, **overrides})


def op_frequencies(choices: torch.Tensor, columns: list[int]) -> torch.Tensor:
    return torch.bincount(choices[:, columns].flatten(), minlength=len(OPS)).float() / (len(choices) * len(columns))


# ------------------------------------------------------------------------------------------- sampling


def test_one_call_samples_k_valid_architectures_with_log_prob_and_entropy():
    space, controller = MicroSpace(), make_controller()
    rollout = controller(6, generator=gen(0))
    assert rollout.choices.shape == (6, space.num_choices) == (6, 40)
    assert rollout.log_prob.shape == rollout.entropy.shape == (6,)
    assert torch.isfinite(rollout.log_prob).all() and (rollout.log_prob < 0).all()
    assert torch.isfinite(rollout.entropy).all() and (rollout.entropy > 0).all()
    for row in rollout.choices.tolist():
        assert isinstance(space.from_choices(row), MicroArch)
        for cell in range(2):
            for j in range(NUM_NODES):
                ia, ib, oa, ob = row[4 * (cell * NUM_NODES + j): 4 * (cell * NUM_NODES + j) + 4]
                assert 0 <= ia < NUM_INPUT_NODES + j and 0 <= ib < NUM_INPUT_NODES + j
                assert 0 <= oa < len(OPS) and 0 <= ob < len(OPS)


def test_scoring_sampled_choices_reproduces_their_log_prob_and_entropy():
    controller = make_controller()
    rollout = controller(5, generator=gen(1))
    scored = controller(choices=rollout.choices)
    assert torch.equal(scored.choices, rollout.choices)
    torch.testing.assert_close(scored.log_prob, rollout.log_prob)
    torch.testing.assert_close(scored.entropy, rollout.entropy)


def test_log_prob_carries_a_gradient_to_the_controller():
    controller = make_controller()
    controller(3, generator=gen(0)).log_prob.sum().backward()
    assert controller.lstm.weight_ih.grad.abs().sum() > 0
    assert controller.w_attn_1.weight.grad.abs().sum() > 0 and controller.w_emb.weight.grad.abs().sum() > 0


def test_greedy_sampling_is_deterministic_and_takes_the_most_likely_choice():
    controller = make_controller()
    first, second = controller(3, greedy=True), controller(1, greedy=True)
    assert (first.choices == second.choices).all()
    assert (first.choices == first.choices[0]).all()
    # with b_soft = [10, 10, 0, 0, 0] the two sep convs dominate every greedy op choice
    assert set(first.choices[0, NORMAL_OP_COLUMNS + REDUCE_OP_COLUMNS].tolist()) <= {0, 1}


def test_same_generator_seed_gives_the_same_choices_and_different_seeds_differ():
    controller = make_controller()
    a, b, c = (controller(8, generator=gen(s)).choices for s in (7, 7, 8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_controller_refuses_op_steps_with_different_op_counts():
    from enas.spaces.base import Step
    with pytest.raises(ValueError, match="same ops"):
        Controller([Step("anchor"), Step("op", 5), Step("op", 3)])


# ------------------------------------------------------------------------- initial op distribution


@pytest.fixture(scope="module")
def initial_rollouts() -> torch.Tensor:
    """2000 rollouts of the faithful initial policy, in one call."""
    with torch.no_grad():
        return make_controller(seed=0)(2000, generator=gen(0)).choices


def test_initial_normal_cell_op_distribution_matches_the_official_controller(initial_rollouts):
    # enas_reference.md §9: logits 0.44*tanh(b_soft + ...) + [.25, .25, -.25, -.25, -.25]
    freq = op_frequencies(initial_rollouts, NORMAL_OP_COLUMNS)
    torch.testing.assert_close(freq, torch.tensor([0.315, 0.315, 0.123, 0.123, 0.123]), atol=0.03, rtol=0)


def test_initial_reduce_cell_op_distribution_matches_the_official_controller(initial_rollouts):
    # no fixed bias in the reduction cell: logits [0.44, 0.44, ~0, ~0, ~0]
    freq = op_frequencies(initial_rollouts, REDUCE_OP_COLUMNS)
    torch.testing.assert_close(freq, torch.tensor([0.254, 0.254, 0.164, 0.164, 0.164]), atol=0.03, rtol=0)


def test_initial_input_choices_are_near_uniform(initial_rollouts):
    # the last node of each cell (node 6) picks among nodes 0..5, both slots
    columns = [4 * (NUM_NODES - 1), 4 * (NUM_NODES - 1) + 1, 4 * (2 * NUM_NODES - 1), 4 * (2 * NUM_NODES - 1) + 1]
    freq = torch.bincount(initial_rollouts[:, columns].flatten()).float() / (2000 * len(columns))
    torch.testing.assert_close(freq, torch.full((6,), 1 / 6), atol=0.04, rtol=0)


def test_faithful_op_logits_are_bounded_by_the_tanh_constant():
    # tanh_op = 0.44 bounds op logits to +-0.44 (+ the fixed +-0.25 in the normal cell): even a b_soft that
    # pushes max pool all the way leaves it at e^.19 / (e^.19 + 2e^-.19 + 2e^-.69) ~ 0.31 in the normal cell
    # (the best any op can do is a sep conv at ~0.46), so no REINFORCE run can make one op dominate
    controller = make_controller()
    with torch.no_grad():
        controller.b_soft.copy_(torch.tensor([-100.0, -100.0, -100.0, 100.0, -100.0]))
        freq = op_frequencies(controller(200, generator=gen(0)).choices, NORMAL_OP_COLUMNS)
    bound = math.exp(0.19) / (math.exp(0.19) + 2 * math.exp(-0.19) + 2 * math.exp(-0.69))
    assert freq[MAX_POOL] < bound + 0.05 and bound < 0.5


# ------------------------------------------------------------------------------------------ learning


def test_controller_learns_rewarded_op():
    # The faithful tanh_op = 0.44 caps every op's probability near 0.46 (previous test), and b_soft = 10 saturates
    # the tanh for the sep convs; to show learning this test uses the paper's tanh constant 2.5 with a small
    # random b_soft, and a larger lr (0.05) so that it converges in a few dozen updates of K = 10 samples.
    controller = make_controller(seed=0, tanh_op=2.5, op_bias_init=None)
    reinforce = Reinforce(controller, lr=0.05)
    columns = NORMAL_OP_COLUMNS + REDUCE_OP_COLUMNS
    sample_gen = gen(0)
    with torch.no_grad():
        initial = op_frequencies(controller(200, generator=sample_gen).choices, columns)[MAX_POOL]
    assert initial < 0.3
    recent: list[float] = []
    for update in range(60):
        rollout = controller(10, generator=sample_gen)
        reward = (rollout.choices[:, columns] == MAX_POOL).float().mean(1)  # fraction of max-pool ops
        reinforce.update(rollout, reward)
        recent = [*recent[-2:], float(reward.mean())]
        if min(recent) > 0.9:
            break
    with torch.no_grad():
        final = op_frequencies(controller(200, generator=sample_gen).choices, columns)[MAX_POOL]
    assert final > 0.8, f"max-pool probability {final:.2f} after {update + 1} updates (from {initial:.2f})"


# ------------------------------------------------------------------------------------- REINFORCE


@pytest.mark.parametrize("k", [1, 10])
def test_baseline_starts_at_zero_and_moves_sample_by_sample(k):
    controller = make_controller()
    reinforce = Reinforce(controller, entropy_weight=0.0)
    assert float(reinforce.baseline) == 0.0
    stats = reinforce.update(controller(k, generator=gen(0)), torch.ones(k))
    assert float(reinforce.baseline) == pytest.approx(1 - 0.99 ** k, rel=1e-5)
    # each advantage sees the baseline updated by its own sample first: R - b_i with b_i = 1 - 0.99^i
    expected = torch.tensor([0.99 ** i for i in range(1, k + 1)]).mean()
    assert float(stats["controller/advantage"]) == pytest.approx(float(expected), rel=1e-5)


def test_entropy_bonus_is_added_to_the_reward_before_the_baseline():
    controller = make_controller()
    reinforce = Reinforce(controller, entropy_weight=0.5)
    rollout = controller(1, generator=gen(0))
    reinforce.update(rollout, torch.zeros(1))
    assert float(reinforce.baseline) == pytest.approx(0.01 * 0.5 * float(rollout.entropy.detach()), rel=1e-5)


def test_update_raises_the_log_prob_of_a_rewarded_rollout():
    controller = make_controller(tanh_op=2.5, op_bias_init=None)
    reinforce = Reinforce(controller, lr=0.01, entropy_weight=0.0)
    rollout = controller(2, generator=gen(3))
    before = controller(choices=rollout.choices).log_prob.detach()
    reinforce.update(rollout, torch.tensor([1.0, 0.0]))  # advantages: +0.99, -0.0099
    after = controller(choices=rollout.choices).log_prob.detach()
    assert after[0] > before[0]


@pytest.mark.parametrize("beta1", [0.0, 0.9])
def test_tf_adam_first_step_puts_eps_next_to_the_uncorrected_root_of_v(beta1):
    lr, beta2, eps = 0.01, 0.999, 1e-3
    start = torch.tensor([0.5, -1.0, 2.0, 0.0])
    g = torch.tensor([0.1, -0.002, 3.0, 1e-5])
    p = torch.nn.Parameter(start.clone())
    optimizer = TFAdam([p], lr=lr, betas=(beta1, beta2), eps=eps)
    p.grad = g.clone()
    optimizer.step()
    m, v = (1 - beta1) * g, (1 - beta2) * g ** 2
    expected = start - lr * math.sqrt(1 - beta2) / (1 - beta1) * m / (v.sqrt() + eps)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-8)
    # ENAS case (beta1 = 0): lr * sqrt(1-b2) * g / (sqrt((1-b2) g^2) + eps)
    if beta1 == 0.0:
        torch.testing.assert_close(
            p.detach(), start - lr * math.sqrt(1 - beta2) * g / (((1 - beta2) * g ** 2).sqrt() + eps))


def test_tf_adam_differs_from_torch_adam_with_the_same_eps():
    g = torch.tensor([0.1, -0.002, 3.0])
    ours, theirs = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    tf_adam = TFAdam([ours], lr=0.01, betas=(0.0, 0.999), eps=1e-3)
    torch_adam = torch.optim.Adam([theirs], lr=0.01, betas=(0.0, 0.999), eps=1e-3)
    for p, optimizer in ((ours, tf_adam), (theirs, torch_adam)):
        p.grad = g.clone()
        optimizer.step()
    # torch: lr * g / (|g| + eps) ~ lr * sign(g); TF: the eps is ~30x larger relative to sqrt(v) at step 1
    assert not torch.allclose(ours.detach(), theirs.detach(), rtol=1e-2)
    assert ours[1].abs() < 0.5 * theirs[1].abs()  # the small gradient is damped much more by TF's eps-hat


def test_tf_adam_skips_parameters_without_a_gradient():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = TFAdam([a, b])
    a.grad = torch.ones(2)
    optimizer.step()
    assert torch.equal(b.detach(), torch.ones(2)) and b not in optimizer.state
    assert (a.detach() < 1).all()


# -------------------------------------------------------------------------------------------- samplers


def through_checkpoint(state: dict) -> dict:
    """What a checkpoint gives back: serialised at once, loaded with weights_only (enas/checkpoint.py)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def controller_sampler(seed: int = 0) -> ControllerSampler:
    controller = make_controller(seed)
    return ControllerSampler(MicroSpace(), controller, Reinforce(controller), gen(seed))


def test_controller_sampler_returns_k_architectures_and_their_rollout():
    archs, rollout = controller_sampler().sample(4)
    assert len(archs) == 4 and all(isinstance(a, MicroArch) for a in archs)
    assert [MicroSpace().to_choices(a) for a in archs] == rollout.choices.tolist()
    assert not rollout.log_prob.requires_grad  # sampling for the shared pass builds no graph
    _, with_grad = controller_sampler().sample(2, with_grad=True)
    assert with_grad.log_prob.requires_grad


def test_controller_sampler_most_likely_is_the_greedy_architecture():
    sampler = controller_sampler()
    greedy = sampler.controller(1, greedy=True).choices[0].tolist()
    assert MicroSpace().to_choices(sampler.most_likely()) == greedy


def sample_and_learn(sampler: ControllerSampler) -> tuple[list, torch.Tensor]:
    """One REINFORCE update and the next samples: depends on the controller, baseline, Adam state, generator."""
    archs, rollout = sampler.sample(3, with_grad=True)
    sampler.update(rollout, torch.tensor([0.2, 0.9, 0.5]))
    return sampler.sample(3)[0], sampler.controller.w_soft.weight.detach().clone()


def test_controller_sampler_state_round_trip_makes_the_next_samples_identical():
    sampler = controller_sampler()
    _, rollout = sampler.sample(2, with_grad=True)  # non-trivial baseline and Adam moments
    sampler.update(rollout, torch.tensor([0.3, 0.7]))
    state = through_checkpoint(sampler.state_dict())
    first_archs, first_weights = sample_and_learn(sampler)
    restored = controller_sampler(seed=1)  # different init and generator, overwritten by the state
    restored.load_state_dict(state)
    second_archs, second_weights = sample_and_learn(restored)
    assert second_archs == first_archs
    assert torch.equal(second_weights, first_weights)


def test_uniform_sampler_returns_k_architectures_and_no_rollout():
    archs, rollout = UniformSampler(MicroSpace(), gen(0)).sample(5)
    assert len(archs) == 5 and len(set(archs)) == 5 and rollout is None


def test_uniform_sampler_state_round_trip_makes_the_next_samples_identical():
    sampler = UniformSampler(MicroSpace(), gen(0))
    sampler.sample(2)
    state = through_checkpoint(sampler.state_dict())
    expected, _ = sampler.sample(4)
    restored = UniformSampler(MicroSpace(), gen(99))
    restored.load_state_dict(state)
    assert restored.sample(4)[0] == expected
