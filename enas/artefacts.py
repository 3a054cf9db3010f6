"""What every run leaves behind and says at its end: result.json, the drawings and curves, W&B artefacts, and a
list of every artefact's path in the log."""
from __future__ import annotations

import logging
from pathlib import Path

from enas.drawing import draw_arch, plot_curves
from enas.files import write_json_atomic
from enas.tracking import Tracker

log = logging.getLogger(__name__)
RESULT_NAME, NETWORK_NAME = "result.json", "final.pt"


def pictures(run_dir: Path, arch, stem: str) -> dict[str, str]:
    """The architecture's drawings and the run's curves (never fatal: drawing failures only log a warning)."""
    pictures = {f"drawing_{p.stem.removeprefix(stem + '_')}": str(p) for p in draw_arch(arch, run_dir, stem)
                if p.suffix == ".png"}
    curves = plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
    return {**pictures, **({"curves": str(curves)} if curves else {})}


def publish(tracker: Tracker, run_dir: Path, artefacts: dict[str, str], arch_files: tuple[str, ...]) -> None:
    """The run's last words: artefacts to W&B (architecture, checkpoint, network, pictures) and their paths logged."""
    tracker.log_files("architecture", "architecture", [artefacts[k] for k in arch_files if k in artefacts])
    tracker.log_files("checkpoint", "checkpoint", [artefacts["checkpoint"]] if "checkpoint" in artefacts else [])
    if "network" in artefacts:
        tracker.log_files("network", "model", [artefacts["network"]])
    tracker.log_images({k: v for k, v in artefacts.items() if k.startswith("drawing_") or k == "curves"})
    log_artefacts(run_dir, artefacts)


def log_artefacts(run_dir: Path, artefacts: dict[str, str]) -> None:
    width = max(map(len, artefacts), default=0)
    log.info("artefacts in %s:\n%s", run_dir, "\n".join(f"  {k:<{width}}  {v}" for k, v in artefacts.items()))


def write_result(run_dir: Path, result: dict) -> dict:
    """result.json, listing only the artefacts that exist."""
    if "artefacts" in result:
        result = {**result, "artefacts": {k: v for k, v in result["artefacts"].items() if Path(v).exists()}}
    write_json_atomic(Path(run_dir) / RESULT_NAME, result)
    return result
