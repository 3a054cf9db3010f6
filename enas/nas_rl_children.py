"""NAS-RL children: every sampled architecture trained from scratch (Zoph & Le, ICLR 2017, §3.2 and §4.1), one at a
time or several at once in a process pool, or looked up in a NAS-Bench-201 table; and `children.jsonl`, the ledger
that lets a killed search skip the children that finished.

A child is the retrain recipe at the child network's width and depth for nas_rl.child_epochs epochs (one cosine
cycle, aux head and drop-path off), trained on the training split and evaluated on the validation split after every
epoch, in its own directory `children/<index>/` with its own `last.pt`: a killed child resumes exactly where it
stopped. Its seed depends only on its index, so who trains it (this process, a pool worker, another rank:
enas.nas_rl_ranks) changes nothing.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from enas.benchmark import BenchmarkError
from enas.build import build_dataset, configure_backends, resolve_device
from enas.checkpoint import CHECKPOINT_NAME, load_checkpoint
from enas.config import RetrainConfig
from enas.data import Dataset
from enas.files import write_json_atomic, write_text_atomic
from enas.interrupt import SIGNALS as STOP_SIGNALS, RunInterrupted, StopSignals
from enas.networks import arch_from_json, build_network
from enas.retrain import RetrainLoop, short_recipe
from enas.tracking import Tracker

log = logging.getLogger(__name__)
CHILDREN_NAME, CHILDREN_DIR, CHILD_ARCH_NAME = "children.jsonl", "children", "arch.json"
SEEDS_PER_CHILD = 3  # a RetrainLoop draws from seed (init), seed + 1 (augmentation) and seed + 2 (batch order)
SEEDS_PER_RUN = 1_000_000 * SEEDS_PER_CHILD  # children of runs with different seeds never share a stream
BENCHMARK_KEY = "cifar10_valid"  # the benchmark's validation accuracy (percent): the reward of reward=benchmark


def child_seed(seed: int, index: int) -> int:
    return seed * SEEDS_PER_RUN + SEEDS_PER_CHILD * index


@dataclass(frozen=True)
class ChildJob:
    """One child to train: plain values only, so that it travels to a pool worker or another rank as it is."""

    index: int
    update: int
    arch: dict  # the architecture's JSON
    seed: int
    run_dir: str


@dataclass(frozen=True)
class ChildRecipe:
    """What every child of a search shares: the fixed network's constructor arguments and the training recipe."""

    network: dict
    retrain: RetrainConfig
    resume: bool  # continue a child from the last.pt in its directory


@dataclass(frozen=True)
class ChildResult:
    index: int
    valid_accs: list[float]  # validation accuracy after each epoch (one entry for a benchmark lookup)
    time_s: float  # training (or lookup) time, summed over resumed sessions
    rank: int = 0  # the torchrun rank that trained it (nas_rl_ranks.ShardedChildren); 0 in one process


def child_recipe(retrain: RetrainConfig, network: dict, epochs: int, resume: bool) -> ChildRecipe:
    """The retrain recipe for `epochs` epochs in one cosine cycle, validated every epoch, nothing held out."""
    recipe = dataclasses.replace(short_recipe(retrain, epochs), eval_every_epochs=1)
    return ChildRecipe(network=network, retrain=recipe, resume=resume)


class ChildLoop(RetrainLoop):
    """RetrainLoop that keeps every epoch's validation accuracy and its own training time in last.pt, so that a child
    resumed after a kill (or after it finished) still knows its last epochs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.valid_accs: list = []  # device tensors this session, floats from a checkpoint
        self._time_before, self._started = 0.0, time.perf_counter()

    def evaluate(self) -> torch.Tensor:
        accuracy = super().evaluate()
        self.valid_accs.append(accuracy)
        return accuracy

    def elapsed_s(self) -> float:
        return self._time_before + time.perf_counter() - self._started

    def state_dict(self) -> dict:  # one host sync per saved epoch
        return {**super().state_dict(), "valid_accs": [float(a) for a in self.valid_accs], "time_s": self.elapsed_s()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.valid_accs, self._time_before = list(state["valid_accs"]), float(state["time_s"])


def train_child(job: ChildJob, recipe: ChildRecipe, data: Dataset) -> ChildResult:
    """Train one child from scratch in `job.run_dir` (resuming its last.pt when recipe.resume)."""
    run_dir, arch = Path(job.run_dir), arch_from_json(job.arch)
    _claim_directory(run_dir, job, recipe.resume)
    device = data.train.x.device
    with torch.random.fork_rng([device] if device.type == "cuda" else []):  # the search's own RNG stays untouched
        torch.manual_seed(job.seed)
        net = build_network(arch, **recipe.network).to(device)
        checkpoint = run_dir / CHECKPOINT_NAME
        state = load_checkpoint(checkpoint, device) if recipe.resume and checkpoint.exists() else None
        tracker = Tracker(run_dir, resume_epoch=state["epoch"] if state else None)
        try:
            loop = ChildLoop(net, data, data.valid, "valid", recipe.retrain, run_dir, tracker, seed=job.seed)
            if state is not None:
                loop.load_state_dict(state)
            loop.run()
        finally:
            tracker.finish()
    return ChildResult(job.index, [float(a) for a in loop.valid_accs], loop.elapsed_s())


def _claim_directory(run_dir: Path, job: ChildJob, resume: bool) -> None:
    """Write the child's arch.json; a resumed directory must hold the same architecture (its last.pt is reused)."""
    path = run_dir / CHILD_ARCH_NAME
    if resume and path.exists() and json.loads(path.read_text()) != json.loads(json.dumps(job.arch)):
        raise ValueError(f"{run_dir} holds child {job.index} of another architecture than the one the resumed "
                         "controller sampled; the run's config or code changed since. Start a fresh run directory")
    write_json_atomic(path, job.arch)


