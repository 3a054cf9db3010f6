"""The NAS-RL layer-wise CNN space (Zoph & Le 2017): the architecture value (enas/spaces/nasrl_conv_arch.py), the
fixed network (enas/spaces/nasrl_conv_network.py), the space (enas/spaces/nasrl_conv.py) and the controller's
per-vocab op heads (enas/controller.py, Step.vocab)."""

import json

import pytest
import torch
from conftest import assert_arch_error, gen

from enas.controller import Controller
from enas.diagnostics import op_frequencies, sample_diagnostics
from enas.networks import build_network, load_arch
from enas.spaces.base import Step
from enas.spaces.micro import MicroSpace
from enas.spaces.nasrl_conv import NasrlConvSpace
from enas.spaces.nasrl_conv_arch import FILTER_HEIGHTS, NUM_FILTERS, NasrlConvArch, NasrlConvLayer
from enas.spaces.nasrl_conv_network import NasrlConvNetwork, pad_concat

SEEDS = range(4)
# the micro controller's parameters at torch.manual_seed(0), measured before per-vocab heads existed: name -> sum
ENAS_MICRO_SEED0 = {"g_emb": 0.024219, "b_soft": 0.096478, "lstm.weight_ih": -6.096521, "lstm.weight_hh": 3.040707,
                    "w_emb.weight": -1.286863, "w_soft.weight": -2.914858, "w_attn_1.weight": -2.489137,
                    "w_attn_2.weight": 2.861373, "v_attn.weight": 0.666216}


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def arch_of(*layers: tuple[int, int, int, tuple[int, ...]]) -> NasrlConvArch:
    return NasrlConvArch(tuple(NasrlConvLayer(h, w, n, skips) for h, w, n, skips in layers))


def images(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=gen(0))


def controller(seed: int = 0, space: NasrlConvSpace | None = None) -> Controller:
    torch.manual_seed(seed)
    return Controller((space or NasrlConvSpace()).steps())


def assert_trains(arch: NasrlConvArch) -> None:
    """Forward gives [2, 10] finite logits and no aux head; every parameter gets a gradient."""
    net = NasrlConvNetwork(arch)
    logits, aux = net(images())
    assert logits.shape == (2, 10) and aux is None and torch.isfinite(logits).all()
    logits.square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------ the networks


@pytest.mark.parametrize("seed", SEEDS)
def test_every_uniformly_sampled_architecture_trains(seed):
    assert_trains(NasrlConvSpace().sample_uniform(gen(seed)))


@pytest.mark.parametrize("seed", SEEDS)
def test_every_controller_sampled_architecture_trains(seed):
    space = NasrlConvSpace(num_layers=5)
    for row in controller(seed, space)(2, generator=gen(seed)).choices.tolist():
        assert_trains(space.from_choices(row))


def test_a_layer_without_input_reads_the_image_or_the_stem():
    arch = arch_of((3, 3, 24, ()), (5, 1, 36, (1,)), (1, 7, 48, (0, 0)), (3, 5, 64, (0, 1, 1)))
    assert arch.layers[2].sources() == ()
    assert NasrlConvNetwork(arch).layers[2][0].in_channels == 3
    with_stem = NasrlConvNetwork(arch, stem_channels=8)
    assert with_stem.layers[2][0].in_channels == with_stem.layers[0][0].in_channels == 8
    assert with_stem(images())[0].shape == (2, 10)


def test_inputs_are_concatenated_along_depth():
    arch = arch_of((3, 3, 24, ()), (3, 3, 36, (0,)), (3, 3, 48, (1, 1)), (1, 1, 64, (1, 1, 1)))
    net = NasrlConvNetwork(arch)
    assert [layer[0].in_channels for layer in net.layers] == [3, 3, 24 + 36, 24 + 36 + 48]
    assert net.layers[2][0].kernel_size == (3, 3) and net.layers[3][0].out_channels == 64


def test_unused_outputs_are_concatenated_before_the_classifier():
    # layers 0 and 2 are read by no later layer: with the last they feed the classifier
    arch = arch_of((1, 1, 24, ()), (3, 3, 36, (1,)), (5, 5, 48, (1, 1)), (7, 7, 64, (0, 1, 0)))
    assert arch.output_layers() == (2, 3)
    arch = arch_of((1, 1, 24, ()), (3, 3, 36, (0,)), (5, 5, 48, (0, 0)), (7, 7, 64, (0, 1, 0)))
    assert arch.output_layers() == (0, 2, 3)
    net = NasrlConvNetwork(arch).eval()
    assert net.classifier.in_features == 24 + 48 + 64
    outputs = []
    for layer in net.layers:
        layer.register_forward_hook(lambda module, inputs, out: outputs.append(out))
    logits, _ = net(images())
    pooled = torch.cat([outputs[i] for i in (0, 2, 3)], 1).mean((2, 3))
    torch.testing.assert_close(logits, net.classifier(pooled))


