"""Stop a run cleanly on SIGINT (Ctrl-C), SIGTERM (`kill`, a cluster's preemption or time limit) or SIGUSR2 (the
advance warning submitit asks SLURM for before a time limit; after the save, run.py hands it on to submitit, which
requeues the job, and the job resumes from `last.pt`).

Inside `with StopSignals() as stop:` each of them only sets `stop.signum`; the training loop finishes the step it
is in, writes `last.pt` (with its position inside the epoch) and raises `RunInterrupted`. A second signal stops at
once (KeyboardInterrupt) and leaves the last complete checkpoint: checkpoints are written atomically, so no
moment of a kill, SIGKILL included, leaves an unloadable `last.pt`.
"""
from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class RunInterrupted(Exception):
    """Raised by a loop after it saved its state on a stop signal; the exit status is 128 + the signal number."""

    def __init__(self, signum: int, where: str):
        self.signum, self.where = signum, where
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Turns SIGINT/SIGTERM/SIGUSR2 into a request the loop polls between steps (a Python flag: no device sync).
    Outside the main thread (where handlers cannot be installed) it does nothing and signals keep their default
    action."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            if signum == signal.SIGUSR2:  # a repeated advance warning (a cluster may signal every process of a job)
                return
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping now; last.pt holds the last "
                                    "complete checkpoint")
        self.signum = signum
        log.warning("%s received: finishing this step, then writing last.pt (send it again to stop at once)",
                    signal.Signals(signum).name)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
