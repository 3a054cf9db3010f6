"""Final training: the fixed micro network, drop-path, the retrain loop, final.pt, and mode=train / mode=eval."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_same_run, sgd_losses

from enas.data import make_synthetic, with_valid_in_train
from enas.networks import load_arch, load_network, save_network
from enas.pipeline import run_eval, run_train
from enas.retrain import RetrainLoop
from enas.spaces.base import ArchError
from enas.spaces.micro import MicroSpace
from enas.spaces.micro_arch import published_arch
from enas.spaces.micro_network import MicroNetwork, drop_path, drop_path_keep


def _images(n=4, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed)).contiguous(
        memory_format=torch.channels_last)


def test_published_micro_network_has_the_official_parameter_count():
    net = MicroNetwork(published_arch())  # C=36, 15 + 2 cells: enas_reference.md §9 measured the TF graph
    assert net.num_params() == 3_894_372
    assert net.num_params(include_aux=True) == 4_389_220


@pytest.mark.parametrize("seed", range(4))
def test_random_architectures_build_and_reductions_halve_the_map(seed):
    arch = MicroSpace(num_nodes=5).sample_uniform(torch.Generator().manual_seed(seed))
    net = MicroNetwork(arch, num_layers=3, channels=8, aux_head=True).train()
    sizes = []
    hooks = [cell.register_forward_hook(lambda m, i, out: sizes.append(tuple(out.shape[1:]))) for cell in net.cells]
    logits, aux = net(_images())
    for h in hooks:
        h.remove()
    assert logits.shape == aux.shape == (4, 10)
    # 3 normal + 2 reduction cells (positions 1 and 3); each cell is (#loose ends) x C wide
    expected = []
    c, s = 8, 32
    for i, cell in enumerate(net.cells):
        if i in net.reductions:
            c, s = 2 * c, s // 2
        expected.append((len(cell.cell.loose_ends()) * c, s, s))
    assert sizes == expected
    net.eval()
    logits, aux = net(_images())
    assert aux is None and torch.isfinite(logits).all()


def test_drop_path_keep_schedule_follows_the_reference():
    # the last of 17 cells reaches the final keep prob at the end of training; nothing is dropped at the start
    assert drop_path_keep(16, 17, 0.6, 1.0) == pytest.approx(0.6)
    assert drop_path_keep(0, 17, 0.6, 1.0) == pytest.approx(1 - 1 / 17 * 0.4)
    assert drop_path_keep(16, 17, 0.6, 0.0) == 1.0
    assert drop_path_keep(16, 17, 0.6, 0.5) == pytest.approx(0.8)
    assert drop_path_keep(16, 17, 0.6, 3.0) == pytest.approx(0.6)  # clamped past the end


def test_drop_path_keeps_the_expected_value_and_drops_whole_samples():
    torch.manual_seed(0)
    x = torch.ones(20000, 2, 3, 3)
    out = drop_path(x, 0.6)
    per_sample = out.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 1 / 0.6).all(1)).all()  # all-or-nothing per sample
    assert out.mean().item() == pytest.approx(1.0, abs=0.02)
    assert (per_sample[:, 0] == 0).float().mean().item() == pytest.approx(0.4, abs=0.02)
    assert drop_path(x, 1.0) is x


def test_drop_path_acts_only_in_training_and_grows_with_progress():
    net = MicroNetwork(published_arch(), num_layers=3, channels=8, aux_head=False, dropout=0.0, drop_path_keep=0.2)
    x = _images(8)
    net.eval()
    reference, _ = net(x)
    assert torch.equal(net(x)[0], reference)  # eval: deterministic, no drop-path
    net.train()
    net.drop_path_progress = 0.0
    torch.manual_seed(1)
    early, _ = net(x)
    torch.manual_seed(1)
    assert torch.equal(net(x)[0], early)  # progress 0: keep prob 1 everywhere, only BN batch stats differ from eval
    net.drop_path_progress = 1.0
    torch.manual_seed(1)
    late, _ = net(x)
    assert not torch.allclose(late, early)


def test_a_few_steps_on_learnable_data_lower_the_loss():
    torch.manual_seed(0)
    data = make_synthetic(64, 8, image_size=16)
    net = MicroNetwork(published_arch(), num_layers=3, channels=8, image_size=16, aux_head=False, dropout=0.0)
    x = ((data.train.x.float() / 255 - 0.5) / 0.25).contiguous(memory_format=torch.channels_last)
    losses = sgd_losses(net, x, data.train.y, 15)
    assert losses[-1] < 0.5 * losses[0]


def test_saved_network_reloads_into_a_module_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    kwargs = dict(num_layers=3, channels=8, aux_head=True, drop_path_keep=0.6)
    net = MicroNetwork(published_arch(), **kwargs).train()
    net(_images(8))  # move the BN running statistics off their initial values
    save_network(tmp_path / "final.pt", net, published_arch(), kwargs, {"mean": [0.5] * 3, "std": [0.2] * 3})
    loaded = load_network(tmp_path / "final.pt")
    assert isinstance(loaded, torch.nn.Module) and loaded.arch == published_arch()
    assert loaded.data_stats == {"mean": [0.5] * 3, "std": [0.2] * 3}
    x = _images(3, seed=5)
    assert torch.equal(net.eval()(x)[0], loaded.eval()(x)[0])


def test_load_network_and_load_arch_reject_bad_input_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="final.pt"):
        load_network(tmp_path / "missing.pt")
    torch.save({"net": {}}, tmp_path / "last.pt")
    with pytest.raises(ArchError, match="not a network file"):
        load_network(tmp_path / "last.pt")
    with pytest.raises(ArchError, match="enas_micro_paper"):
        load_arch("no_such_arch")
    (tmp_path / "arch.json").write_text(json.dumps({"space": "lstm"}))
    with pytest.raises(ArchError, match="'lstm'"):
        load_arch(str(tmp_path / "arch.json"))
    assert load_arch("enas_micro_paper") == published_arch()


def test_with_valid_in_train_adds_the_validation_images_and_recomputes_statistics():
    data = make_synthetic(40, 10, 5, image_size=8)
    merged = with_valid_in_train(data)
    assert len(merged.train) == 50 and torch.equal(merged.train.x[40:], data.valid.x)
    pixels = merged.train.x.float() / 255
    assert merged.mean[0] == pytest.approx(pixels[:, 0].mean().item(), abs=1e-5)
    assert merged.test is data.test


def test_train_mode_writes_final_network_and_result_and_eval_reproduces_it(smoke, tmp_path):
    cfg, resolved = smoke("mode=train", "arch=enas_micro_paper", name="train")
    result = run_train(cfg, resolved)
    run_dir = tmp_path / "train"
    for name in ("final.pt", "last.pt", "metrics.jsonl", "result.json"):
        assert (run_dir / name).exists(), name
    assert result["params"] == sum(p.numel() for p in load_network(run_dir / "final.pt").parameters())
    assert result["evaluated_on"] == "test split, 128 images" and 0 <= result["test_acc"] <= 1
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[-1]["test/acc"] == result["test_acc"]

    eval_cfg, eval_resolved = smoke("mode=eval", f"checkpoint={run_dir / 'final.pt'}", name="eval")
    assert run_eval(eval_cfg, eval_resolved)["test_acc"] == pytest.approx(result["test_acc"])


def test_resumed_training_equals_uninterrupted_training(smoke, tmp_path, monkeypatch):
    run_train(*smoke("mode=train", "arch=enas_micro_paper", name="full"))
    # the same run killed during its second epoch (the drop-path ramp spans all epochs, so the config must match)
    train_epoch, calls = RetrainLoop.train_epoch, []

    def crash_in_second_epoch(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train_epoch(self)

    monkeypatch.setattr(RetrainLoop, "train_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_train(*smoke("mode=train", "arch=enas_micro_paper", name="part"))
    monkeypatch.setattr(RetrainLoop, "train_epoch", train_epoch)
    run_train(*smoke("mode=train", "arch=enas_micro_paper", name="part"))
    assert assert_same_run(tmp_path / "full", tmp_path / "part")["global_step"] == 2 * 20


def test_train_mode_without_a_test_split_needs_train_on_valid_off(smoke):
    cfg, resolved = smoke("mode=train", "arch=enas_micro_paper", "data.num_test=0", name="no_test")
    with pytest.raises(ValueError, match="train_on_valid=false"):
        run_train(cfg, resolved)
    cfg, resolved = smoke("mode=train", "arch=enas_micro_paper", "data.num_test=0", "retrain.train_on_valid=false",
                          "retrain.epochs=1", name="valid")
    assert run_train(cfg, resolved)["evaluated_on"] == "valid split, 128 images"
