"""One call for metrics: always appended to the run's `metrics.jsonl`, forwarded to Weights & Biases when on.

Besides scalars: `log_rows` (a table: appended to a local .jsonl, and a W&B table), `log_files` (artefacts:
best architecture, checkpoints, network) and `log_images` (drawings, curves); without W&B only the local files
are written.

W&B is imported only when `logger=wandb`; with `mode: null` the WANDB_MODE environment variable decides
online/offline/disabled (an explicit mode would override it). On resume the W&B run id from the checkpoint is
reused, and local records past the checkpoint's epoch are dropped so that no epoch appears twice.
In a data-parallel search only rank 0's tracker is enabled; the others write nothing.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from enas.files import write_text_atomic

log = logging.getLogger(__name__)
METRICS_NAME = "metrics.jsonl"
SAMPLED_ARCHS_NAME = "sampled_archs.jsonl"


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


class Tracker:
    def __init__(self, run_dir: str | Path, logger_cfg=None, config: dict | None = None,
                 resume_epoch: int | None = None, wandb_id: str | None = None, enabled: bool = True):
        """enabled=False: no file, no W&B run; log() still returns the plain record."""
        self.path, self.enabled, self.wandb_run = Path(run_dir) / METRICS_NAME, enabled, None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._keep_records_up_to(resume_epoch)
        if logger_cfg is not None and logger_cfg.name == "wandb":
            import wandb  # lazily: only runs that ask for W&B need it importable and configured

            self.wandb_run = wandb.init(
                project=logger_cfg.project, entity=logger_cfg.entity, group=logger_cfg.group,
                tags=list(logger_cfg.tags), mode=logger_cfg.mode, dir=str(run_dir), config=config,
                id=wandb_id, resume="allow" if wandb_id else None)

    @property
    def wandb_id(self) -> str | None:
        return self.wandb_run.id if self.wandb_run is not None else None

    def _keep_records_up_to(self, epoch: int | None) -> None:
        for path in (self.path, self.path.parent / SAMPLED_ARCHS_NAME):
            if not path.exists():
                continue
            if epoch is None:  # a fresh run in a reused folder starts a fresh record
                path.unlink()
                continue
            lines = [line for line in path.read_text().splitlines()
                     if line.strip() and json.loads(line).get("epoch", -1) <= epoch]
            write_text_atomic(path, "".join(line + "\n" for line in lines))

    def log(self, metrics: dict, step: int) -> dict:
        """Read device values once, append one JSON record, forward to W&B. Returns the plain record."""
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        if not self.enabled:
            return record
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log(record, step=step)
        return record

    def log_rows(self, name: str, rows: list[dict], step: int) -> None:
        """Append `rows` (dicts with the same keys) to `<name>.jsonl` in the run directory; a W&B table too."""
        if not rows or not self.enabled:
            return
        with (self.path.parent / f"{name}.jsonl").open("a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        if self.wandb_run is not None:
            import wandb

            columns = list(rows[0])
            self.wandb_run.log({name: wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])},
                               step=step)

    def log_files(self, name: str, kind: str, paths: list[str | Path]) -> None:
        """Files as one W&B artifact (`kind`: "architecture", "checkpoint", "model"); nothing without W&B."""
        paths = [Path(p) for p in paths if Path(p).exists()]
        if self.wandb_run is None or not paths:
            return
        import wandb

        artifact = wandb.Artifact(name, type=kind)
        for path in paths:
            artifact.add_file(str(path))
        self.wandb_run.log_artifact(artifact)

    def log_images(self, images: dict[str, str | Path]) -> None:
        """PNG files as W&B images (drawings, curves); nothing without W&B."""
        images = {k: Path(v) for k, v in images.items() if Path(v).suffix == ".png" and Path(v).exists()}
        if self.wandb_run is None or not images:
            return
        import wandb

        self.wandb_run.log({f"images/{k}": wandb.Image(str(v)) for k, v in images.items()})

    def summary(self, values: dict) -> None:
        if self.wandb_run is not None:
            self.wandb_run.summary.update({k: _plain(v) for k, v in values.items()})

    def finish(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
