"""The ENAS macro search space: the architecture value (enas/spaces/macro_arch.py), the search supernet and the
fixed network (enas/spaces/macro_supernet.py), the space (enas/spaces/macro.py) and the controller's skip steps
with their penalty (enas/controller.py, enas/reinforce.py, enas/samplers.py)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_arch_error, gen, sgd_losses

from enas.controller import Controller
from enas.reinforce import Reinforce
from enas.samplers import ControllerSampler
from enas.spaces.base import Step
from enas.spaces.macro import MacroSpace
from enas.spaces.macro_arch import (
    OPS,
    PUBLISHED_MACRO,
    MacroArch,
    MacroLayer,
    published_macro_arch,
    reduction_layers,
)
from enas.spaces.macro_supernet import MacroNetwork, MacroSupernet

SEEDS = range(6)


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def random_arch(seed: int, num_layers: int = 12) -> MacroArch:
    return MacroSpace(num_layers=num_layers).sample_uniform(gen(seed))


def arch_of(*layers: tuple[str, tuple[int, ...]]) -> MacroArch:
    return MacroArch(tuple(MacroLayer(op, skips) for op, skips in layers))


def images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, 3, size, size, generator=gen(seed))
    return x.to(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------------- the published arc


def test_published_arc_has_24_layers_with_the_script_first_lines():
    arch = published_macro_arch()
    assert arch.num_layers == 24 and len(arch.to_ints()) == 24 * 25 // 2
    # `0`, `3 0`, `0 1 0`, `2 0 0 1`: conv3, sep5, conv3 + skip from the stem, conv5 + skip from layer 1
    assert arch.layers[:4] == (MacroLayer("conv_3x3", ()), MacroLayer("sep_conv_5x5", (0,)),
                               MacroLayer("conv_3x3", (1, 0)), MacroLayer("conv_5x5", (0, 0, 1)))
    # the official final graph implements ops 0-3 only (num_branches=4); the published arc uses no pool
    assert {layer.op for layer in arch.layers} <= set(OPS[:4])


def test_published_arc_encodes_back_to_the_script_lines():
    assert published_macro_arch().to_enas_string().split() == PUBLISHED_MACRO.split()
    assert [len(line.split()) for line in PUBLISHED_MACRO.splitlines()] == list(range(1, 25))


def test_the_scripts_own_assignment_lines_parse_to_the_published_arc():
    lines = PUBLISHED_MACRO.splitlines()
    script = [f'fixed_arc="{lines[0]}"'] + [f'fixed_arc="$fixed_arc {line}"' for line in lines[1:]]
    assert MacroArch.from_enas_string("\n".join(script)) == published_macro_arch()


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("seed", [None, *SEEDS])
def test_string_and_json_round_trips_give_the_same_arch(seed):
    arch = published_macro_arch() if seed is None else random_arch(seed)
    assert MacroArch.from_enas_string(arch.to_enas_string()) == arch
    assert MacroArch.from_json(arch.to_json()) == arch
    assert MacroArch.from_json(json.loads(json.dumps(arch.to_json()))) == arch


def test_save_then_load_gives_the_same_arch(tmp_path):
    arch = published_macro_arch()
    path = tmp_path / "sub" / "arch.json"
    arch.save(path)
    assert MacroArch.load(path) == arch
    assert [p.name for p in path.parent.iterdir()] == ["arch.json"]  # no temp file left behind
    assert json.loads(path.read_text())["space"] == "macro"


def test_arch_is_frozen_and_hashable():
    arch = published_macro_arch()
    with pytest.raises(AttributeError):
        arch.layers = ()
    assert len({arch, published_macro_arch()}) == 1


# ---------------------------------------------------------------------------------- skip indexing, views


def test_skip_j_connects_entry_j_of_stem_then_layers_as_the_official_child():
    # layer 3 with skips (1, 0, 1): entries [stem, layer 0, layer 1] -> stem and layer 1; layer 2 is the input
    arch = arch_of(("conv_3x3", ()), ("conv_3x3", (0,)), ("conv_3x3", (0, 0)), ("max_pool_3x3", (1, 0, 1)))
    assert arch.layers[3].skip_sources() == (0, 2)
    assert arch.to_json()["layers"][3] == {"op": "max_pool_3x3", "skips": [0, 2]}
    row = next(line for line in str(arch).splitlines() if line.strip().startswith("3 |"))
    assert [c.strip() for c in row.split("|")] == ["3", "max_pool_3x3", "layer 2", "stem, layer 1"]
    graph = arch.graphs()["network"]
    assert ("stem", "layer_3", "") in graph.edges and ("layer_1", "layer_3", "") in graph.edges


def test_str_has_one_line_per_layer_and_the_enas_string():
    arch = published_macro_arch()
    text = str(arch)
    rows = [line for line in text.splitlines() if line.split("|")[0].strip().isdigit()]
    assert len(rows) == 24
    assert f"ENAS string: {arch.to_enas_string()}" in text
    assert sum("[then reduce]" in row for row in rows) == 2  # after layers 7 and 15


def test_graph_has_stem_layers_output_and_chain_plus_skip_edges():
    arch = random_arch(0)
    graph = arch.graphs()["network"]
    assert graph.nodes[0] == ("stem", "stem") and graph.nodes[-1] == ("output", "output")
    assert [label for _, label in graph.nodes[1:-1]] == [f"{i}: {layer.op}" for i, layer in enumerate(arch.layers)]
    num_skips = sum(sum(layer.skips) for layer in arch.layers)
    assert len(graph.edges) == arch.num_layers + 1 + num_skips
    assert graph.inputs == ("stem",) and graph.output == "output"


# ------------------------------------------------------------------------------------- malformed input


def test_enas_string_of_a_non_triangular_length_is_rejected():
    assert_arch_error(lambda: MacroArch.from_enas_string("0 1 0 1 0 0 1"), "L(L+1)/2", "got 7")
    assert_arch_error(lambda: MacroArch.from_enas_string(""), "got 0")


def test_unknown_op_id_is_rejected_naming_layer_and_the_op_ids():
    assert_arch_error(lambda: MacroArch.from_enas_string("0 3 1 6 0 1"), "layer 2", "op id 6", "0..5",
                      "5=max_pool_3x3")


def test_skip_that_is_not_zero_or_one_is_rejected_naming_layer_and_skip():
    assert_arch_error(lambda: MacroArch.from_enas_string("0 3 1 0 1 2"), "layer 2", "skip_1 = 2", "0 or 1")


def test_enas_string_with_non_integers_is_rejected():
    assert_arch_error(lambda: MacroArch.from_enas_string("0 3 x"), "integers", "'0 3 x'")


def test_skip_mask_of_the_wrong_length_is_rejected_naming_the_layer():
    assert_arch_error(lambda: arch_of(("conv_3x3", ()), ("conv_3x3", (0, 1))), "layer 1", "1 values")


def test_unknown_op_name_is_rejected_listing_the_allowed_ops():
    data = published_macro_arch().to_json()
    data["layers"][5]["op"] = "conv_7x7"
    assert_arch_error(lambda: MacroArch.from_json(data), "layer 5", "'conv_7x7'", ", ".join(OPS))


def test_json_skip_source_at_or_after_the_input_is_rejected_naming_layer_and_range():
    data = random_arch(0).to_json()
    data["layers"][3]["skips"] = [3]  # entry 3 is layer 2, the input itself
    assert_arch_error(lambda: MacroArch.from_json(data), "layer 3", "skip source 3", "allowed 0..2")
    data["layers"][3]["skips"] = [1, 1]
    assert_arch_error(lambda: MacroArch.from_json(data), "layer 3", "repeat")


@pytest.mark.parametrize("layer", [{"op": "conv_3x3"}, {"op": "conv_3x3", "skips": 0}, ["conv_3x3", [0]],
                                   {"op": "conv_3x3", "skips": [], "extra": 1}])
def test_malformed_json_layer_is_rejected_showing_the_expected_shape(layer):
    data = random_arch(0).to_json()
    data["layers"][1] = layer
    assert_arch_error(lambda: MacroArch.from_json(data), "layer 1", "'op': name, 'skips'")


@pytest.mark.parametrize("key, value, fragment", [("format", "other", "unsupported"), ("version", 2, "unsupported"),
                                                  ("space", "micro", "'micro'"), ("num_layers", 3, "num_layers"),
                                                  ("enas_string", "0", "does not match"), ("layers", [], "layers")])
def test_json_header_problems_are_rejected(key, value, fragment):
    data = random_arch(1).to_json()
    data[key] = value
    assert_arch_error(lambda: MacroArch.from_json(data), fragment)


def test_loading_missing_or_broken_files_raises_arch_error_with_the_path(tmp_path):
    assert_arch_error(lambda: MacroArch.load(tmp_path / "none.json"), "none.json", "does not exist")
    (tmp_path / "bad.json").write_text("{")
    assert_arch_error(lambda: MacroArch.load(tmp_path / "bad.json"), "bad.json", "not valid JSON")


# ------------------------------------------------------------------------------------------- the space


@pytest.mark.parametrize("seed", SEEDS)
def test_choices_are_the_enas_arc_and_round_trip(seed):
    space, arch = MacroSpace(), random_arch(seed)
    assert space.to_choices(arch) == [int(t) for t in arch.to_enas_string().split()]
    assert space.from_choices(space.to_choices(arch)) == arch


def test_space_rejects_rollouts_and_archs_of_another_depth():
    assert_arch_error(lambda: MacroSpace().from_choices([0] * 77), "78 choices", "got 77")
    assert_arch_error(lambda: MacroSpace().to_choices(published_macro_arch()), "24 layers", "12")


def test_steps_are_op_then_anchor_or_skip_step_per_layer():
    steps = MacroSpace(num_layers=4).steps()
    assert [(s.kind, s.num_choices) for s in steps] == [("op", 6), ("anchor", 0), ("op", 6), ("skip", 1),
                                                        ("op", 6), ("skip", 2), ("op", 6), ("skip", 3)]
    assert sum(s.num_columns for s in steps) == MacroSpace(num_layers=4).num_choices == 10


def test_uniform_sampling_is_reproducible_and_covers_ops_and_skips_evenly():
    space = MacroSpace()
    assert space.sample_uniform(gen(3)) == space.sample_uniform(gen(3))
    generator = gen(0)
    archs = [space.sample_uniform(generator) for _ in range(60)]
    ops = [layer.op for a in archs for layer in a.layers]
    assert set(ops) == set(OPS)
    skips = [s for a in archs for layer in a.layers for s in layer.skips]
    assert abs(sum(skips) / len(skips) - 0.5) < 0.05


# ------------------------------------------------------------------------------------------ the supernet


def small_supernet(num_layers: int = 6) -> MacroSupernet:
    torch.manual_seed(0)
    return MacroSupernet(num_layers=num_layers, channels=8).to(memory_format=torch.channels_last)


def expected_supernet_params(num_layers: int, c: int, num_classes: int = 10) -> int:
    """§2 by hand: stem; per layer six branches (1x1 conv-BN, then the kxk / separable conv-BN); a skip BN for
    layers > 0; one factorized reduction (two C x C/2 1x1 convs + BN) per earlier output at each reduction; FC."""
    bn = 2 * c
    branches = 6 * (c * c + bn) + (9 * c * c + bn) + (25 * c * c + bn) + (9 * c + c * c + bn) + (25 * c + c * c + bn)
    reductions = sum(after + 2 for after in reduction_layers(num_layers)) * (c * c + bn)
    return 27 * c + bn + num_layers * branches + (num_layers - 1) * bn + reductions + c * num_classes


def test_search_child_has_the_parameters_of_the_official_graph():
    net = MacroSupernet()  # L=12, C=36
    assert net.num_params() == expected_supernet_params(12, 36) == 697_860
    assert [len(r) for r in net.reduce] == [5, 9]  # stem + layers 0..3, stem + layers 0..7


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_supernet_logits_have_batch_by_classes_shape_for_random_archs(seed):
    logits, aux = small_supernet()(images(), random_arch(seed, num_layers=6))
    assert logits.shape == (4, 10) and torch.isfinite(logits).all() and aux is None


def test_channels_last_input_gives_the_same_logits_as_contiguous():
    net, arch = small_supernet().eval(), random_arch(3, num_layers=6)
    x = images()
    with torch.no_grad():
        channels_last, _ = net(x, arch)
        contiguous, _ = net.to(memory_format=torch.contiguous_format)(x.contiguous(), arch)
    torch.testing.assert_close(channels_last, contiguous, rtol=1e-4, atol=1e-4)


def test_search_bns_keep_no_running_statistics():
    bns = [m for m in small_supernet().modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.track_running_stats and m.running_mean is None for m in bns)


def test_only_the_sampled_ops_parameters_get_gradients():
    net, arch = small_supernet(), random_arch(4, num_layers=6)
    logits, _ = net(images(), arch)
    F.cross_entropy(logits, torch.arange(4)).backward()
    for layer, spec in zip(net.layers, arch.layers):
        for op, branch in layer.branches.items():
            grads = [p.grad for p in branch.parameters()]
            if op == spec.op:
                assert all(g is not None and g.abs().sum() > 0 for g in grads), op
            else:
                assert all(g is None for g in grads), op


def test_reductions_run_only_for_the_entries_later_layers_read():
    # no skips: only the input chain (layer 1's output at the first reduction, layer 3's at the second) is reduced
    net = small_supernet()
    arch = arch_of(*[("conv_3x3", (0,) * i) for i in range(6)])
    net(images(), arch)[0].sum().backward()
    used = {".".join(name.split(".")[:2]) for name, p in net.reduce.named_parameters() if p.grad is not None}
    assert used == {"0.2", "1.4"}


def test_every_op_gives_different_logits():
    # the official search graph's late-binding bug made every op the max-pool branch (§2); here each op runs
    net = small_supernet().eval()
    base = random_arch(5, num_layers=6)
    outputs = []
    with torch.no_grad():
        for op in OPS:
            layers = list(base.layers)
            layers[2] = MacroLayer(op, layers[2].skips)
            outputs.append(net(images(), MacroArch(tuple(layers)))[0])
    for a in range(len(OPS)):
        for b in range(a + 1, len(OPS)):
            assert not torch.allclose(outputs[a], outputs[b], atol=1e-4), (OPS[a], OPS[b])


def test_skips_change_the_output():
    net = small_supernet().eval()
    without = arch_of(*[("conv_3x3", (0,) * i) for i in range(6)])
    layers = list(without.layers)
    layers[4] = MacroLayer("conv_3x3", (1, 0, 0, 0))  # stem -> layer 4, across both reductions
    with torch.no_grad():
        assert not torch.allclose(net(images(), without)[0], net(images(), MacroArch(tuple(layers)))[0], atol=1e-4)


def test_twelve_layers_reduce_after_layers_3_and_7():
    assert reduction_layers(12) == (3, 7) and reduction_layers(24) == (7, 15)
    net = small_supernet(num_layers=12)
    sizes = {}
    for i, layer in enumerate(net.layers):
        layer.register_forward_hook(lambda m, inp, out, i=i: sizes.__setitem__(i, out.shape[-1]))
    net(images(n=2, size=16), random_arch(0))
    assert [sizes[i] for i in range(12)] == [16] * 4 + [8] * 4 + [4] * 4


def test_supernet_rejects_an_arch_of_another_depth():
    assert_arch_error(lambda: small_supernet()(images(), random_arch(0)), "12 layers", "6")


# ----------------------------------------------------------------------------------- the fixed network


def small_network(arch: MacroArch) -> MacroNetwork:
    torch.manual_seed(0)
    return MacroNetwork(arch, num_layers=6, channels=8).to(memory_format=torch.channels_last)


@pytest.mark.parametrize("seed", [0, 1])
def test_network_output_shape_and_channel_doubling_for_random_archs(seed):
    arch = random_arch(seed, num_layers=6)
    net = small_network(arch)
    logits, aux = net(images())
    assert logits.shape == (4, 10) and torch.isfinite(logits).all() and aux is None
    assert net.classifier.in_features == 32  # 8 -> 16 -> 32
    assert MacroSpace(num_layers=6).network(arch, channels=8).num_params() == net.num_params()


def test_network_learns_a_tiny_batch():
    torch.manual_seed(0)
    net = small_network(random_arch(2, num_layers=6))
    net.dropout.p = 0.0
    x, y = images(n=8, seed=1), torch.arange(8) % 10
    losses = sgd_losses(net, x, y, 8)
    assert losses[-1] < 0.5 * losses[0], losses


def test_published_network_has_the_official_count_once_sep_convs_are_plain_convs():
    # enas_reference.md §9: 42,559,392 measured on the official final graph, whose sep ops are plain kxk convs
    arch = published_macro_arch()
    with torch.device("meta"):  # shapes only: 31M parameters without allocating or initialising them
        net = MacroNetwork(arch)
    assert net.num_params() == 30_947_424
    assert [len(r) for r in net.reduce] == [9, 17]  # this arc reads every output that exists at a reduction
    extra, c = 0, 96
    for i, layer in enumerate(arch.layers):
        if layer.op.startswith("sep"):
            k = 5 if layer.op.endswith("5x5") else 3
            extra += k * k * c * c - (k * k * c + c * c)  # plain kxk conv instead of depthwise + pointwise
        c *= 2 if i in net.reductions else 1
    assert net.num_params() + extra == 42_559_392


def test_network_keeps_bn_running_statistics_and_rejects_an_arch_of_another_depth():
    net = small_network(random_arch(0, num_layers=6))
    assert all(m.track_running_stats for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert_arch_error(lambda: MacroNetwork(random_arch(0), num_layers=6), "12 layers", "6")


# -------------------------------------------------------------------------------- controller: skip steps


def macro_controller(seed: int = 0, num_layers: int = 12, **overrides) -> Controller:
    """The official macro controller: tanh 1.5 for ops and skips, no op bias (§3.1, §3.3)."""
    torch.manual_seed(seed)
    return Controller(MacroSpace(num_layers=num_layers).steps(),
                      **{"tanh_input": 1.5, "tanh_op": 1.5, "op_bias": False, **overrides})


def test_controller_samples_valid_macro_archs():
    space, controller = MacroSpace(), macro_controller()
    rollout = controller(8, generator=gen(0))
    assert rollout.choices.shape == (8, 78)
    assert rollout.log_prob.shape == rollout.entropy.shape == rollout.skip_penalty.shape == (8,)
    for row in rollout.choices.tolist():
        arch = space.from_choices(row)
        assert isinstance(arch, MacroArch) and arch.num_layers == 12
    assert controller.b_soft is None


def test_teacher_forcing_reproduces_log_prob_entropy_and_skip_penalty():
    controller = macro_controller()
    rollout = controller(6, generator=gen(1))
    scored = controller(choices=rollout.choices)
    assert torch.equal(scored.choices, rollout.choices)
    for name in ("log_prob", "entropy", "skip_penalty", "skip_rate"):
        torch.testing.assert_close(getattr(scored, name), getattr(rollout, name))


def test_skip_rate_at_init_is_near_one_half_and_the_penalty_is_the_kl_to_point_four():
    with torch.no_grad():
        rollout = macro_controller()(400, generator=gen(0))
    assert abs(float(rollout.skip_rate.mean()) - 0.5) < 0.03
    # q ~ 0 at init: each skip contributes KL(Bern(0.5) || Bern(0.4)); 66 skips averaged over 11 layers
    kl = 0.5 * math.log(0.5 / 0.6) + 0.5 * math.log(0.5 / 0.4)
    assert (rollout.skip_penalty >= 0).all()
    assert float(rollout.skip_penalty.mean()) == pytest.approx(66 / 11 * kl, rel=0.1)


def test_skip_penalty_vanishes_where_sigmoid_of_the_yes_logit_is_the_target():
    # sigma of each shaped logit, not the sampling softmax: zero at sigma(l_yes) = 0.4, i.e. P(skip) ~ 0.31
    controller = macro_controller(num_layers=2)
    yes = math.log(0.4 / 0.6)
    logits = torch.tensor([[[-yes, yes]]])
    assert float(controller._skip_penalty(logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(controller._skip_penalty(logits + 0.3 * torch.tensor([-1.0, 1.0]))) > 0


def test_large_skip_weight_with_zero_rewards_lowers_the_penalty_and_the_skip_rate():
    controller = macro_controller(num_layers=8)
    reinforce = Reinforce(controller, lr=0.02, entropy_weight=0.0)
    sampler = ControllerSampler(MacroSpace(num_layers=8), controller, reinforce, gen(0), skip_weight=5.0)
    with torch.no_grad():
        before = controller(200, generator=gen(1))
    for _ in range(15):
        _, rollout = sampler.sample(10, with_grad=True)
        metrics = sampler.update(rollout, torch.zeros(10))
    with torch.no_grad():
        after = controller(200, generator=gen(1))
    assert float(after.skip_penalty.mean()) < 0.5 * float(before.skip_penalty.mean())
    assert float(after.skip_rate.mean()) < float(before.skip_rate.mean()) - 0.05
    assert float(after.skip_rate.mean()) > 0.2  # heading for the penalty's optimum (~0.31), not for zero
    assert set(metrics) >= {"controller/skip_rate", "controller/skip_penalty"}


def test_skip_weight_adds_its_share_of_the_mean_penalty_to_the_loss():
    losses = []
    for weight in (0.0, 0.8):
        controller = macro_controller(num_layers=5)
        sampler = ControllerSampler(MacroSpace(num_layers=5), controller, Reinforce(controller), gen(0),
                                    skip_weight=weight)
        _, rollout = sampler.sample(4, with_grad=True)
        losses.append(float(sampler.update(rollout, torch.rand(4, generator=gen(2)))["controller/loss"]))
    assert losses[1] - losses[0] == pytest.approx(0.8 * float(rollout.skip_penalty.detach().mean()), rel=1e-4)


def test_greedy_takes_a_skip_iff_it_is_more_likely_than_not():
    controller = macro_controller(num_layers=6).requires_grad_(False)
    greedy = controller(2, greedy=True)
    assert torch.equal(greedy.choices[0], greedy.choices[1])
    # the last layer's skips are the last decisions: flipping one changes only its own term of the log-prob
    best = float(greedy.log_prob[0])
    for column in range(greedy.choices.shape[1] - 5, greedy.choices.shape[1]):
        flipped = greedy.choices[:1].clone()
        flipped[0, column] = 1 - flipped[0, column]
        assert float(controller(choices=flipped).log_prob[0]) < best


def test_skip_input_is_the_mean_of_chosen_anchors_with_one_extra_and_zero_when_none():
    anchors = [torch.full((2, 3), 1.0), torch.full((2, 3), 4.0)]
    out = Controller._skip_input(torch.tensor([[1, 1], [0, 0]]), anchors)
    torch.testing.assert_close(out, torch.tensor([[5 / 3] * 3, [0.0] * 3]))


def test_micro_rollouts_carry_no_skip_rate_and_report_none():
    from enas.spaces.micro import MicroSpace
    torch.manual_seed(0)
    controller = Controller(MicroSpace().steps())
    sampler = ControllerSampler(MicroSpace(), controller, Reinforce(controller), gen(0))
    assert sampler.skip_weight == 0.0
    _, rollout = sampler.sample(2, with_grad=True)
    assert rollout.skip_rate is None and torch.equal(rollout.skip_penalty, torch.zeros(2))
    assert "controller/skip_rate" not in sampler.update(rollout, torch.ones(2))


def test_step_and_controller_options_are_checked():
    assert Step("skip", 3).num_columns == 3 and Step("op", 6).num_columns == 1 and Step("anchor").num_columns == 0
    with pytest.raises(ValueError, match="only op steps"):
        Step("skip", 2, logit_bias=(0.0, 0.0))
    with pytest.raises(ValueError, match="op_bias"):
        Controller(MacroSpace(num_layers=2).steps(), op_bias=False, op_bias_init=[0.0] * 6)


def _train_skips(sampler: ControllerSampler, reward_of, steps: int) -> float:
    for _ in range(steps):
        _, rollout = sampler.sample(10, with_grad=True)
        sampler.update(rollout, reward_of(rollout))
    with torch.no_grad():
        return float(sampler.controller(300, generator=gen(9)).skip_rate.mean())


@pytest.mark.parametrize("start", ["high", "low"])
def test_skip_penalty_pulls_the_skip_rate_back_from_either_side(start):
    """Drive the skip rate far from the target with a reward for (or against) skips, then let the penalty alone act
    (zero reward): the rate moves back toward the penalty's optimum from above and from below."""
    controller = macro_controller(num_layers=6)
    space = MacroSpace(num_layers=6)
    push = ControllerSampler(space, controller, Reinforce(controller, lr=0.05, entropy_weight=0.0), gen(0))
    sign = 1.0 if start == "high" else -1.0
    pushed = _train_skips(push, lambda r: sign * r.skip_rate.detach(), 40)
    assert (pushed > 0.75) if start == "high" else (pushed < 0.2)
    pull = ControllerSampler(space, controller, Reinforce(controller, lr=0.05, entropy_weight=0.0), gen(1),
                             skip_weight=5.0)
    pulled = _train_skips(pull, lambda r: torch.zeros(r.log_prob.shape[0]), 40)
    assert abs(pulled - 0.35) < abs(pushed - 0.35) - 0.15


def test_controller_learns_an_op_that_the_reward_pays_for():
    controller = macro_controller(num_layers=4)
    space = MacroSpace(num_layers=4)
    sampler = ControllerSampler(space, controller, Reinforce(controller, lr=0.05, entropy_weight=0.0), gen(0))
    paid = OPS.index("sep_conv_5x5")

    def share_of_paid_op(archs):
        return torch.tensor([sum(layer.op == OPS[paid] for layer in a.layers) / a.num_layers for a in archs])

    with torch.no_grad():
        before = share_of_paid_op(sampler.sample(200)[0]).mean()
    for _ in range(40):
        archs, rollout = sampler.sample(10, with_grad=True)
        sampler.update(rollout, share_of_paid_op(archs))
    after = share_of_paid_op(sampler.sample(200)[0]).mean()
    assert before < 0.3 and after > 0.6
