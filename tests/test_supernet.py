"""The micro search child (enas/spaces/micro_supernet.py) and its ops (enas/ops.py): the official parameter
count, shapes, the sampled path and only it getting a data gradient, the faithful optimiser that still decays
unsampled weights, the search graph's reduction wiring, TF "SAME" padding, and bf16 autocast."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from enas.config import SearchTrainerConfig
from enas.ops import DepthwiseConv2d, FactorizedReduce, ReLUFactorizedReduce, SepConv, pool, same_pad
from enas.optim import sgd_with_restarts
from enas.search import build_shared_optimizer
from enas.spaces.micro import MicroSpace
from enas.spaces.micro_arch import MicroArch, published_arch
from enas.spaces.micro_supernet import MicroSupernet, reduction_positions

SMALL = dict(channels=8, num_layers=3, image_size=16)  # cells 0 N, 1 R, 2 N, 3 R, 4 N
SEP_OPS = ("sep_conv_3x3", "sep_conv_5x5")


def small_net(**overrides) -> MicroSupernet:
    torch.manual_seed(0)
    return MicroSpace(**{**SMALL, **overrides}).supernet()


def random_arch(seed: int) -> MicroArch:
    return MicroSpace().sample_uniform(torch.Generator().manual_seed(seed))


def images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def labels(n: int = 4) -> torch.Tensor:
    return torch.arange(n) % 10


@pytest.fixture(scope="module")
def official_net() -> MicroSupernet:
    """The official search child: C=20, 6+2 cells, 5 nodes, reductions at cells 2 and 5 (built once: ~1 s)."""
    torch.manual_seed(0)
    return MicroSupernet(channels=20, num_layers=6, num_nodes=5)


def sampled_path(net: MicroSupernet, arch: MicroArch) -> set[str]:
    """Names of the parameters that `arch` runs, derived from the architecture alone."""
    names = {n for n, _ in net.named_parameters()}
    prefixes = ["stem.", "classifier.", "reduce_inputs."]
    for i in range(len(net.cells)):
        cell = arch.reduce if i in net.reductions else arch.normal
        prefixes += [f"cells.{i}.calibrate_x.", f"cells.{i}.calibrate_y.", f"cells.{i}.bn."]
        for j, node in enumerate(cell.nodes):
            for slot, source, op in ((0, node.input_a, node.op_a), (1, node.input_b, node.op_b)):
                if op in SEP_OPS:
                    prefixes.append(f"cells.{i}.edges.{j}.{slot}.{source}.{op}.")
        expected_rows = {f"cells.{i}.projection.{k}" for k in cell.loose_ends()}
        assert expected_rows <= names
        prefixes += sorted(expected_rows)
    return {n for n in names if any(n == p or n.startswith(p) for p in prefixes)}


def train_step_loss(net: MicroSupernet, arch: MicroArch, x: torch.Tensor | None = None) -> torch.Tensor:
    x = images() if x is None else x
    logits, _ = net(x, arch)
    return F.cross_entropy(logits, labels(len(x)))


# -------------------------------------------------------------------------------------------- size


def test_search_child_has_the_official_parameter_count(official_net):
    # enas_reference.md §1.2/§9: C=20, 6+2 cells, 5 nodes: 5,373,140 trainable parameters without the aux head
    assert official_net.num_params() == 5_373_140
    assert official_net.num_params() == sum(p.numel() for p in official_net.parameters())


def test_aux_head_adds_the_official_parameter_count(official_net):
    with_aux = MicroSupernet(aux_head=True)
    assert with_aux.num_params(include_aux=True) - with_aux.num_params() == 412_928
    assert with_aux.num_params() == official_net.num_params(include_aux=True)


def test_sep_convs_hold_the_official_share_of_parameters(official_net):
    net = official_net
    sep = sum(p.numel() for n, p in net.named_parameters() if ".sep_conv_" in n)
    assert sep == 5_184_000
    # one (3x3, 5x5) pair per (cell, node, slot, source): 8 cells x 2 slots x (2+3+4+5+6) sources = 640 ops
    assert sum(isinstance(m, SepConv) for m in net.modules()) == 640


def stacked(net: MicroSupernet, names: list[str]) -> torch.Tensor:
    return torch.cat([net.get_parameter(n).detach().flatten() for n in names])


def test_search_tables_start_at_the_official_init_scale(official_net):
    # enas_reference.md §4/§9 test vectors, measured on the official search graph: He init with fan_in = the
    # stored 2-D table's row count; std ~1.0 for node 0's depthwise table [2, 9C], 0.577 for node 4's pointwise
    # table [6, C*C], 0.534 for `final_conv` [7, C*C], and sqrt(2/27) = 0.27 for the stem conv
    net = official_net
    depthwise = stacked(net, [f"cells.0.edges.0.{slot}.{src}.sep_conv_3x3.depthwise.{k}.weight"
                              for slot in (0, 1) for src in (0, 1) for k in (0, 1)])
    pointwise = stacked(net, [f"cells.0.edges.4.{slot}.{src}.sep_conv_3x3.pointwise.{k}.weight"
                              for slot in (0, 1) for src in range(6) for k in (0, 1)])
    projection = stacked(net, [f"cells.0.projection.{k}" for k in range(7)])
    measured = [t.std().item() for t in (depthwise, pointwise, projection, net.stem[0].weight.detach())]
    official = [1.0, math.sqrt(2 / 6), math.sqrt(2 / 7), math.sqrt(2 / 27)]
    assert measured == pytest.approx(official, rel=0.06)


def test_space_builds_its_supernet_from_its_own_settings():
    net = MicroSpace(num_nodes=3, **SMALL).supernet()
    assert isinstance(net, MicroSupernet)
    assert len(net.cells) == SMALL["num_layers"] + 2
    assert len(net.cells[0].edges) == 3


# ---------------------------------------------------------------------------------- forward pass


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logits_have_batch_by_classes_shape_and_are_finite(seed):
    net = small_net()
    logits, aux = net(images(), random_arch(seed))
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    assert aux is None


def test_channels_last_input_gives_the_same_logits_as_contiguous():
    net = small_net().eval()  # eval: dropout off; BNs still use batch statistics
    x, arch = images(), random_arch(3)
    with torch.no_grad():
        contiguous, _ = net(x, arch)
        channels_last, _ = net.to(memory_format=torch.channels_last)(
            x.to(memory_format=torch.channels_last), arch)
    assert torch.isfinite(channels_last).all()
    torch.testing.assert_close(channels_last, contiguous, rtol=1e-4, atol=1e-4)


def test_different_architectures_give_different_outputs():
    net = small_net().eval()
    with torch.no_grad():
        a, _ = net(images(), random_arch(0))
        b, _ = net(images(), random_arch(1))
    assert not torch.allclose(a, b)


def test_search_bns_keep_no_running_statistics():
    # enas_reference.md §1.2: every search-child BN normalises with the batch statistics, in eval mode too
    net = small_net()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.track_running_stats for m in bns)


def test_aux_logits_come_only_in_training_mode_when_the_aux_head_is_on():
    torch.manual_seed(0)
    net = MicroSupernet(channels=4, num_layers=3, image_size=32, aux_head=True)  # aux input is 8x8
    arch, x = random_arch(0), images(2, size=32)
    assert net.aux_position == reduction_positions(3)[-1] + 1
    logits, aux = net.train()(x, arch)
    assert logits.shape == aux.shape == (2, 10) and torch.isfinite(aux).all()
    _, aux = net.eval()(x, arch)
    assert aux is None


# -------------------------------------------------------------------------------- gradient routing


@pytest.mark.parametrize("arch", [published_arch(), random_arch(0), random_arch(5)], ids=["published", "r0", "r5"])
def test_only_the_sampled_path_gets_a_data_gradient(arch):
    net = small_net()
    assert all(p.grad is None for p in net.parameters())
    train_step_loss(net, arch).backward()
    expected = sampled_path(net, arch)
    with_grad = {n for n, p in net.named_parameters() if p.grad is not None}
    assert with_grad == expected, (f"unexpected: {sorted(with_grad - expected)[:5]}, "
                                   f"missing: {sorted(expected - with_grad)[:5]}")
    zero = [n for n in expected if not net.get_parameter(n).grad.abs().sum() > 0]
    assert not zero, f"sampled-path parameters with an all-zero gradient: {zero[:5]}"


def test_sampled_path_excludes_other_sources_slots_ops_and_used_projection_rows():
    # the expectation the previous test relies on, spelt out for one node of the published normal cell
    net = small_net()
    path = sampled_path(net, published_arch())
    # normal node 2 = (in0 avg, in0 sep3): its y-slot source-0 sep3 runs, nothing else on node 2 does
    assert any(n.startswith("cells.0.edges.0.1.0.sep_conv_3x3.") for n in path)
    assert not any(n.startswith(("cells.0.edges.0.0.", "cells.0.edges.0.1.1.", "cells.0.edges.0.1.0.sep_conv_5x5"))
                   for n in path)
    # inputs 0, 1 are read by nodes: their projection rows stay out; nodes 2..6 are loose ends
    assert {n for n in path if n.startswith("cells.0.projection.")} == {f"cells.0.projection.{k}" for k in range(2, 7)}
    assert {n for n in path if n.startswith("cells.1.projection.")} == {f"cells.1.projection.{k}" for k in (2, 4, 5, 6)}


# ----------------------------------------------------------------------------- faithful optimiser


def one_shared_step(net: MicroSupernet, arch: MicroArch, cfg: SearchTrainerConfig):
    """The search loop's shared step (SearchLoop.shared_step) on a fixed batch."""
    optimizer, _ = build_shared_optimizer(net, cfg)
    optimizer.zero_grad()
    train_step_loss(net, arch).backward()
    optimizer.step()
    return optimizer


