"""Progress bars: drawn only when asked (a terminal), log lines routed above them, handlers restored after."""
from __future__ import annotations

import io
import logging
import sys

from rich.console import Console

import enas.pipeline
from enas.pipeline import run_search
from enas.progress import ProgressBars


def test_disabled_bars_are_silent_no_ops():
    with ProgressBars(enabled=False) as bars:
        task = bars.add("epochs", 3)
        bars.advance(task)
        bars.postfix(task, loss=1.0)
        bars.remove(task)
    assert task is None


def test_live_bars_route_console_logging_through_rich_and_restore_it():
    handler = logging.StreamHandler(sys.__stdout__)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        out = io.StringIO()
        with ProgressBars(enabled=True, console=Console(file=out, force_terminal=True, width=120)) as bars:
            assert handler.stream is not sys.__stdout__  # rich's proxy while the bars are live
            task = bars.add("epochs", 2)
            bars.advance(task)
            bars.postfix(task, reward=0.25, lr=0.05)
        assert handler.stream is sys.__stdout__
        assert "epochs" in out.getvalue() and "reward=0.25" in out.getvalue()
    finally:
        root.removeHandler(handler)


def test_a_search_with_live_bars_shows_epochs_steps_and_the_postfix(smoke, monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(enas.pipeline, "ProgressBars",
                        lambda: ProgressBars(enabled=True, console=Console(file=out, force_terminal=True, width=160)))
    run_search(*smoke("trainer.epochs=1"))
    text = out.getvalue()
    assert "epochs" in text and "1/1" in text and "reward=" in text and "valid/acc" not in text
