"""Few-shot supernet: routing by the first op decision, the split, and a search that splits and resumes exactly."""
from __future__ import annotations

import json
import signal

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_same_run, signal_at

from enas.checkpoint import load_checkpoint
from enas.few_shot import FewShotSupernet, split_decision
from enas.interrupt import RunInterrupted
from enas.pipeline import run_search
from enas.rank_check import run_rank_check
from enas.search import SearchLoop
from enas.spaces.macro import MacroSpace
from enas.spaces.micro import MicroSpace
from enas.spaces.nb201 import Nb201Space
from enas.spaces.nb201_arch import Nb201Arch
from enas.validation import validate

NB201 = ("search_space=nb201", "trainer.few_shot_epoch=1")


def _space() -> Nb201Space:
    return Nb201Space(channels=4, cells_per_stage=1)


def _arch(first_op: str) -> Nb201Arch:
    return Nb201Arch((first_op, "nor_conv_3x3", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"))


def test_the_split_decision_is_the_first_op_choice_of_each_space():
    assert split_decision(_space()) == (0, 5)  # nb201: edge 1<-0
    micro = MicroSpace(num_nodes=3, num_layers=2, channels=4)
    column, choices = split_decision(micro)
    choice_steps = [step for step in micro.steps() for _ in range(step.num_columns)]
    assert choices == 5 and choice_steps[column].kind == "op"
    assert [step.kind for step in choice_steps[:column]] == ["input"] * column  # node 0's input(s) come first
    assert split_decision(MacroSpace(num_layers=3, channels=4)) == (0, 6)  # layer 0's op


def test_before_the_split_every_arch_runs_on_the_one_shot_weights():
    torch.manual_seed(0)
    plain = _space().supernet()
    torch.manual_seed(0)
    few = FewShotSupernet(_space())
    x = torch.randn(4, 3, 8, 8)
    for op in ("none", "nor_conv_3x3", "avg_pool_3x3"):
        assert few.part_of(_arch(op)) == 0
        assert torch.equal(few(x, _arch(op))[0], plain(x, _arch(op))[0])  # same seed, same initial weights


def test_the_split_copies_weights_and_momentum_then_each_part_trains_alone():
    torch.manual_seed(0)
    net = FewShotSupernet(_space())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(10, (8,))

    def step(arch):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x, arch)[0], y).backward()
        optimizer.step()

    step(_arch("nor_conv_3x3"))  # momentum on part 0 only
    net.split(optimizer)
    assert net.is_split and [net.part_of(_arch(op)) for op in ("none", "avg_pool_3x3")] == [0, 4]
    one_shot = list(net.parts[0].parameters())
    for part in net.parts[1:]:
        for p, q in zip(one_shot, part.parameters()):
            assert torch.equal(p, q) and p is not q
            if p in optimizer.state:
                assert torch.equal(optimizer.state[p]["momentum_buffer"], optimizer.state[q]["momentum_buffer"])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    step(_arch("nor_conv_1x1"))  # routed to part 2 (the index of nor_conv_1x1)
    changed = {k.split(".")[1] for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"2"}
    with pytest.raises(RuntimeError, match="already split"):
        net.split(optimizer)


def test_the_split_survives_a_state_dict_round_trip():
    torch.manual_seed(0)
    net = FewShotSupernet(_space())
    net.split()
    with torch.no_grad():
        next(net.parts[3].parameters()).add_(1.0)
    fresh = FewShotSupernet(_space())
    assert not fresh.is_split
    fresh.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 8, 8)
    assert fresh.is_split and torch.equal(fresh(x, _arch("nor_conv_3x3"))[0], net(x, _arch("nor_conv_3x3"))[0])


def test_few_shot_epoch_must_come_before_the_end(smoke):
    with pytest.raises(ValueError, match="trainer.few_shot_epoch=1; allowed 0 .off. or an epoch before"):
        validate(smoke(*NB201, "trainer.epochs=1")[0])


def test_a_few_shot_search_splits_and_resumes_exactly(smoke, tmp_path, monkeypatch):
    run = (*NB201, "trainer.strategy=random", "trainer.epochs=2", "deterministic=true")
    run_search(*smoke(*run, name="full"))
    state = load_checkpoint(tmp_path / "full" / "last.pt")
    assert bool(state["net"]["_extra_state"])
    parts = {k.split(".")[1] for k in state["net"] if k.startswith("parts.")}
    assert parts == {str(k) for k in range(5)}
    conv = [k for k in state["net"] if k.endswith("edges.0.nor_conv_3x3.1.weight")][0].split(".", 2)[2]
    assert len({state["net"][f"parts.{k}.{conv}"].sum().item() for k in range(5)}) > 1  # the parts trained apart
    signal_at(monkeypatch, SearchLoop, "shared_step", signal.SIGTERM, 20)  # epoch 2 (16 steps an epoch), after the split
    with pytest.raises(RunInterrupted):
        run_search(*smoke(*run, name="part"))
    monkeypatch.undo()
    run_search(*smoke(*run, name="part"))
    assert_same_run(tmp_path / "full", tmp_path / "part")
    cfg, resolved = smoke(*run, "rank_check.num_archs=2", "rank_check.epochs=1", f"load_from={tmp_path / 'full'}",
                          name="rank")
    result = run_rank_check(cfg, resolved)  # the few-shot supernet loads from its checkpoint and scores
    scored = json.loads((tmp_path / "rank" / "rank_check.json").read_text())["archs"]
    assert len(scored) == 2 and all(0 <= a["shared_valid_acc"] <= 1 and a["shared_valid_loss"] > 0 for a in scored)
    assert {"kendall_tau_acc", "kendall_tau_loss"} <= result.keys()
    assert result["kendall_tau"] == result[f"kendall_tau_{result['score']}"]
