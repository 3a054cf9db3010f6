"""Checkpoints and artefacts are written atomically: a write killed midway leaves the previous file loadable."""
from __future__ import annotations

import os

import pytest
import torch

from enas.checkpoint import load_checkpoint, save_checkpoint
from enas.files import write_json_atomic


def test_a_checkpoint_write_killed_midway_leaves_the_previous_one_loadable(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1, "net": {"w": torch.ones(3)}})

    def killed_midway(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"PK\x03\x04 half a zip")  # the process dies after writing part of the file
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 2, "net": {"w": torch.zeros(3)}})
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["net"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind


def test_artefacts_get_the_usual_permissions_not_the_temp_files_0600(tmp_path):
    write_json_atomic(tmp_path / "best_arch.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "best_arch.json").stat().st_mode & 0o777 == 0o666 & ~umask
