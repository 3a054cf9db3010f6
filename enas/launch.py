"""How the ranks of one data-parallel search start, on existing engines only (shared/reference/scale_out.md §2.6):

1. `torchrun --standalone --nproc_per_node=G run.py ...`: torchrun starts G copies of run.py, each a rank;
2. `python run.py dist=ddp dist.nproc_per_node=G ...`: this Hydra job starts G workers with torch's elastic
   launcher (torchrun's engine, `elastic_launch`), in this job's run directory; works in any sweep job except under
   the joblib launcher (its worker processes cannot start processes);
3. `hydra/launcher=slurm_ddp` (tasks_per_node=G, nodes=N): SLURM starts the tasks, submitit names their ranks.
Every rank then runs `pipeline.run_search` with its `enas.distributed.World` (trainer.strategy=nas_rl: the ranks
share out the children, enas.nas_rl_ranks). A stop signal (SIGINT, SIGTERM, or
SIGUSR2 before a SLURM time limit) makes every rank stop after the same step with last.pt saved; `hand_on` then
passes SIGUSR2 to submitit, which requeues the job, and the requeued job resumes from last.pt.
"""
from __future__ import annotations

import datetime
import logging
import multiprocessing
import os
import signal
import sys
import time
import uuid

from enas.config import Config
from enas.data import DataError
from enas.distributed import launched_world_size, process_group
from enas.interrupt import RunInterrupted
from enas.spaces.base import ArchError

log = logging.getLogger(__name__)
DATA_PARALLEL_STRATEGIES = ("enas", "random")  # the strategies with a shared-weights training loop
RANKED_STRATEGIES = (*DATA_PARALLEL_STRATEGIES, "nas_rl")  # nas_rl: the ranks share out the children
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR2"  # the elastic agent passes these on to the workers
BAD_INPUT = (DataError, ArchError, ValueError, FileNotFoundError)  # what run.py reports in one line
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format


def adopt_slurm_tasks() -> int:
    """The number of ranks this process was started among: torchrun's (WORLD_SIZE), or a SLURM job's tasks through
    submitit, whose env:// variables are exported first (hydra/launcher=slurm_ddp); 1: started alone."""
    if "WORLD_SIZE" not in os.environ and os.environ.get("SUBMITIT_EXECUTOR"):
        import submitit  # only inside a submitit job

        if submitit.JobEnvironment().num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return launched_world_size()


def check_supported(cfg: Config, sweeping: bool) -> None:
    """One search over several processes exists for the search loop and nas_rl only; say so before anything starts."""
    ranks = max(cfg.dist.nproc_per_node, adopt_slurm_tasks())
    if ranks == 1:
        return
    if cfg.mode != "search" or cfg.trainer.strategy not in RANKED_STRATEGIES:
        raise ValueError(f"{ranks} processes (dist.nproc_per_node or torchrun) run one data-parallel search: mode="
                         f"search with trainer.strategy {', '.join(RANKED_STRATEGIES)}; got mode="
                         f"{cfg.mode}, trainer.strategy={cfg.trainer.strategy}. Run the others in one process "
                         "(sweeps spread them over a cluster: hydra/launcher=slurm)")
    if cfg.dist.nproc_per_node > 1 and multiprocessing.get_start_method(allow_none=True) == "loky":
        raise ValueError(f"dist.nproc_per_node={cfg.dist.nproc_per_node} inside a joblib job: its worker processes "
                         "cannot start processes; use hydra/launcher=local or slurm for sweeps of "
                         "data-parallel searches, or dist=single under joblib")
    if cfg.trainer.strategy != "nas_rl" and cfg.trainer.batch_size % ranks:  # nas_rl: whole children per rank
        raise ValueError(f"trainer.batch_size={cfg.trainer.batch_size} is the global batch and must split evenly "
                         f"over {ranks} processes; use a multiple of {ranks}")
    if sweeping and launched_world_size() > 1 and "TORCHELASTIC_RUN_ID" in os.environ:
        raise ValueError("torchrun runs one search; for a sweep of data-parallel searches use python run.py -m "
                         "dist=ddp dist.nproc_per_node=G ... (each job starts its own workers)")


def search(cfg: Config, resolved: dict) -> dict:
    """mode=search: as one rank of a started group, by starting dist.nproc_per_node workers, or alone."""
    from enas.pipeline import run_search

    if adopt_slurm_tasks() > 1:
        return run_rank(cfg, resolved)
    if cfg.dist.nproc_per_node > 1:
        return launch(cfg, resolved)
    return run_search(cfg, resolved)


def run_rank(cfg: Config, resolved: dict) -> dict:
    """This process's part of a search whose ranks are named by torch's env:// variables; {} on ranks other than 0."""
    from enas.pipeline import run_search

    with process_group(cfg.device, cfg.dist.backend, cfg.dist.grad_sync) as world:
        if not world.is_main:
            logging.getLogger().setLevel(logging.ERROR)  # rank 0 logs for all
        cfg.device = str(world.device)
        return run_search(cfg, resolved, world=world)


