"""Checkpoints and artefacts are written atomically: a write killed midway leaves the previous file loadable."""
from __future__ import annotations

import os

import pytest
import torch

from enas.checkpoint import load_checkpoint, save_checkpoint
from enas.files import write_json_atomic
from enas.tensor_pool import REF


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


def _tensors_in(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors_in(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors_in(v)]
    return []


def test_a_checkpoint_stores_its_many_tensors_in_one_pool_per_dtype_and_loads_them_back_equal(tmp_path):
    """torch.save pays per tensor (a micro supernet's checkpoint holds ~10,000): the file holds one flat tensor
    per dtype plus an index, and loading gives back every tensor equal in values, dtype, shape and layout, each
    with storage of its own (an optimiser updates its momentum buffers in place)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(2, 3, 6, 6).contiguous(memory_format=torch.channels_last)).sum().backward()
    optimizer.step()
    state = {"epoch": 3, "net": net.state_dict(), "optimizer": optimizer.state_dict(),
             "nested": [(torch.arange(5), "text", 2.5), {"empty": torch.zeros(0, 3), "scalar": torch.tensor(7)}],
             "strided": torch.randn(4, 6)[:, ::2]}
    save_checkpoint(tmp_path / "last.pt", state)

    on_disk = torch.load(tmp_path / "last.pt", weights_only=True)
    assert len(_tensors_in(on_disk)) <= 5  # pools of float32, int64, uint8 (the RNG state) and the index table

    loaded = load_checkpoint(tmp_path / "last.pt")
    assert set(loaded) == set(state) | {"rng"} and loaded["epoch"] == 3 and loaded["nested"][0][1:] == ("text", 2.5)
    expected, got = _tensors_in(state), _tensors_in({k: loaded[k] for k in state})
    assert len(got) == len(expected)
    for want, have in zip(expected, got):
        assert have.dtype == want.dtype and have.shape == want.shape and torch.equal(have, want)
        assert have.is_contiguous(memory_format=torch.channels_last) == want.is_contiguous(
            memory_format=torch.channels_last)
    assert len({t.untyped_storage().data_ptr() for t in got if t.numel()}) == len([t for t in got if t.numel()])
    torch.testing.assert_close(loaded["rng"]["torch"], torch.get_rng_state())
    assert loaded["net"]._metadata == state["net"]._metadata  # module versions, which load_state_dict reads

    restored = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    restored.load_state_dict(loaded["optimizer"])  # the rebuilt state is what the optimiser takes
    for p in net.parameters():
        assert torch.equal(restored.state[p]["momentum_buffer"], optimizer.state[p]["momentum_buffer"])


def test_a_checkpoint_written_before_tensor_pools_still_loads(tmp_path):
    torch.save({"epoch": 2, "net": {"w": torch.ones(3)}}, tmp_path / "last.pt")
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 2 and torch.equal(state["net"]["w"], torch.ones(3))


def test_a_state_holding_the_pool_reference_marker_is_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved for packed tensors"):
        save_checkpoint(tmp_path / "last.pt", {"odd": (REF, 0)})
    assert not (tmp_path / "last.pt").exists()
