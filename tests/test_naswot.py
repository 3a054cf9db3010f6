"""NASWOT (shared/reference/naswot.md §1, §6, §8): the kernel and score on hand-made networks, their invariance to
memory format, in-place ReLUs and autocast, no side effects on the model or the random state, the verdict on
NAS-Bench-201 cells, the strategy's uniform samples, and the training-free search and the derive prefilter end to
end."""
from __future__ import annotations

import copy
import json
import logging
import math
from collections import Counter

import pytest
import torch
from torch import nn

from enas.data import DataError, make_synthetic
from enas.derive import kendall_tau
from enas.naswot import NaswotJudge, log_abs_det, naswot_kernel, naswot_score
from enas.networks import build_network, load_arch
from enas.build import build_sampler, build_space
from enas.pipeline import run_search
from enas.samplers import UniformSampler
from enas.spaces.micro import MicroSpace
from enas.spaces.nb201_arch import Nb201Arch

SPACES = ("micro", "macro", "nb201")


def images(n: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def conv_net(inplace: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace),
                         nn.Conv2d(6, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace),
                         nn.Flatten(), nn.Dropout(0.5), nn.Linear(6 * 8 * 8, 10))


def micro_net(**overrides) -> nn.Module:
    torch.manual_seed(0)
    arch = MicroSpace(num_layers=1, channels=8, image_size=16).sample_uniform(torch.Generator().manual_seed(1))
    return build_network(arch, **{**dict(num_layers=1, channels=8, image_size=16, aux_head=False), **overrides})


def nb201_score(ops: tuple[str, ...]) -> float:
    torch.manual_seed(0)
    return naswot_score(build_network(Nb201Arch(ops), channels=8, cells_per_stage=1), images(16))


# --- the score's definition ---------------------------------------------------------------------------------
def test_kernel_is_symmetric_with_the_unit_count_on_its_diagonal_and_counts_agreeing_units():
    net, x = conv_net(), images()
    kernel, units = naswot_kernel(net, x)
    assert units == 6 * 16 * 16 + 6 * 8 * 8
    assert torch.equal(kernel, kernel.T) and torch.all(kernel.diagonal() == units)
    # by hand: the codes at every ReLU of a batch-statistics forward, K = (N_A + s sᵀ) / 2 with s = ±1
    reference = copy.deepcopy(net).train()
    codes, h = [], x
    for layer in reference:
        if isinstance(layer, nn.ReLU):
            codes.append((h > 0).flatten(1))
        h = layer(h)
    signs = torch.cat(codes, 1).double() * 2 - 1
    assert torch.equal(kernel, (units + signs @ signs.T) / 2)


def test_score_of_a_hand_made_two_layer_net_is_the_hand_computed_log_determinant():
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 2), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        net[2].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
        net[2].bias.fill_(-0.5)
    x = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    # codes (layer 1 | layer 2): 100|10, 010|00, 111|11 -> Hamming distances 3, 3, 4 out of N_A = 5
    kernel, units = naswot_kernel(net, x)
    assert units == 5
    assert torch.equal(kernel, torch.tensor([[5.0, 2, 2], [2, 5, 1], [2, 1, 5]], dtype=torch.float64))
    assert naswot_score(net, x) == pytest.approx(math.log(88), abs=1e-12)  # det = 5*24 - 2*8 - 2*8


def test_a_duplicated_image_gives_minus_infinity_and_a_warning_not_an_exception(caplog):
    x = images()
    x[3] = x[5]
    with caplog.at_level(logging.WARNING, logger="enas.naswot"):
        assert naswot_score(conv_net(), x) == float("-inf")
    assert "singular" in caplog.text


@pytest.mark.parametrize("seed", range(3))
def test_a_kernel_singular_through_a_combination_of_codes_scores_minus_infinity(seed):
    """Two images whose codes are the OR and the AND of two others (c2 + c3 = c0 + c1) make K singular without equal
    rows: LU's rounding leaves a tiny pivot (slogdet gave sign -1 and log|det| 5-7 on an Intel Xeon), the
    eigenvalues still show it."""
    c = (torch.rand(8, 300, generator=torch.Generator().manual_seed(seed)) > 0.5).double()
    c[2], c[3] = torch.maximum(c[0], c[1]), torch.minimum(c[0], c[1])
    kernel = c @ c.T + (1 - c) @ (1 - c).T  # units where two codes agree
    assert log_abs_det(kernel) == float("-inf")
    c[3] = 1 - c[3]  # no longer a combination
    kernel = c @ c.T + (1 - c) @ (1 - c).T
    assert log_abs_det(kernel) == pytest.approx(torch.linalg.slogdet(kernel)[1].item(), abs=1e-12)


def test_relus_are_matched_by_type_so_a_wrapper_named_relu_is_not_counted_twice():
    class ReLUConvBN(nn.Sequential):  # as NB201's block: the official name match hooks it and its ReLU
        def __init__(self):
            super().__init__(nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))

    _, units = naswot_kernel(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), ReLUConvBN()), images())
    assert units == 4 * 16 * 16


