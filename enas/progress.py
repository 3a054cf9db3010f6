"""Progress bars over epochs and steps (rich) with a live postfix; on a terminal only.

Off a terminal (CI, nohup, a cluster job's log file) nothing is drawn and the log lines carry the progress. On a
terminal the console log handlers are pointed at rich's stdout proxy while the bars are live, so log lines print
above the bars instead of tearing them.
"""
from __future__ import annotations

import logging
import sys

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn



class ProgressBars:
    """`with ProgressBars() as bars: task = bars.add("epochs", total); bars.advance(task); bars.postfix(task, ...)`.

    Every method is a no-op when disabled; advancing never reads a device value (the caller passes numbers it
    already has on the host)."""

    def __init__(self, enabled: bool | None = None, console=None):
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self.console = console
        self._progress: Progress | None = None
        self._swapped: list[tuple[logging.StreamHandler, object]] = []

    def __enter__(self) -> ProgressBars:
        if self.enabled:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[postfix]}"),
                                      console=self.console)
            self._progress.start()  # from here sys.stdout is rich's proxy: writes land above the bars
            for handler in logging.getLogger().handlers:
                if type(handler) is logging.StreamHandler and handler.stream in (sys.__stdout__, sys.__stderr__):
                    self._swapped.append((handler, handler.setStream(sys.stdout)))
        return self

    def __exit__(self, *exc) -> None:
        for handler, stream in self._swapped:
            handler.setStream(stream)
        self._swapped = []
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def add(self, description: str, total: int, completed: int = 0):
        if self._progress is None:
            return None
        return self._progress.add_task(description, total=total, completed=completed, postfix="")

    def advance(self, task, steps: int = 1) -> None:
        if self._progress is not None and task is not None:
            self._progress.advance(task, steps)

    def postfix(self, task, **values: float) -> None:
        """Show `key=value` pairs after the bar (values already on the host)."""
        if self._progress is not None and task is not None:
            text = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
            self._progress.update(task, postfix=text)

    def remove(self, task) -> None:
        if self._progress is not None and task is not None:
            self._progress.remove_task(task)


class EpochMeter:
    """A training pass's loss and accuracy summed on the device, read (one host sync) only every `log_every` steps
    for the log line and the step bar's postfix, and once at the end of the pass."""

    def __init__(self, progress: ProgressBars, name: str, epoch: int, steps: int, log_every: int, device,
                 logger: logging.Logger):
        self.logger, self.progress, self.name = logger, progress, name
        self.epoch, self.steps, self.log_every = epoch, steps, log_every
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen, self.step = 0, 0
        self.bar = progress.add(f"epoch {epoch} {name} steps", steps)

    def update(self, loss: torch.Tensor, right: torch.Tensor, images: int) -> None:
        self.loss_sum += loss
        self.correct += right
        self.seen += images
        self.step += 1
        self.progress.advance(self.bar)
        if self.step % self.log_every == 0:  # the only host sync of the pass
            mean_loss, acc = (self.loss_sum / self.step).item(), (self.correct / self.seen).item()
            self.logger.info("epoch %d step %d/%d  %s/loss=%.4f  %s/acc=%.4f", self.epoch, self.step, self.steps,
                             self.name, mean_loss, self.name, acc)
            self.progress.postfix(self.bar, loss=mean_loss, acc=acc)

    def state_dict(self) -> dict:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "seen": self.seen, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        """Continue an interrupted pass: its sums so far, and its bar at the step it reached."""
        self.loss_sum, self.correct = state["loss_sum"].clone(), state["correct"].clone()
        self.seen, self.step = state["seen"], state["step"]
        self.progress.advance(self.bar, self.step)

    def result(self) -> dict:
        self.progress.remove(self.bar)
        return {f"{self.name}/loss": self.loss_sum / max(self.step, 1), f"{self.name}/acc": self.correct / self.seen}
