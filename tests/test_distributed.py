"""One search data-parallel over two gloo ranks (enas.distributed, enas.launch): it trains as one process does, the
ranks stay bitwise identical, the two gradient synchronisations agree bitwise, a signal on one rank stops every rank
after the same step and the run resumes exactly, and a killed rank leaves a last.pt the relaunch resumes from.

Workers start through enas.launch.launch (torch's elastic launcher) with entry points defined here, so that a rank
can patch itself as the single-process tests patch the pytest process. Starting two workers costs ~6 s on 2 cores,
so one launch runs most scenarios in a row, in one process group."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, assert_same_run, compose_config, metric_records
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

import enas.pipeline
from enas.checkpoint import load_checkpoint
from enas.distributed import process_group
from enas.interrupt import RunInterrupted
from enas.launch import check_supported, launch, worker
from enas.pipeline import run_search
from enas.search import SearchLoop

pytestmark = pytest.mark.timeout(300)  # a rank left waiting in a collective fails the test instead of hanging it
TINY = ("search_space=nb201", "trainer.epochs=2", "derive.num_samples=2", "deterministic=true",
        "trainer.crop_padding=0", "trainer.lr_max=0.02")  # 16 steps an epoch
SMALL_MICRO = ("data.num_train=256", "data.num_valid=64", "derive.num_samples=2", "deterministic=true",
               "trainer.log_every_steps=4")  # 8 steps an epoch; micro has dropout: every rank's RNG matters
SYNC_CASES = [("ddp", False), ("allreduce_used", False), ("ddp", True), ("allreduce_used", True)]


@dataclasses.dataclass
class Case:
    name: str
    overrides: tuple[str, ...]
    grad_sync: str = "ddp"
    without_bn: bool = False
    signal_rank1_at_call: int | None = None  # SIGTERM to rank 1 during its n-th shared step


def _sync_case(grad_sync: str, decay: bool) -> Case:
    return Case(f"{grad_sync}-decay_{str(decay).lower()}", (*TINY, f"trainer.decay_unsampled={decay}"), grad_sync,
                without_bn=True)


_built: dict = {}


def _without_batch_norm(build):
    """build_components whose supernet has no BN: batch statistics over a rank's half batch differ from the whole
    batch's (scale_out.md §2.4), which would hide everything else these tests compare. Keeps net and sampler."""
    @functools.wraps(build)
    def wrapped(cfg):
        data, space, net, sampler = build(cfg)
        for parent in list(net.modules()):
            for name, child in parent.named_children():
                if isinstance(child, nn.BatchNorm2d):
                    setattr(parent, name, nn.Identity())
        _built.update(net=net, sampler=sampler)
        return data, space, net, sampler
    return wrapped


def _signal_at(call: int, signum: int):
    """SearchLoop.shared_step that sends this process `signum` during its `call`-th step, as `kill` would."""
    original, calls = SearchLoop.shared_step, []

    def shared_step(self, *args):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return original(self, *args)
    return shared_step


def _run_cases(cases: list, root, cfg, resolved, log_files) -> dict:
    """Worker entry: each case's search in a row, in one process group (a process joins one group in its life: a
    second would meet the first one's keys in torchrun's store); each rank then saves its weights to rank<r>.pt. An
    interrupted case keeps its last.pt as interrupted.pt and runs again, resuming."""
    with process_group("cpu", None, "ddp") as world:
        for case in cases:
            case_cfg, case_resolved = _compose(root, case)
            case_world = dataclasses.replace(world, grad_sync=case.grad_sync)
            with pytest.MonkeyPatch.context() as patch:
                build = enas.pipeline.build_components
                patch.setattr(enas.pipeline, "build_components",
                              _without_batch_norm(build) if case.without_bn else build)
                if case.signal_rank1_at_call and world.rank == 1:
                    patch.setattr(SearchLoop, "shared_step", _signal_at(case.signal_rank1_at_call, signal.SIGTERM))
                with contextlib.suppress(RunInterrupted) if case.signal_rank1_at_call else contextlib.nullcontext():
                    run_search(case_cfg, case_resolved, world=case_world)
            if case.signal_rank1_at_call:
                if world.is_main:
                    shutil.copy(f"{case_cfg.paths.output_dir}/last.pt", f"{case_cfg.paths.output_dir}/interrupted.pt")
                run_search(case_cfg, case_resolved, world=case_world)
            if case.without_bn:
                state = {"net": _built["net"].state_dict(), "controller": _built["sampler"].controller.state_dict()}
                torch.save(state, f"{case_cfg.paths.output_dir}/rank{world.rank}.pt")
    return {}


