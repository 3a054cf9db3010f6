"""Shared fixtures: compose the real Hydra config (as run.py does) with run directories under tmp_path."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from enas.checkpoint import load_checkpoint
from enas.config import Config, register_configs
from enas.spaces.base import ArchError
from enas.validation import validate

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
register_configs()


def compose_config(overrides: list[str], run_dir: Path) -> tuple[Config, dict]:
    """The typed config and its resolved dict for `overrides`, writing into `run_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="config", overrides=[*overrides, f"paths.output_dir={run_dir}",
                                                       f"paths.data_dir={run_dir / 'data'}"])
    config = OmegaConf.to_object(cfg)
    validate(config)
    return config, OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture
def smoke(tmp_path):
    """A factory: smoke-experiment config with extra overrides, in a fresh folder under tmp_path."""
    def make(*overrides: str, name: str = "run") -> tuple[Config, dict]:
        return compose_config(["experiment=smoke", *overrides], tmp_path / name)
    return make


def assert_arch_error(build, *fragments: str) -> None:
    """`build()` raises ArchError and the message contains every fragment (where, the bad value, what is allowed)."""
    with pytest.raises(ArchError) as info:
        build()
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} missing from {str(info.value)!r}"


def sgd_losses(net, x, y, steps: int, lr: float = 0.05) -> list[float]:
    """Train `net` (forward returns (logits, aux)) on one batch with SGD + momentum; the loss after each step."""
    import torch.nn.functional as F  # noqa: PLC0415
    from torch.optim import SGD  # noqa: PLC0415

    optimizer, losses = SGD(net.parameters(), lr=lr, momentum=0.9), []
    for _ in range(steps):
        loss = F.cross_entropy(net(x)[0], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def one_cpu_thread():
    """Tiny tensors on a busy 2-core machine: intra-op threads only wait on each other (a 6-layer macro supernet
    forward took 1.5 s with 2 threads, 4 ms with 1); also one thread count for every run compared with another.
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_cpu_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`."""
    return torch.Generator().manual_seed(seed)


def metric_records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without wall times (the only thing two equal runs may differ in)."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in lines]


def assert_same_run(full_dir: Path, resumed_dir: Path) -> dict:
    """An interrupted-then-resumed run ended exactly as the uninterrupted one: counters, every weight (network and,
    for a search, controller), every metric record, and the same files (sampled architectures, best architecture)."""
    full = load_checkpoint(Path(full_dir) / "last.pt")
    resumed = load_checkpoint(Path(resumed_dir) / "last.pt")
    assert (resumed["epoch"], resumed["global_step"]) == (full["epoch"], full["global_step"])
    for key, value in full["net"].items():
        assert torch.equal(value, resumed["net"][key]), key
    for key, value in full.get("sampler", {}).get("controller", {}).items():
        assert torch.equal(value, resumed["sampler"]["controller"][key]), key
    assert metric_records(resumed_dir) == metric_records(full_dir)
    for name in ("sampled_archs.jsonl", "best_arch.json"):
        if (Path(full_dir) / name).exists():
            assert (Path(resumed_dir) / name).read_text() == (Path(full_dir) / name).read_text(), name
    return full


def signal_at(monkeypatch, cls, method: str, signum: int, call: int) -> None:
    """Send `signum` to this process during the `call`-th call of `cls.method` (as `kill` would from outside)."""
    original, calls = getattr(cls, method), []

    def wrapped(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, wrapped)