def an_unsampled_weight(net: MicroSupernet, arch: MicroArch) -> str:
    path = sampled_path(net, arch)
    off_path = sorted(n for n, _ in net.named_parameters() if n not in path)
    return next(n for n in off_path if n.endswith("pointwise.0.weight"))


ON_PATH = "cells.0.edges.0.1.0.sep_conv_3x3.pointwise.0.weight"  # published normal node 2: y slot, in0, sep3


def test_decay_unsampled_shrinks_and_tracks_momentum_for_weights_off_the_sampled_path():
    net, arch = small_net(), published_arch()
    cfg = SearchTrainerConfig(decay_unsampled=True)
    off, on = net.get_parameter(an_unsampled_weight(net, arch)), net.get_parameter(ON_PATH)
    off_before, on_before = off.detach().clone(), on.detach().clone()
    optimizer = one_shared_step(net, arch, cfg)
    assert torch.equal(off.detach(), off_before)  # deferred until the weights are read
    optimizer.catch_up()
    # zero data gradient: g = wd*w, buf = g, Nesterov step = lr*(g + momentum*buf)
    shrink = 1 - cfg.lr_max * cfg.weight_decay * (1 + cfg.momentum)
    torch.testing.assert_close(off.detach(), off_before * shrink)
    torch.testing.assert_close(optimizer.state[off]["momentum_buffer"], off_before * cfg.weight_decay)
    # a weight on the path moves by its data gradient, not just by the decay
    assert not torch.allclose(on.detach(), on_before * shrink)