def _entry(function, *args):
    """`function` with its first arguments bound, as a worker entry point (torch's launcher reads its __name__)."""
    return functools.update_wrapper(functools.partial(function, *args), function)


def _compose(root, case: Case):
    return compose_config(["experiment=smoke", "dist=ddp", "dist.nproc_per_node=2", *case.overrides],
                          root / case.name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two ranks (one launch): the tiny search in every gradient-sync case, and a small micro search uninterrupted
    ("full") and interrupted by SIGTERM to rank 1 in epoch 2, then resumed ("part"). One process: the tiny search
    without and with decay_unsampled."""
    root = tmp_path_factory.mktemp("runs")
    cases = [*(_sync_case(*c) for c in SYNC_CASES), Case("full", SMALL_MICRO),
             Case("part", SMALL_MICRO, signal_rank1_at_call=8 + 2)]
    launch(*_compose(root, cases[0]), entrypoint=_entry(_run_cases, cases, root))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(enas.pipeline, "build_components", _without_batch_norm(enas.pipeline.build_components))
        for decay in (False, True):
            run_search(*compose_config(["experiment=smoke", *TINY, f"trainer.decay_unsampled={decay}"],
                                       root / f"single-decay_{str(decay).lower()}"))
    return root


@pytest.mark.parametrize("decay_unsampled", [False, True])
def test_two_ranks_train_the_weights_and_controller_one_process_trains(runs, decay_unsampled):
    name = str(decay_unsampled).lower()
    single, two = (load_checkpoint(runs / f"{kind}-decay_{name}" / "last.pt") for kind in ("single", "ddp"))
    assert (two["epoch"], two["global_step"]) == (single["epoch"], single["global_step"]) == (2, 32)
    for key, value in single["net"].items():  # each rank's half batch: the same mean gradient, other rounding
        assert torch.isfinite(value).all() and torch.allclose(two["net"][key], value, rtol=1e-4, atol=1e-6), key
    for key, value in single["sampler"]["controller"].items():
        assert torch.allclose(two["sampler"]["controller"][key], value, rtol=1e-4, atol=1e-6), key
    # the same architectures, each rewarded on the same validation minibatch as on one process (nb201's loss
    # reward: exp(-cross-entropy) of the weights above, equal up to their rounding)
    rows = [[json.loads(r) for r in (runs / d / "sampled_archs.jsonl").read_text().splitlines()]
            for d in (f"single-decay_{name}", f"ddp-decay_{name}")]
    assert [r["arch"] for r in rows[0]] == [r["arch"] for r in rows[1]]
    assert [r["reward"] for r in rows[1]] == pytest.approx([r["reward"] for r in rows[0]], rel=1e-5)


@pytest.mark.parametrize("grad_sync, decay_unsampled", SYNC_CASES)
def test_ranks_stay_bitwise_identical(runs, grad_sync, decay_unsampled):
    run_dir = runs / _sync_case(grad_sync, decay_unsampled).name
    rank0, rank1 = load_checkpoint(run_dir / "rank0.pt"), load_checkpoint(run_dir / "rank1.pt")
    for part in ("net", "controller"):
        for key, value in rank0[part].items():
            assert torch.equal(value, rank1[part][key]), (part, key)
    assert len(metric_records(run_dir)) == 2  # rank 0 alone wrote the record


@pytest.mark.parametrize("decay_unsampled", [False, True])
def test_allreduce_of_used_gradients_equals_ddp_bitwise(runs, decay_unsampled):
    ddp = load_checkpoint(runs / _sync_case("ddp", decay_unsampled).name / "rank0.pt")
    used = load_checkpoint(runs / _sync_case("allreduce_used", decay_unsampled).name / "rank0.pt")
    for part in ("net", "controller"):
        for key, value in ddp[part].items():
            assert torch.equal(value, used[part][key]), (part, key)


def test_a_signal_on_one_rank_stops_every_rank_after_the_same_step_and_the_run_resumes_exactly(runs):
    saved = load_checkpoint(runs / "part" / "interrupted.pt")
    # SIGTERM during rank 1's step 2 of epoch 2; the ranks agree every 4 steps: both stop after step 4
    assert (saved["epoch"], saved["epoch_step"], saved["global_step"]) == (1, 4, 12)
    assert len(saved["rank_rng"]) == 2 and not torch.equal(saved["rank_rng"][0]["torch"], saved["rank_rng"][1]["torch"])
    assert_same_run(runs / "full", runs / "part")


@pytest.mark.slow
def test_stopped_and_killed_ranks_leave_a_last_pt_the_relaunch_resumes_exactly(runs, tmp_path):
    """Through the production worker: SIGTERM to rank 1 alone stops both ranks after the same step (they exit with
    128 + 15 and launch() reports the interruption); then, resumed, rank 1 is killed outright (SIGKILL) before the
    next save, which leaves that last.pt as it was; the next relaunch ends exactly as the uninterrupted run."""
    cfg, resolved = _compose(tmp_path, Case("run", SMALL_MICRO))
    with pytest.raises(RunInterrupted, match="SIGTERM in the workers"):
        launch(cfg, resolved, entrypoint=_entry(_signal_rank1_at, 8 + 2, signal.SIGTERM))
    stopped = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (stopped["epoch"], stopped["epoch_step"], stopped["global_step"]) == (1, 4, 12)
    with pytest.raises(ChildFailedError):  # rank 1 died of SIGKILL and the agent stopped rank 0
        launch(cfg, resolved, entrypoint=_entry(_signal_rank1_at, 3, signal.SIGKILL))  # epoch 2, step 7 of 8
    assert load_checkpoint(tmp_path / "run" / "last.pt")["global_step"] == 12  # untouched: written atomically, loadable
    assert launch(cfg, resolved)["mode"] == "search"  # the production worker finds last.pt and resumes
    assert_same_run(runs / "full", tmp_path / "run")


def _signal_rank1_at(call: int, signum: int, cfg, resolved, log_files) -> dict:
    if os.environ["RANK"] == "1":
        SearchLoop.shared_step = _signal_at(call, signum)
    return worker(cfg, resolved, log_files)


@pytest.mark.slow
def test_torchrun_runs_one_search_in_one_run_directory(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(ROOT / "run.py"), "experiment=smoke", "trainer.epochs=1", "derive.num_samples=2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = tmp_path.glob("outputs/*/*")  # the ranks agreed on rank 0's clock: one directory
    result = json.loads((run_dir / "result.json").read_text())
    assert result["mode"] == "search" and len(metric_records(run_dir)) == 1
    assert load_checkpoint(run_dir / "last.pt")["global_step"] == 16


@pytest.mark.parametrize("overrides, message", [
    (["mode=train", "arch=enas_micro_paper"], "mode=search with trainer.strategy enas, random, nas_rl; got mode=train"),
    (["trainer.strategy=naswot"], "got mode=search, trainer.strategy=naswot"),
    (["trainer.batch_size=33"], "batch_size=33 is the global batch and must split evenly over 2 processes"),
    (["dist.grad_sync=allgather"], "grad_sync one of ddp, allreduce_used"),
])
def test_a_data_parallel_run_that_cannot_work_fails_before_any_process_starts(overrides, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        check_supported(compose_config(["experiment=smoke", "dist=ddp", "dist.nproc_per_node=2", *overrides],
                                       tmp_path)[0], sweeping=False)