def test_pad_concat_zero_pads_smaller_maps_to_the_largest():
    small, large = torch.ones(1, 2, 4, 4), torch.full((1, 3, 7, 6), 2.0)
    out = pad_concat([small, large])
    assert out.shape == (1, 5, 7, 6)
    assert torch.equal(out[:, 2:], large)
    # 3 rows of padding: 1 above, 2 below; 2 columns: 1 each side
    assert torch.equal(out[:, :2, 1:5, 1:5], small)
    assert out[:, :2].sum() == small.sum() and out[:, :2, 0].abs().sum() == 0 and out[:, :2, 5:].abs().sum() == 0
    assert pad_concat([small]) is small


def test_classifier_runs_on_inputs_of_any_size_and_depth_must_match():
    arch = NasrlConvSpace(num_layers=3).sample_uniform(gen(0))
    assert NasrlConvNetwork(arch, num_classes=7)(images(size=9))[0].shape == (2, 7)
    assert_arch_error(lambda: NasrlConvNetwork(arch, num_layers=4), "3 layers", "4")


# ---------------------------------------------------------------------------------- the architecture value


def test_json_round_trips_through_a_file_and_the_network_registry(tmp_path):
    arch = NasrlConvSpace().sample_uniform(gen(3))
    data = arch.to_json()
    assert data["space"] == "nasrl_conv" and data["num_layers"] == 6
    assert data["layers"][0].keys() == {"filter_height", "filter_width", "num_filters", "skips"}
    assert NasrlConvArch.from_json(json.loads(json.dumps(data))) == arch
    arch.save(tmp_path / "best_arch.json")
    assert NasrlConvArch.load(tmp_path / "best_arch.json") == arch == load_arch(str(tmp_path / "best_arch.json"))
    assert isinstance(build_network(arch, num_classes=5), NasrlConvNetwork)


def test_enas_string_round_trips_and_reads_one_layer_per_line():
    arch = arch_of((3, 5, 36, ()), (7, 1, 64, (1,)), (1, 1, 24, (0, 1)))
    assert arch.to_enas_string() == "1 2 1 3 0 3 1 0 0 0 0 1"
    assert NasrlConvArch.from_enas_string(arch.to_enas_string()) == arch
    assert NasrlConvArch.from_enas_string("1 2 1\n3 0 3 1\n0 0 0 0 1\n") == arch
    for seed in SEEDS:
        sampled = NasrlConvSpace(num_layers=8).sample_uniform(gen(seed))
        assert NasrlConvArch.from_enas_string(sampled.to_enas_string()) == sampled


def test_readable_table_and_graph_show_inputs_and_classifier_outputs():
    arch = arch_of((3, 5, 36, ()), (7, 1, 64, (0,)), (1, 1, 24, (1, 1)))
    text = str(arch)
    assert "3x5" in text and "image" in text and "layer 0, layer 1" in text
    assert "classifier reads: layer 2 (24 channels" in text
    graph = arch.graphs()["network"]
    assert graph.inputs == ("image",) and graph.output == "output"
    assert set(graph.edges) == {("image", "layer_0", ""), ("image", "layer_1", ""), ("layer_0", "layer_2", ""),
                                ("layer_1", "layer_2", ""), ("layer_2", "output", "")}


def test_bad_architectures_are_rejected_naming_the_layer():
    assert_arch_error(lambda: arch_of((3, 3, 24, ()), (4, 3, 24, (1,))), "layer 1", "filter_height 4", "1, 3, 5, 7")
    assert_arch_error(lambda: arch_of((3, 3, 25, ())), "layer 0", "num_filters 25", "24, 36, 48, 64")
    assert_arch_error(lambda: arch_of((3, 3, 24, ()), (3, 3, 24, (1,)), (3, 3, 24, (1,))), "layer 2", "skips")
    assert_arch_error(lambda: arch_of((3, 3, 24, ()), (3, 3, 24, (2,))), "layer 1", "skip_0 = 2")
    assert_arch_error(lambda: NasrlConvArch.from_ints([0, 0, 4]), "layer 0", "num_filters id 4", "0..3")
    good = arch_of((3, 3, 24, ()), (3, 3, 24, (1,))).to_json()
    forward = {**good, "layers": [good["layers"][0], {**good["layers"][1], "skips": [1]}]}
    del forward["enas_string"]
    assert_arch_error(lambda: NasrlConvArch.from_json(forward), "layer 1", "skip source 1", "0..0")
    unknown = {**good, "layers": [{**good["layers"][0], "filter_width": 2}, good["layers"][1]]}
    del unknown["enas_string"]
    assert_arch_error(lambda: NasrlConvArch.from_json(unknown), "layer 0", "filter_width 2")
    assert_arch_error(lambda: NasrlConvArch.from_json({**good, "enas_string": "0 0 0"}), "does not match")
    assert_arch_error(lambda: NasrlConvArch.from_json({**good, "space": "macro"}), "'macro'", "nasrl_conv")
    assert_arch_error(lambda: NasrlConvArch.from_enas_string("1 2 3 0"), "3L + L(L-1)/2", "got 4")
    assert_arch_error(lambda: NasrlConvSpace().from_choices([0] * 32), "33 choices", "got 32")
    assert_arch_error(lambda: NasrlConvSpace(num_layers=2).to_choices(NasrlConvSpace().sample_uniform(gen(0))),
                      "6 layers", "has 2")