def test_without_decay_unsampled_weights_off_the_path_are_bit_identical_after_a_step():
    net, arch = small_net(), published_arch()
    cfg = SearchTrainerConfig(decay_unsampled=False)
    off, on = net.get_parameter(an_unsampled_weight(net, arch)), net.get_parameter(ON_PATH)
    off_before, on_before = off.detach().clone(), on.detach().clone()
    optimizer = one_shared_step(net, arch, cfg)
    assert torch.equal(off.detach(), off_before)
    assert off not in optimizer.state or "momentum_buffer" not in optimizer.state[off]
    assert not torch.equal(on.detach(), on_before)


def test_lazy_decay_equals_eager_sgd_with_zero_gradients_over_steps_and_an_lr_change():
    """The faithful optimiser is TF's dense-gradient SGD: every weight without a data gradient holds a zero one.
    In float64: this tiny net's float32 training is chaotic enough that rounding alone parts two runs."""
    cfg = SearchTrainerConfig(decay_unsampled=True)
    # eval: no dropout draws; the search BNs use batch statistics anyway
    lazy_net, eager_net = small_net().eval().double(), small_net().eval().double()
    lazy, lazy_schedule = build_shared_optimizer(lazy_net, cfg)
    eager, eager_schedule = sgd_with_restarts(eager_net.parameters(), cfg)
    for p in eager_net.parameters():
        p.grad = torch.zeros_like(p)
    for step in range(6):
        arch = random_arch(step)
        for net, optimizer in ((lazy_net, lazy), (eager_net, eager)):
            optimizer.zero_grad(set_to_none=optimizer is lazy)
            train_step_loss(net, arch, images(seed=step).double()).backward()
            optimizer.step()
        if step % 2:
            lazy_schedule.step()
            eager_schedule.step()
    lazy.catch_up()
    for (name, p), q in zip(lazy_net.named_parameters(), eager_net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")
        torch.testing.assert_close(lazy.state[p]["momentum_buffer"], eager.state[q]["momentum_buffer"],
                                   rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")


# ----------------------------------------------------------------------- search reduction wiring


def test_factorized_reductions_sit_exactly_at_the_reduction_positions(official_net):
    assert reduction_positions(6) == (2, 5) and reduction_positions(15) == (5, 11)
    for num_layers, net in ((3, small_net()), (6, official_net)):
        assert net.reductions == reduction_positions(num_layers)
        assert set(net.reduce_inputs.keys()) == {str(i) for i in reduction_positions(num_layers)}
        assert all(isinstance(m, FactorizedReduce) for m in net.reduce_inputs.values())


def test_reduction_cells_calibrate_their_full_resolution_input_with_relu_and_factorized_reduction(official_net):
    net = official_net
    for r in net.reductions:
        assert isinstance(net.cells[r].calibrate_x, ReLUFactorizedReduce)
        assert isinstance(net.cells[r].calibrate_y, nn.Identity)  # FR(h_{r-1}) already has 2C channels


def test_calibration_weights_exist_only_where_the_official_search_graph_has_them(official_net):
    # enas_reference.md §1.5: `calibrate` variables only in layers 0, 1, 2 and 5; the cell after a reduction
    # receives [FR(h_{r-1}), h_r], both already at the new size and width, so it needs no calibration
    net = official_net
    calibrated = {int(n.split(".")[1]) for n, _ in net.named_parameters()
                  if n.startswith("cells.") and ".calibrate_" in n}
    assert calibrated == {0, 1, 2, 5}
    for r in net.reductions:
        assert isinstance(net.cells[r + 1].calibrate_x, nn.Identity)


def test_reduction_cell_reads_previous_output_and_its_reduction_and_the_next_cell_reuses_that_reduction():
    net = small_net()
    seen = {}
    hooks = [net.reduce_inputs[k].register_forward_hook(lambda m, a, out, k=k: seen.__setitem__(f"fr{k}", out))
             for k in net.reduce_inputs]
    hooks += [c.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(i, (args, out)))
              for i, c in enumerate(net.cells)]
    net(images(), random_arch(0))
    for h in hooks:
        h.remove()
    for r in net.reductions:
        (h0, h1, _), _ = seen[r]
        assert h0 is seen[r - 1][1]           # h_{r-1} at full resolution
        assert h1 is seen[f"fr{r}"]           # FR(h_{r-1})
        (h0_next, h1_next, _), _ = seen[r + 1]
        assert h0_next is seen[f"fr{r}"]      # the same FR tensor, not h_{r-1}
        assert h1_next is seen[r][1]
    sizes = [seen[i][1].shape[1:] for i in range(len(net.cells))]
    assert sizes == [(8, 16, 16), (16, 8, 8), (16, 8, 8), (32, 4, 4), (32, 4, 4)]


# ------------------------------------------------------------------------------------------------ ops


def test_factorized_reduce_halves_resolution_and_reaches_the_requested_channels():
    out = FactorizedReduce(6, 10)(torch.randn(2, 6, 8, 8))
    assert out.shape == (2, 10, 4, 4)
    with pytest.raises(ValueError, match="even"):
        FactorizedReduce(6, 5)


@pytest.mark.parametrize("size", [(8, 8), (7, 7), (8, 5), (5, 8)], ids=["even", "odd", "even-odd", "odd-even"])
def test_factorized_reduce_samples_the_even_grid_then_the_odd_grid(size):
    """TF's shifted second path: the odd grid, and along an odd side a last sample of the zero pad."""
    fr = FactorizedReduce(3, 2)
    fr.bn = nn.Identity()  # look at the two paths before normalisation
    with torch.no_grad():
        fr.path1.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))  # path 1 reads channel 0
        fr.path2.weight.copy_(torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1))  # path 2 reads channel 2
    x = torch.randn(2, 3, *size)
    out = fr(x)
    half = ((size[0] + 1) // 2, (size[1] + 1) // 2)
    assert out.shape == (2, 2, *half)
    torch.testing.assert_close(out[:, 0], x[:, 0, ::2, ::2])
    odd = torch.zeros(2, *half)
    odd[:, :size[0] // 2, :size[1] // 2] = x[:, 2, 1::2, 1::2]
    torch.testing.assert_close(out[:, 1], odd)


def test_average_pool_excludes_padding_from_the_average():
    x = torch.full((1, 2, 6, 6), 3.0)
    torch.testing.assert_close(pool(x, "avg"), x)  # corners and edges too
    strided = pool(x, "avg", stride=2)
    assert strided.shape == (1, 2, 3, 3)
    torch.testing.assert_close(strided, torch.full_like(strided, 3.0))


@pytest.mark.parametrize("shape", [(2, 3, 9, 7), (1, 2, 1, 1), (2, 2, 2, 3)], ids=["9x7", "1x1", "2x3"])
@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
def test_cpu_average_pool_as_a_conv_of_ones_equals_the_builtin_pool(shape, memory_format):
    """On CPU the stride-1 average pool runs as a depthwise conv of ones over the pixel counts: the builtin
    pool's values and gradients (float64), memory format kept, on odd and tiny maps where counts are 1 to 9."""
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64).contiguous(memory_format=memory_format).requires_grad_()
    grad = torch.randn(*shape, dtype=torch.float64)
    out = pool(x, "avg")
    assert out.grad_fn.name().startswith("_AvgPool3x3") and out.is_contiguous(memory_format=memory_format)
    (out * grad).sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    ref = F.avg_pool2d(x_ref, 3, 1, padding=1, count_include_pad=False)
    (ref * grad).sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-12)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # runs in the input's dtype, as the builtin pool does
        assert pool(x.float(), "avg").dtype == torch.float32


