"""The NAS-Bench-201 cell space (enas/spaces/nb201*.py): the benchmark's string for all 15,625 cells, strict
parsing, `none` as an exact zero, a supernet whose output depends only on the sampled ops, uniform sampling,
controller rollouts, and the benchmark network's published parameter counts."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_arch_error, sgd_losses
from torch import nn

from enas.controller import Controller
from enas.spaces.base import Step
from enas.spaces.micro_arch import JSON_FORMAT, JSON_VERSION
from enas.spaces.nb201 import Nb201Space
from enas.spaces.nb201_arch import (
    ALL_CONV3,
    ALL_SKIP,
    BEST_CIFAR10,
    EDGES,
    INDEX_1,
    OPS,
    Nb201Arch,
    all_archs,
)
from enas.spaces.nb201_supernet import (
    FixedCell,
    Nb201Network,
    Nb201Supernet,
    SearchCell,
    weight_free_op,
)

NONE, SKIP, CONV1, CONV3, POOL = OPS
SMALL = dict(channels=4, cells_per_stage=1)  # 3 cells at 4, 8, 16 channels
MIXED = Nb201Arch((CONV3, CONV1, SKIP, POOL, NONE, CONV3))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine two threads made one
    SGD step of the small network take 2.5 s instead of 5 ms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def arch(*ops: str) -> Nb201Arch:
    return Nb201Arch(tuple(ops))


def images(n: int = 4, size: int = 8, seed: int = 0, channels_last: bool = False) -> torch.Tensor:
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return x.to(memory_format=torch.channels_last) if channels_last else x


def small_supernet(**overrides) -> Nb201Supernet:
    torch.manual_seed(0)
    return Nb201Supernet(**{**SMALL, **overrides})


def small_network(cell: Nb201Arch, **overrides) -> Nb201Network:
    torch.manual_seed(0)
    return Nb201Network(cell, **{**SMALL, **overrides})


def num_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ---------------------------------------------------------------------------------------- encodings


def test_every_cell_round_trips_through_the_bench_string_the_enas_string_and_the_choices():
    space, strings = Nb201Space(), set()
    for cell in all_archs():
        text = cell.to_bench_string()
        assert Nb201Arch.from_bench_string(text) == cell
        assert Nb201Arch.from_enas_string(cell.to_enas_string()) == cell
        assert space.from_choices(space.to_choices(cell)) == cell
        strings.add(text)
    assert len(strings) == 5 ** 6 == 15_625


def test_bench_string_lists_each_nodes_edges_with_sources_ascending():
    cell = arch(CONV3, CONV1, SKIP, POOL, NONE, CONV3)
    assert cell.to_bench_string() == ("|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|"
                                      "+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|")
    assert cell.to_enas_string() == "3 2 1 4 0 3" and cell.to_ints() == [3, 2, 1, 4, 0, 3]
    assert [f"{t}<-{s}" for t, s in EDGES] == ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]


@pytest.mark.parametrize("text, ints", [(INDEX_1, "3 3 4 1 3 1"), (ALL_SKIP, "1 1 1 1 1 1"),
                                        (ALL_CONV3, "3 3 3 3 3 3"), (BEST_CIFAR10, "3 3 3 1 3 2")])
def test_benchmark_strings_parse_to_their_op_indices_and_print_back_unchanged(text, ints):
    cell = Nb201Arch.from_bench_string(text)
    assert cell.to_enas_string() == ints
    assert cell.to_bench_string() == text


def test_the_space_has_341_dead_cells_as_the_benchmark_reports():
    # nb201.md §1: 341 cells have no path of non-none edges from input to output and score exactly 10%
    assert sum(cell.is_dead for cell in all_archs()) == 341
    assert arch(NONE, NONE, SKIP, NONE, NONE, SKIP).is_dead           # node 1 is only reached through none
    assert not arch(NONE, NONE, NONE, SKIP, NONE, NONE).is_dead


def test_used_edges_are_the_non_none_edges_that_reach_the_output():
    assert Nb201Arch.from_bench_string(ALL_CONV3).used_edges() == (0, 1, 2, 3, 4, 5)
    assert MIXED.used_edges() == (0, 1, 2, 3, 5)                        # 3<-1 is none
    assert arch(CONV3, CONV1, NONE, SKIP, NONE, CONV3).used_edges() == (1, 3, 5)  # node 1 feeds nothing
    assert arch(*[NONE] * 6).used_edges() == ()


def test_json_round_trip_and_its_keys():
    data = json.loads(json.dumps(MIXED.to_json()))
    assert data == {"format": JSON_FORMAT, "version": JSON_VERSION, "space": "nb201",
                    "bench_string": MIXED.to_bench_string(), "enas_string": "3 2 1 4 0 3"}
    assert Nb201Arch.from_json(data) == MIXED


def test_save_then_load_gives_the_same_arch_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "arch.json"
    MIXED.save(path)
    assert Nb201Arch.load(path) == MIXED
    assert [p.name for p in path.parent.iterdir()] == ["arch.json"]


def test_arch_is_frozen_and_hashable():
    with pytest.raises(AttributeError):
        MIXED.ops = (SKIP,) * 6
    assert len({MIXED, Nb201Arch(list(MIXED.ops))}) == 1


def test_str_shows_a_node_table_and_the_bench_string():
    lines = str(MIXED).splitlines()
    rows = [[c.strip() for c in line.split("|")] for line in lines[2:5]]
    assert rows == [["1", CONV3], ["2", CONV1, SKIP], ["3", POOL, NONE, CONV3]]
    assert lines[-1] == f"bench string: {MIXED.to_bench_string()}"
    assert "dead" in str(arch(*[NONE] * 6))


def test_graph_has_the_four_nodes_and_one_labelled_edge_per_non_none_op():
    graph = MIXED.graphs()["cell"]
    assert [n for n, _ in graph.nodes] == ["0", "1", "2", "3"] and graph.inputs == ("0",) and graph.output == "3"
    assert graph.edges == (("0", "1", CONV3), ("0", "2", CONV1), ("1", "2", SKIP), ("0", "3", POOL),
                           ("2", "3", CONV3))


# ---------------------------------------------------------------------------------- malformed inputs


GOOD = MIXED.to_bench_string()


@pytest.mark.parametrize("text, fragments", [
    ("|skip_connect~0|+|none~0|none~1|", ["2 node(s)", "expected 3", "|op~0|+|op~0|op~1|+"]),
    (GOOD + "+|none~0|", ["4 node(s)"]),
    (GOOD.replace("|nor_conv_3x3~0|+", "nor_conv_3x3~0+", 1), ["node 1", "wrapped in '|'"]),
    (GOOD.replace("|skip_connect~1|", "|", 1), ["node 2", "1 incoming edge(s)", "from nodes 0, 1"]),
    (GOOD.replace("skip_connect~1", "skip_connect~1|none~1", 1), ["node 2", "3 incoming edge(s)"]),
    (GOOD.replace("skip_connect~1", "skip_connect", 1), ["node 2", "'skip_connect'", "not 'op~source'"]),
    (GOOD.replace("avg_pool_3x3~0|none~1", "none~1|avg_pool_3x3~0", 1), ["node 3", "source '1'; expected 0",
                                                                        "ascending"]),
    (GOOD.replace("nor_conv_1x1", "conv_5x5", 1), ["node 2", "'conv_5x5'", "allowed " + ", ".join(OPS)]),
    (GOOD.replace("|skip_connect~1", "||skip_connect~1", 1), ["node 2", "3 incoming edge(s)"]),
    (GOOD.replace("~2", "~ 2", 1), ["node 3", "source ' 2'"]),
])
def test_malformed_bench_string_is_rejected_naming_the_node_and_the_problem(text, fragments):
    assert_arch_error(lambda: Nb201Arch.from_bench_string(text), *fragments)


def test_bench_string_must_be_a_string():
    assert_arch_error(lambda: Nb201Arch.from_bench_string(None), "is a str", "NoneType")


@pytest.mark.parametrize("text, fragments", [
    ("3 2 1 4 0", ["6 op indices", "got 5"]), ("3 2 1 4 0 3 1", ["got 7"]), ("", ["got 0"]),
    ("3 2 1 5 0 3", ["edge 3<-0", "op index 5", "allowed 0..4", "0=none", "4=avg_pool_3x3"]),
    ("3 2 -1 4 0 3", ["edge 2<-1", "op index -1"]), ("3 2 x 4 0 3", ["separated by spaces"]),
])
def test_malformed_enas_string_is_rejected(text, fragments):
    assert_arch_error(lambda: Nb201Arch.from_enas_string(text), *fragments)


def test_unknown_op_or_wrong_edge_count_is_rejected_on_construction():
    assert_arch_error(lambda: arch(CONV3, CONV1, "sep_conv_3x3", POOL, NONE, CONV3), "edge 2<-1",
                      "'sep_conv_3x3'", "allowed " + ", ".join(OPS))
    assert_arch_error(lambda: arch(CONV3, CONV1), "6 edge ops")


@pytest.mark.parametrize("key, value, fragments", [
    ("format", "darts-genotype", ["format='darts-genotype'", f"format={JSON_FORMAT!r}"]),
    ("version", 2, ["version=2", f"version={JSON_VERSION}"]),
    ("space", "micro", ["'micro'", "'nb201'"]),
    ("enas_string", "3 2 1 4 0 0", ["does not match", "3 2 1 4 0 3"]),
    ("bench_string", GOOD.replace("~2", "~1"), ["node 3", "expected 2"]),
])
def test_bad_json_is_rejected_naming_the_bad_value(key, value, fragments):
    data = {**MIXED.to_json(), key: value}
    assert_arch_error(lambda: Nb201Arch.from_json(data), *fragments)


def test_json_without_a_bench_string_or_not_an_object_is_rejected(tmp_path):
    data = MIXED.to_json()
    del data["bench_string"]
    assert_arch_error(lambda: Nb201Arch.from_json(data), "needs 'bench_string'")
    assert_arch_error(lambda: Nb201Arch.from_json([]), "JSON object")
    (tmp_path / "bad.json").write_text("{")
    assert_arch_error(lambda: Nb201Arch.load(tmp_path / "bad.json"), "not valid JSON")
    assert_arch_error(lambda: Nb201Arch.load(tmp_path / "missing.json"), "does not exist")


# ------------------------------------------------------------------------------ space and sampling


def test_space_asks_six_five_way_op_choices_in_one_block():
    assert Nb201Space().steps() == [Step("op", 5, 0)] * 6
    assert_arch_error(lambda: Nb201Space().from_choices([0] * 5), "6 choices", "got 5")


def test_uniform_sampling_gives_each_op_a_fifth_of_every_edge():
    space, generator, n = Nb201Space(), torch.Generator().manual_seed(0), 5000
    counts = torch.zeros(len(EDGES), len(OPS))
    for _ in range(n):
        counts[torch.arange(len(EDGES)), torch.tensor(space.to_choices(space.sample_uniform(generator)))] += 1
    chi2 = ((counts - n / 5) ** 2 / (n / 5)).sum(1)
    assert (chi2 < 18.47).all(), chi2  # chi-square, 4 degrees of freedom, p = 0.001 per edge


def test_uniform_sampling_follows_the_generator():
    space = Nb201Space()
    draw = lambda seed: [space.sample_uniform(g) for g in [torch.Generator().manual_seed(seed)] for _ in range(20)]
    assert draw(1) == draw(1) and draw(1) != draw(2)


def test_controller_samples_valid_cells_and_scores_them():
    space = Nb201Space()
    torch.manual_seed(0)
    controller = Controller(space.steps(), tanh_op=2.5, op_bias_init=None)
    rollout = controller(num_samples=200, generator=torch.Generator().manual_seed(0))
    assert rollout.choices.shape == (200, 6)
    cells = [space.from_choices(row) for row in rollout.choices.tolist()]
    assert all(isinstance(c, Nb201Arch) for c in cells)
    assert all(set(rollout.choices[:, k].tolist()) == set(range(5)) for k in range(6))  # near-uniform at init
    scored = controller(choices=torch.tensor([space.to_choices(c) for c in cells[:5]]))
    torch.testing.assert_close(scored.log_prob, rollout.log_prob[:5])


# ------------------------------------------------------------------------------------ `none` is zero


@pytest.mark.parametrize("fixed", [False, True], ids=["search", "fixed"])
def test_a_cell_whose_only_path_is_skips_through_none_edges_is_the_identity(fixed):
    cell_arch = arch(SKIP, NONE, SKIP, NONE, NONE, SKIP)  # node 1 = x, node 2 = node 1, node 3 = node 2
    x = torch.randn(2, 4, 6, 6)
    out = FixedCell(cell_arch, 4)(x) if fixed else SearchCell(4, False, False)(x, cell_arch)
    assert torch.equal(out, x)


def test_edges_out_of_a_node_reached_only_through_none_add_exactly_nothing():
    # node 1 = none(x) = 0, so its skip into node 2 and its pool into node 3 must add zero: the same logits, bit
    # for bit, as the cell with those two edges set to none
    net = small_supernet().eval()
    with torch.no_grad():
        a, _ = net(images(), arch(NONE, CONV3, SKIP, CONV1, POOL, CONV3))
        b, _ = net(images(), arch(NONE, CONV3, NONE, CONV1, NONE, CONV3))
    assert torch.equal(a, b)


def test_a_node_with_only_none_inputs_is_a_zero_tensor_of_the_input_shape():
    cell = SearchCell(4, False, False)
    x = torch.randn(2, 4, 6, 6).to(memory_format=torch.channels_last)
    out = cell(x, arch(*[NONE] * 6))
    assert out.shape == x.shape and not out.any() and out.is_contiguous(memory_format=torch.channels_last)


def test_a_conv_edge_reading_a_zero_node_adds_its_bn_shift_as_the_benchmark_does():
    # the benchmark computes x*0 and runs the conv on it: ReLU(0) = 0, conv(0) = 0, BN -> its shift beta
    cell_arch = arch(NONE, NONE, CONV3, NONE, NONE, SKIP)
    cell = FixedCell(cell_arch, 4).train()
    beta = torch.tensor([0.5, -1.0, 2.0, 0.0])
    with torch.no_grad():
        cell.edges["2"][2].bias.copy_(beta)
    out = cell(torch.randn(2, 4, 6, 6))
    torch.testing.assert_close(out, beta.view(1, 4, 1, 1).expand(2, 4, 6, 6))


def test_average_pool_leaves_a_constant_map_unchanged_because_padding_is_not_counted():
    x = torch.full((1, 2, 5, 5), 3.0)
    torch.testing.assert_close(weight_free_op(POOL, x), x)  # corners average 4 pixels, not 9
    assert weight_free_op(SKIP, x) is x


def test_a_dead_cell_gives_every_image_the_same_logits():
    dead = arch(NONE, NONE, CONV3, NONE, NONE, SKIP)
    with torch.no_grad():
        logits, _ = small_supernet()(images(), dead)
        fixed, _ = small_network(dead).eval()(images())
    for out in (logits, fixed):
        torch.testing.assert_close(out, out[:1].expand_as(out))


# ------------------------------------------------------------------------------------------ supernet


def sampled_params(net: Nb201Supernet, cell_arch: Nb201Arch) -> set[str]:
    """Parameters that `cell_arch` runs: the skeleton and the conv op of every used edge, derived from the arch."""
    used = {f"edges.{k}.{cell_arch.ops[k]}." for k in cell_arch.used_edges() if cell_arch.ops[k] in (CONV1, CONV3)}
    return {n for n, _ in net.named_parameters()
            if not n.startswith("layers.") or ".edges." not in n or any(u in n for u in used)}


def test_supernet_holds_one_1x1_and_one_3x3_per_edge_of_every_cell():
    net = Nb201Supernet()
    cells = [layer for layer in net.layers if isinstance(layer, SearchCell)]
    assert len(cells) == 15 and all(set(edge) == {CONV1, CONV3} for c in cells for edge in c.edges)
    # the no-conv network's 73,306 + per edge and cell 10 C^2 (1x1 + 3x3, BNs not affine) at C = 16, 32, 64
    assert num_params(net) == 73_306 + 6 * 5 * 10 * (16 ** 2 + 32 ** 2 + 64 ** 2) == 1_686_106


def test_supernet_bns_use_batch_statistics_and_cell_bns_are_not_affine_by_default():
    net = Nb201Supernet(**SMALL)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.track_running_stats for m in bns)
    cell_bns = [m for layer in net.layers if isinstance(layer, SearchCell) for m in layer.modules()
                if isinstance(m, nn.BatchNorm2d)]
    assert len(cell_bns) == 3 * 6 * 2 and not any(m.affine for m in cell_bns)
    assert all(m.affine for m in Nb201Supernet(**SMALL, affine=True).modules() if isinstance(m, nn.BatchNorm2d))


def test_supernet_output_depends_only_on_the_sampled_ops():
    net = small_supernet()
    x = images()
    with torch.no_grad():
        before, _ = net(x, MIXED)
        for name, p in net.named_parameters():
            if name not in sampled_params(net, MIXED):
                p.add_(torch.randn_like(p))
        unchanged, _ = net(x, MIXED)
        net.get_parameter("layers.0.edges.5.nor_conv_3x3.1.weight").mul_(1.5)
        changed, _ = net(x, MIXED)
    assert torch.equal(unchanged, before)
    assert not torch.allclose(changed, before)


@pytest.mark.parametrize("cell_arch", [MIXED, arch(CONV3, CONV1, NONE, SKIP, NONE, CONV3),
                                       Nb201Arch.from_bench_string(BEST_CIFAR10)], ids=["mixed", "unused", "best"])
def test_only_the_sampled_ops_get_a_gradient(cell_arch):
    net = small_supernet()
    logits, aux = net(images(), cell_arch)
    F.cross_entropy(logits, torch.arange(4)).backward()
    assert aux is None
    with_grad = {n for n, p in net.named_parameters() if p.grad is not None}
    assert with_grad == sampled_params(net, cell_arch)
    assert all(net.get_parameter(n).grad.abs().sum() > 0 for n in with_grad)


def test_supernet_rejects_an_architecture_of_another_space():
    with pytest.raises(TypeError, match="Nb201Arch"):
        small_supernet()(images(), "3 2 1 4 0 3")


@pytest.mark.parametrize("build", [lambda: (small_supernet(), MIXED), lambda: (small_network(MIXED).eval(), None)],
                         ids=["supernet", "network"])
def test_channels_last_input_gives_batch_by_class_logits_equal_to_contiguous(build):
    net, cell_arch = build()
    run = (lambda x: net(x, cell_arch)) if cell_arch is not None else net
    with torch.no_grad():
        contiguous, aux = run(images())
        net.to(memory_format=torch.channels_last)
        channels_last, _ = run(images(channels_last=True))
    assert channels_last.shape == (4, 10) and aux is None and torch.isfinite(channels_last).all()
    torch.testing.assert_close(channels_last, contiguous, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------- fixed network


@pytest.mark.parametrize("text, num_classes, expected", [
    (ALL_CONV3, 10, 1_531_546), (ALL_SKIP, 10, 73_306),  # CIFAR-10 max and min of the benchmark's `params`
    (ALL_CONV3, 100, 1_537_396), (ALL_CONV3, 120, 1_538_696)])  # CIFAR-100, ImageNet16-120 max
def test_fixed_network_has_the_benchmarks_parameter_count(text, num_classes, expected):
    net = Nb201Network(Nb201Arch.from_bench_string(text), num_classes=num_classes)
    assert num_params(net) == expected


def test_fixed_network_instantiates_only_its_cells_conv_ops_with_affine_tracked_bns():
    net = small_network(MIXED)
    cells = [layer for layer in net.layers if isinstance(layer, FixedCell)]
    assert len(cells) == 3 and all(set(c.edges) == {"0", "1", "5"} for c in cells)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.affine and m.track_running_stats for m in bns)


def test_space_builds_its_supernet_and_network_from_its_settings():
    space = Nb201Space(num_classes=7, affine=True, **SMALL)
    net = space.supernet()
    assert isinstance(net, Nb201Supernet) and net.head.classifier.out_features == 7
    assert sum(isinstance(m, SearchCell) for m in net.layers) == 3
    fixed = space.network(MIXED, num_classes=5)
    assert isinstance(fixed, Nb201Network) and fixed.head.classifier.out_features == 5 and fixed.arch == MIXED


def test_a_few_sgd_steps_lower_the_fixed_networks_loss_on_a_learnable_batch():
    net = small_network(Nb201Arch.from_bench_string(BEST_CIFAR10)).train()
    y = torch.arange(16) % 4
    x = images(16) + 2.0 * y.view(-1, 1, 1, 1)  # the label is in the image's brightness
    losses = sgd_losses(net, x, y, 15)
    assert losses[-1] < 0.5 * losses[0], losses