def test_a_model_without_relu_modules_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="nn.ReLU"):
        naswot_score(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), images())


# --- invariances ----------------------------------------------------------------------------------------------
def test_channels_last_inplace_relu_and_an_autocast_context_give_the_same_score():
    x = images(16)
    net = micro_net()
    score = naswot_score(net, x)
    assert math.isfinite(score)
    # NHWC kernels may round differently (thread count, oneDNN path): the same codes up to float summation order
    assert naswot_score(net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)) \
        == pytest.approx(score, rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert naswot_score(net, x) == pytest.approx(score, rel=1e-6)
    assert naswot_score(conv_net(inplace=True), x) == naswot_score(conv_net(inplace=False), x)


def test_batch_norm_uses_batch_statistics_in_either_mode_and_branches_off_in_eval_do_not_count():
    x = images(16)
    net = micro_net()
    score = naswot_score(net.train(), x)
    assert naswot_score(net.eval(), x) == score
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):  # running stats would flatten every code
        bn.running_mean.fill_(100.0)
        bn.running_var.fill_(1e-4)
    assert naswot_score(net.train(), x) == score

    class WithAux(nn.Module):  # an aux head that runs in training mode only, as MicroNetwork's
        def __init__(self):
            super().__init__()
            self.trunk, self.aux = conv_net(), nn.Sequential(nn.ReLU(), nn.Linear(10, 10))

        def forward(self, x):
            logits = self.trunk(x)
            return logits, self.aux(logits) if self.training else None

    assert naswot_score(WithAux().train(), x) == naswot_score(conv_net(), x)


# --- no side effects --------------------------------------------------------------------------------------------
def test_scoring_leaves_parameters_buffers_modes_and_the_global_rng_unchanged():
    net = micro_net(dropout=0.5).train()
    net.cells[0].eval()  # a mixed mode must come back as it was
    state = {k: v.clone() for k, v in net.state_dict().items()}
    buffers = dict(net.named_buffers())
    modes = {name: m.training for name, m in net.named_modules()}
    rng = torch.get_rng_state()
    naswot_score(net, images())
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())  # running stats, batch counts too
    assert all(b is buffers[k] for k, b in net.named_buffers())
    assert {name: m.training for name, m in net.named_modules()} == modes
    assert torch.equal(torch.get_rng_state(), rng)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in net.modules())


def test_hooks_and_running_statistics_come_back_when_the_forward_raises():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn, self.relu = nn.BatchNorm2d(3), nn.ReLU()

        def forward(self, x):
            self.relu(self.bn(x))
            raise RuntimeError("boom")

    net = Boom()
    mean = net.bn.running_mean
    with pytest.raises(RuntimeError, match="boom"):
        naswot_score(net, images())
    assert not net.relu._forward_pre_hooks and net.bn.running_mean is mean and net.training


def test_judge_is_seeded_and_leaves_the_global_rng_alone():
    space = MicroSpace(num_layers=1, channels=8, image_size=16)
    archs = [space.sample_uniform(torch.Generator().manual_seed(i)) for i in range(3)]
    judge = NaswotJudge(lambda a: build_network(a, num_layers=1, channels=8, image_size=16, aux_head=False),
                        images(), seed=7)
    rng = torch.get_rng_state()
    first, second = judge(archs), judge(archs)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [s.score for s in first] == [s.score for s in second]
    assert all(s.params > 0 and s.time_s >= 0 and s.arch is a for s, a in zip(first, archs))


# --- what it prefers ------------------------------------------------------------------------------------------
def test_nb201_cells_without_convolutions_score_below_cells_with_them():
    no_conv = [("skip_connect",) * 6, ("avg_pool_3x3",) * 6, ("skip_connect", "avg_pool_3x3") * 3]
    with_conv = [("nor_conv_3x3",) * 6, ("nor_conv_1x1",) * 6, ("nor_conv_3x3", "skip_connect") * 3]
    assert max(map(nb201_score, no_conv)) < min(map(nb201_score, with_conv))


def test_all_skip_nb201_cell_at_the_benchmark_skeleton_has_the_minimum_40960_units():
    _, units = naswot_kernel(build_network(Nb201Arch(("skip_connect",) * 6)), images(2, size=32))
    assert units == 40_960  # naswot.md §7: the ResNet blocks and the head only


# --- the strategy ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space", SPACES)
def test_naswot_strategy_samples_uniformly(smoke, space):
    cfg, _ = smoke(f"search_space={space}", "trainer.strategy=naswot")
    space_obj = build_space(cfg, make_synthetic(8, 8, image_size=16))
    sampler = build_sampler(cfg, space_obj, torch.device("cpu"))
    assert isinstance(sampler, UniformSampler)
    archs, _ = sampler.sample(2000)
    first = next(s for s in space_obj.steps() if s.is_choice)  # every space's first decision is an op
    counts = Counter(space_obj.to_choices(a)[0] for a in archs)
    assert set(counts) == set(range(first.num_choices))
    assert all(abs(c / len(archs) - 1 / first.num_choices) < 0.035 for c in counts.values())