def test_cpu_average_pool_made_first_under_inference_mode_still_trains():
    """The pool's kernel and pixel counts are made once per shape and shared: made under inference_mode they must
    still serve a later training call (inference tensors cannot be saved for backward)."""
    shape = (2, 3, 11, 5)  # a shape no other test pools, so that this call makes them
    with torch.inference_mode():
        first = pool(torch.ones(shape), "avg")
    x = torch.randn(shape, requires_grad=True)
    pool(x, "avg").sum().backward()
    torch.testing.assert_close(first, torch.ones(shape))
    assert x.grad is not None and x.grad.shape == x.shape


def test_max_pool_never_picks_the_padding():
    x = torch.full((1, 1, 6, 6), -5.0)
    torch.testing.assert_close(pool(x, "max"), x)
    torch.testing.assert_close(pool(x, "max", stride=2), torch.full((1, 1, 3, 3), -5.0))


def test_strided_average_pool_windows_start_at_the_top_left_pixel():
    # enas_reference.md §9: out[0,0] of a 3x3/s2 SAME pool is the mean of rows and cols 0..2
    x = torch.arange(64.0).view(1, 1, 8, 8)
    assert pool(x, "avg", stride=2)[0, 0, 0, 0] == x[0, 0, :3, :3].mean()


@pytest.mark.parametrize("kernel, before, after", [(3, 0, 1), (5, 1, 2)])
def test_same_pad_at_stride_two_pads_more_after_than_before(kernel, before, after):
    x = torch.ones(1, 1, 8, 8)
    padded = same_pad(x, kernel, 2)
    assert padded.shape[-2:] == (8 + before + after,) * 2
    inside = padded[0, 0, before:before + 8, before:before + 8]
    torch.testing.assert_close(inside, x[0, 0])
    assert padded.sum() == x.sum()  # everything else is zero padding