# ------------------------------------------------------------------------------------- space and controller


def test_steps_give_each_layer_three_vocab_decisions_then_its_skips():
    steps = NasrlConvSpace(num_layers=3).steps()
    vocabs = [("op", 4, "filter_height"), ("op", 4, "filter_width"), ("op", 4, "num_filters")]
    assert [(s.kind, s.num_choices, s.vocab) for s in steps] == [
        *vocabs, ("anchor", 0, "op"), *vocabs, ("skip", 1, "op"), *vocabs, ("skip", 2, "op")]
    assert sum(s.num_columns for s in steps) == NasrlConvSpace(num_layers=3).num_choices == 12


def test_controller_rollouts_round_trip_through_the_space():
    space = NasrlConvSpace()
    ctrl = controller(0, space)
    rollout = ctrl(8, generator=gen(1))
    assert rollout.choices.shape == (8, space.num_choices)
    for row in rollout.choices.tolist():
        assert space.to_choices(space.from_choices(row)) == row
    scored = ctrl(choices=rollout.choices)
    torch.testing.assert_close(scored.log_prob, rollout.log_prob)
    assert set(rollout.entropy_by_kind) == {"op", "skip"}


def test_each_vocab_has_its_own_embedding_and_softmax_that_learn():
    ctrl = controller()
    assert set(ctrl.vocab_emb) == set(ctrl.vocab_soft) == {"filter_height", "filter_width", "num_filters"}
    for vocab in ctrl.vocab_emb:
        assert tuple(ctrl.vocab_emb[vocab].weight.shape) == (4, 64)
        assert tuple(ctrl.vocab_soft[vocab].weight.shape) == (4, 64) and ctrl.vocab_soft[vocab].bias.shape == (4,)
    ctrl(3, generator=gen(0)).log_prob.sum().backward()
    for vocab in ctrl.vocab_emb:
        assert ctrl.vocab_soft[vocab].weight.grad.abs().sum() > 0, vocab
        assert ctrl.vocab_emb[vocab].weight.grad.abs().sum() > 0, vocab


def test_rewarding_one_filter_count_makes_the_controller_prefer_it():
    space, ctrl = NasrlConvSpace(num_layers=2), controller(0, NasrlConvSpace(num_layers=2))
    optimizer = torch.optim.Adam(ctrl.parameters(), lr=0.05)
    columns = [2, 5]  # the num_filters decisions of layers 0 and 1
    for step in range(40):
        rollout = ctrl(16, generator=gen(step))
        reward = (rollout.choices[:, columns] == NUM_FILTERS.index(64)).float().mean(1)
        loss = -((reward - reward.mean()) * rollout.log_prob).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    greedy = space.from_choices(ctrl(1, greedy=True).choices[0].tolist())
    assert [layer.num_filters for layer in greedy.layers] == [64, 64]


def test_single_vocab_controllers_keep_their_parameters_and_init_stream():
    torch.manual_seed(0)
    micro = Controller(MicroSpace().steps())
    assert [name for name, _ in micro.named_parameters()] == list(ENAS_MICRO_SEED0)
    assert list(micro.state_dict()) == list(ENAS_MICRO_SEED0) and len(micro.vocab_emb) == 0
    for name, p in micro.named_parameters():
        assert p.double().sum().item() == pytest.approx(ENAS_MICRO_SEED0[name], abs=2e-6), name
    # extra vocabs come after: the ENAS parameters of a mixed controller are drawn exactly as before
    torch.manual_seed(0)
    mixed = Controller([*MicroSpace().steps(), Step("op", 3, vocab="extra")])
    for name, p in micro.named_parameters():
        assert torch.equal(p, mixed.get_parameter(name)), name


def test_step_vocab_is_for_op_steps_and_one_vocab_has_one_choice_count():
    with pytest.raises(ValueError, match="only op steps"):
        Step("skip", 2, vocab="filter_height")
    with pytest.raises(ValueError, match="identifier"):
        Step("op", 4, vocab="filter.height")
    with pytest.raises(ValueError, match="'num_filters' must offer the same"):
        Controller([Step("op", 4, vocab="num_filters"), Step("op", 3, vocab="num_filters"), Step("op", 5)])


def test_space_has_no_supernet_and_no_op_share_diagnostics():
    with pytest.raises(ValueError, match="no shared weights.*nas_rl"):
        NasrlConvSpace().supernet()
    space = NasrlConvSpace()
    archs = [space.sample_uniform(gen(s)) for s in SEEDS]
    assert op_frequencies(space, archs) == {}
    assert sample_diagnostics(space, archs)["diag/distinct_archs"] == len(SEEDS)


def test_uniform_sampling_reaches_every_filter_size_and_skip_value():
    archs = [NasrlConvSpace().sample_uniform(gen(s)) for s in range(60)]
    assert {layer.filter_height for a in archs for layer in a.layers} == set(FILTER_HEIGHTS)
    assert {layer.num_filters for a in archs for layer in a.layers} == set(NUM_FILTERS)
    assert {s for a in archs for layer in a.layers for s in layer.skips} == {0, 1}