@pytest.mark.parametrize("space", SPACES)
def test_naswot_search_writes_every_artefact(smoke, tmp_path, space):
    cfg, resolved = smoke(f"search_space={space}", "trainer.strategy=naswot")
    result = run_search(cfg, resolved)
    run_dir = tmp_path / "run"
    rows = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(cfg.naswot.num_samples)) == list(range(8))
    assert all(r["params"] > 0 and r["time_s"] >= 0 and (r["score"] is None) == r["singular"] for r in rows)
    expected = build_sampler(cfg, build_space(cfg, make_synthetic(8, 8, image_size=16)), torch.device("cpu"))
    assert [r["enas_string"] for r in rows] == [a.to_enas_string() for a in expected.sample(8)[0]]
    best = max(rows, key=lambda r: -math.inf if r["score"] is None else r["score"])
    assert result["strategy"] == "naswot" and result["best_score"] == best["score"]
    assert result["best_arch"] == best["enas_string"] == load_arch(str(run_dir / "best_arch.json")).to_enas_string()
    assert json.loads((run_dir / "result.json").read_text()) == result
    assert result["skeleton"]["channels"] == cfg.search_space.channels and result["batch_size"] == 32
    artefacts = result["artefacts"]
    assert artefacts["histogram"].endswith("naswot_scores.png")
    assert any(k.startswith("drawing_") for k in artefacts)
    assert all((run_dir / p).exists() for p in artefacts.values())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(8)) and all("naswot/params" in r for r in records)


def test_naswot_batch_larger_than_the_training_split_is_refused_by_name(smoke):
    with pytest.raises(DataError, match="naswot.batch_size=100000"):
        run_search(*smoke("trainer.strategy=naswot", "naswot.batch_size=100000"))


@pytest.mark.parametrize("override, message", [
    ("derive.prefilter=flops", "derive.prefilter='flops'; allowed null .none. or naswot, params"),
    ("naswot.num_samples=0", "naswot.num_samples=0"),
    ("naswot.batch_size=1", "naswot.batch_size=1"),
])
def test_bad_naswot_settings_name_the_value(smoke, override, message):
    with pytest.raises(ValueError, match=message):
        smoke(override)


# --- the derive prefilter ---------------------------------------------------------------------------------------
def test_enas_derive_with_the_naswot_prefilter_ranks_the_naswot_top_k_and_records_both_scores(smoke, tmp_path):
    cfg, resolved = smoke("trainer.epochs=1", "derive.prefilter=naswot", "derive.score=acc")
    result = run_search(cfg, resolved)
    run_dir = tmp_path / "run"
    derived = json.loads((run_dir / "derived.json").read_text())
    prefilter = derived["prefilter"]
    everyone = prefilter["candidates"]
    assert prefilter["num_candidates"] == len(everyone) > cfg.derive.prefilter_top_k == 4
    assert all("naswot_score" in c for c in everyone)
    kept = [c for c in everyone if c["valid_acc"] is not None]
    naswot = lambda c: -math.inf if c["naswot_score"] is None else c["naswot_score"]  # noqa: E731
    assert len(kept) == derived["num_scored"] == prefilter["num_kept"] == 4
    assert min(map(naswot, kept)) >= max(naswot(c) for c in everyone if c["valid_acc"] is None)
    accs = [c["valid_acc"] for c in derived["top"]]
    assert accs == sorted(accs, reverse=True) and derived["top"][0]["enas_string"] == result["best_arch"]
    assert prefilter["kendall_tau"] == kendall_tau([c["valid_acc"] for c in kept], [naswot(c) for c in kept])
    assert (run_dir / "best_arch.json").exists() and (run_dir / "result.json").exists()


def test_the_params_prefilter_keeps_the_largest_candidates_and_ranks_them_by_loss(smoke, tmp_path):
    cfg, resolved = smoke("search_space=nb201", "trainer.epochs=1", "derive.prefilter=params", "derive.score=loss",
                          "derive.prefilter_samples=12", "derive.prefilter_top_k=4")
    run_search(cfg, resolved)
    derived = json.loads((tmp_path / "run" / "derived.json").read_text())
    everyone = derived["prefilter"]["candidates"]
    kept = [c for c in everyone if c["valid_acc"] is not None]
    assert derived["prefilter"]["method"] == "params" and len(kept) == 4 and len(everyone) > 4
    assert min(c["params_score"] for c in kept) >= max(c["params_score"] for c in everyone if c["valid_acc"] is None)
    losses = [c["valid_loss"] for c in derived["top"]]
    assert derived["score"] == "loss" and losses == sorted(losses)
    assert derived["prefilter"]["kendall_tau"] == kendall_tau([-c["valid_loss"] for c in kept],
                                                              [c["params_score"] for c in kept])


def test_kendall_tau_matches_hand_values_with_ties_and_minus_infinity():
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == 1.0 and kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / 30 ** 0.5)  # tau-b: one tie in x
    assert kendall_tau([-math.inf, 1, 2], [0, 1, 2]) == 1.0
    assert kendall_tau([1, 1], [1, 2]) is None and kendall_tau([1], [1]) is None