def test_same_pad_at_stride_one_is_symmetric():
    padded = same_pad(torch.ones(1, 1, 8, 8), 3, 1)
    assert padded.shape[-2:] == (10, 10) and padded[0, 0, 1:9, 1:9].sum() == 64


@pytest.mark.parametrize("kernel", [3, 5])
def test_sep_conv_keeps_resolution_at_stride_one_and_halves_it_at_stride_two(kernel):
    x = torch.randn(2, 4, 8, 8)
    assert SepConv(4, kernel)(x).shape == (2, 4, 8, 8)
    assert SepConv(4, kernel, stride=2)(x).shape == (2, 4, 4, 4)


def test_sep_conv_stacks_two_relu_depthwise_pointwise_bn_blocks():
    op = SepConv(4, 3)
    assert len(op.depthwise) == len(op.pointwise) == len(op.bns) == 2
    assert all(dw.groups == 4 for dw in op.depthwise)


def test_sep_conv_equals_its_functional_blocks_and_leaves_its_input_alone():
    """The SepConv's second ReLU runs in place on its BN output: the output and every gradient equal the blocks
    written out with out-of-place ops, and the input (a cell state other ops read too) is not touched."""
    torch.manual_seed(0)
    op = SepConv(3, 3).double()
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    before = x.detach().clone()
    grad = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    out = op(x)
    got = torch.autograd.grad(out, [x, *op.parameters()], grad)
    assert torch.equal(x.detach(), before)
    ref = x
    for dw, pw, bn in zip(op.depthwise, op.pointwise, op.bns):
        ref = F.batch_norm(F.conv2d(F.conv2d(F.relu(ref), dw.weight, padding=1, groups=3), pw.weight), None, None,
                           bn.weight, bn.bias, training=True, eps=bn.eps)
    expected = torch.autograd.grad(ref, [x, *op.parameters()], grad)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel", [5, 7])