# --- judges: (jobs, on_done) -> results in job order --------------------------------------------------------------
class ChildTrainer:
    """Trains children in this process (workers=1) or in a pool of `workers` spawned processes, each with its own copy
    of the data (built from `data_cfg`) and cores // workers torch threads.

    `__call__(jobs, on_done)` is the hook for training across ranks (torchrun): nas_rl_ranks.ShardedChildren wraps
    it, each rank training jobs[rank::world_size] with its own ChildTrainer."""

    def __init__(self, recipe: ChildRecipe, data: Dataset, workers: int = 1, data_cfg=None, device: str = "cpu",
                 deterministic: bool = False):
        self.recipe, self.data, self.workers = recipe, data, workers
        self._pool_args = (data_cfg, device, deterministic, max(1, (os.cpu_count() or 1) // workers))
        self._pool: ProcessPoolExecutor | None = None

    def __call__(self, jobs: list[ChildJob], on_done: Callable[[ChildJob, ChildResult], None]) -> list[ChildResult]:
        if self.workers == 1:
            results = []
            for job in jobs:
                results.append(train_child(job, self.recipe, self.data))
                on_done(job, results[-1])
            return results
        return self._train_in_pool(jobs, on_done)

    def _train_in_pool(self, jobs: list[ChildJob], on_done) -> list[ChildResult]:
        if self._pool is None:  # started once, reused by every update (a spawned worker imports torch: seconds)
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=self._pool_args)
        results: dict[int, ChildResult] = {}
        stopped: int | None = None
        with StopSignals() as stop:  # a signal: workers finish or save their child; nothing new starts
            futures = {self._pool.submit(_train_in_worker, job, self.recipe): job for job in jobs}
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                outcome = future.result()
                if isinstance(outcome, int):  # the worker's child was stopped by this signal number
                    stopped = outcome
                else:
                    results[outcome.index] = outcome
                    on_done(futures[future], outcome)
                if stop.requested or stopped is not None:
                    for pending in futures:
                        pending.cancel()
        signum = stop.signum or stopped
        if signum is not None:
            raise RunInterrupted(signum, f"while training children {jobs[0].index}-{jobs[-1].index}; the finished "
                                 f"ones are in {CHILDREN_NAME}, a stopped one resumes from its last.pt")
        return [results[job.index] for job in jobs]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


_WORKER: dict = {}  # a pool worker's dataset, built once by _start_worker


def _start_worker(data_cfg, device: str, deterministic: bool, threads: int) -> None:
    # an idle worker ignores the stop signals (dying would break the pool); a training child handles them itself
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    torch.set_num_threads(threads)
    resolved = resolve_device(device)
    configure_backends(resolved, deterministic)
    _WORKER["data"] = build_dataset(data_cfg, resolved)


def _train_in_worker(job: ChildJob, recipe: ChildRecipe) -> ChildResult | int:
    try:
        return train_child(job, recipe, _WORKER["data"])
    except RunInterrupted as e:  # its child saved; the parent decides what happens next
        return e.signum


class BenchmarkRewards:
    """reward=benchmark: a child's validation accuracy is the NAS-Bench-201 table's cifar10_valid / 100 (the 200-epoch
    seed mean, trained on 25k images), through `describe` (build.benchmark_lookup); nothing is trained. BenchmarkError
    for an architecture the table lacks."""

    def __init__(self, describe: Callable[[object], dict]):
        self.describe = describe

    def __call__(self, jobs: list[ChildJob], on_done: Callable[[ChildJob, ChildResult], None]) -> list[ChildResult]:
        results = []
        for job in jobs:
            start = time.perf_counter()
            found = self.describe(arch_from_json(job.arch)).get("benchmark", {})
            if BENCHMARK_KEY not in found:
                raise BenchmarkError(f"the benchmark holds {', '.join(found) or 'no accuracies'} but nas_rl.reward="
                                     f"benchmark needs {BENCHMARK_KEY} (the validation accuracy)")
            results.append(ChildResult(job.index, [found[BENCHMARK_KEY] / 100], time.perf_counter() - start))
            on_done(job, results[-1])
        return results

    def close(self) -> None:
        pass


# --- children.jsonl -------------------------------------------------------------------------------------------------
class ChildLedger:
    """children.jsonl: one JSON line per finished child, appended and fsynced as it finishes. Opening it for a resumed
    run keeps the children of the completed updates and of the update under way (dropping a torn last line).
    writes=False (a torchrun rank other than 0): no file is read or written; `rows` is set from rank 0's."""

    def __init__(self, path: Path, resume: bool, update_under_way: int, writes: bool = True):
        self.path, self.writes, self.rows = path, writes, []
        if writes:
            rows = self._read() if resume else []
            self.rows = [r for r in rows if r["update"] <= update_under_way]
            write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def _read(self) -> list[dict]:
        if not self.path.exists():
            return []
        text, rows = self.path.read_text(), []
        lines = text.splitlines()
        for number, line in enumerate(lines, start=1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines) and not text.endswith("\n"):  # the half line of a kill: that child reruns
                    log.warning("%s: dropped a torn last line", self.path)
                    break
                raise ValueError(f"{self.path} line {number} is not JSON ({line[:80]!r}); the ledger of finished "
                                 "children is damaged: repair or delete that line, or start a fresh run") from None
        return rows

    def finished(self, update: int) -> dict[int, dict]:
        """{child index: row} of the children of `update` that finished."""
        return {r["child"]: r for r in self.rows if r["update"] == update}

    def append(self, row: dict) -> None:
        if self.writes:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
        self.rows.append(row)