# --- 1. torchrun: one run directory for all ranks ------------------------------------------------------------------
def share_run_dir(argv: list[str]) -> list[str]:
    """Under torchrun every rank composes its own config, and `${now:}` may differ by a second between ranks (2 of 7
    launches split into two run directories, scale_out.md §2.6): every rank takes rank 0's clock through torchrun's
    store (the c10d store its agent serves) and runs in outputs/<date>/<time> (conf/config.yaml's layout)."""
    given = any(a.split("=", 1)[0].lstrip("+") == "hydra.run.dir" for a in argv[1:])
    if launched_world_size() == 1 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or given \
            or any(a in ("-m", "--multirun") for a in argv):
        return argv
    from torch.distributed import TCPStore

    store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                     timeout=datetime.timedelta(minutes=5))
    key = f"enas/run_dir/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if int(os.environ["RANK"]) == 0:
        store.set(key, time.strftime("outputs/%Y-%m-%d/%H-%M-%S"))
    return [*argv, f"hydra.run.dir={store.get(key).decode()}"]


# --- 2. workers started from this Hydra job -----------------------------------------------------------------------
def launch(cfg: Config, resolved: dict, entrypoint=None) -> dict:
    """Start dist.nproc_per_node workers on this node with torch's elastic launcher, each running `entrypoint`
    (default `worker`) on the same config; rank 0's result, or the workers' interruption / bad input raised here."""
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as torchrun sets it: W processes share the cores
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=cfg.dist.nproc_per_node,
                          run_id=f"enas-{uuid.uuid4().hex[:12]}", rdzv_backend="c10d", rdzv_endpoint="localhost:0",
                          max_restarts=0, signals_to_handle=FORWARDED_SIGNALS)
    log_files = [h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    handlers = {s: signal.getsignal(s) for s in (getattr(signal, name) for name in FORWARDED_SIGNALS.split(","))}
    log.info("starting %d workers (torch elastic, %s) for one data-parallel search", config.nproc_per_node,
             cfg.dist.backend or "nccl on CUDA, gloo on CPU")
    try:
        results = elastic_launch(config, entrypoint or worker)(cfg, resolved, log_files)
    except SignalException as e:  # the agent sent the signal on to the workers, which saved and stopped
        raise RunInterrupted(e.sigval, "while the workers ran; last.pt holds the run up to where they stopped") \
            from None
    except ChildFailedError as e:  # a signal reached the workers only: they saved, then exited with 128 + it
        signums = {f.exitcode - 128 if f.exitcode > 128 else None for f in e.failures.values()}  # (the first exit)
        if len(signums) != 1 or None in signums:
            raise
        raise RunInterrupted(signums.pop(), "in the workers; last.pt holds the run up to where they stopped") \
            from None
    finally:  # the agent's handlers raise SignalException; give the job its own back (e.g. submitit's)
        for s, handler in handlers.items():
            signal.signal(s, handler)
    result = results[0]
    if "error" in result:
        raise result["error"]
    return result


def worker(cfg: Config, resolved: dict, log_files: list[str]) -> dict:
    """One worker of `launch`: torch's env:// variables are set. Returns rank 0's result or the bad input that
    stopped it; a stop signal ends it with 128 + the signal after last.pt is saved (a return value would wait for
    the agent to read it, and an agent shutting down reads none)."""
    if os.getpgid(0) != os.getpid():  # as torchrun's workers: a terminal's Ctrl-C reaches them once, via the agent
        os.setsid()
    _log_to(log_files, int(os.environ["RANK"]))
    try:
        return run_rank(cfg, resolved)
    except RunInterrupted as e:
        sys.exit(e.exit_code)
    except BAD_INPUT as e:  # every rank meets the same bad input before the first collective
        return {"error": e}


def _log_to(files: list[str], rank: int) -> None:
    """A worker's logging as the Hydra job's: rank 0 to the console and the job's log file, the others errors only."""
    root = logging.getLogger()
    handlers = [logging.StreamHandler(sys.stdout if rank == 0 else sys.stderr),
                *(logging.FileHandler(f) for f in files if rank == 0)]
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT if rank == 0 else f"[rank {rank}]{LOG_FORMAT}"))
        root.addHandler(handler)
    root.setLevel(logging.INFO if rank == 0 else logging.ERROR)


# --- after a stop signal ------------------------------------------------------------------------------------------
def hand_on(signum: int) -> None:
    """After the run saved itself on SIGUSR2, give the signal to the handler that was there before: submitit's in a
    SLURM (or submitit_local) job, which requeues the job (and exits); the requeued job resumes from last.pt."""
    handler = signal.getsignal(signum)
    if signum == signal.SIGUSR2 and callable(handler):
        log.info("handing %s on to %s", signal.Signals(signum).name, getattr(handler, "__qualname__", handler))
        handler(signum, None)