@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
def test_depthwise_conv_split_backward_equals_the_builtin_one(kernel, memory_format):
    """On CPU a stride-1 depthwise conv wider than 3 trains through a backward of two oneDNN calls: the same
    gradients (float64), on a non-square map, with the stride-2 path left to the builtin conv."""
    torch.manual_seed(0)
    conv = DepthwiseConv2d(3, kernel).double()
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64).contiguous(memory_format=memory_format).requires_grad_()
    grad = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    (conv(x) * grad).sum().backward()
    assert conv(x).grad_fn.name().startswith("_SplitBackwardDepthwiseConv")
    x_ref, w_ref = x.detach().clone().requires_grad_(), conv.weight.detach().clone().requires_grad_()
    (F.conv2d(x_ref, w_ref, padding=kernel // 2, groups=3) * grad).sum().backward()
    torch.testing.assert_close(conv(x), F.conv2d(x_ref, w_ref, padding=kernel // 2, groups=3))
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(conv.weight.grad, w_ref.grad, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: conv(t), (x[:1, :, :6, :5].detach().requires_grad_(),))
    strided = DepthwiseConv2d(3, kernel, stride=2).double()
    assert strided(F.pad(x, (1, 2, 1, 2))).grad_fn.name() != conv(x).grad_fn.name()


def test_depthwise_conv_3x3_keeps_the_builtin_backward():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    assert DepthwiseConv2d(3, 3)(x).grad_fn.name().startswith("ConvolutionBackward")
    assert DepthwiseConv2d(3, 5)(x).grad_fn.name().startswith("_SplitBackwardDepthwiseConv")


def test_depthwise_conv_refuses_an_even_kernel():
    with pytest.raises(ValueError, match="odd kernel size, got 4"):
        DepthwiseConv2d(3, 4)


def test_depthwise_conv_under_bf16_autocast_gives_float32_gradients():
    conv = DepthwiseConv2d(4, 5)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == conv.weight.grad.dtype == torch.float32
    assert torch.isfinite(conv.weight.grad).all()


# ------------------------------------------------------------------------------------------ bf16


def test_bf16_autocast_runs_forward_and_backward_with_a_finite_loss():
    net = small_net()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = net(images().to(memory_format=torch.channels_last), random_arch(2))
        loss = F.cross_entropy(logits, labels())
    assert logits.dtype == torch.bfloat16
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    assert net.classifier.weight.grad is not None
