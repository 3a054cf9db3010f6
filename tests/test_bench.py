"""The speed benchmark runs its CI-sized preset and reports every figure, as a table and as JSON."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from conftest import compose_config

from enas.bench import run_bench
from enas.huge_pages import hugetlb_setting, thp_mode


def test_bench_small_reports_every_phase(tmp_path, capsys):
    config, resolved = compose_config(["experiment=bench_small"], tmp_path)
    report = run_bench(config, resolved)
    figures = report["figures"]
    for key in ("shared_step_ms_median", "shared_images_per_s", "sample_archs_s", "controller_update_s",
                "epoch_shared_s", "epoch_controller_s", "epoch_valid_s", "epoch_checkpoint_s", "epoch_total_s",
                "peak_memory_mib"):
        assert figures[key] > 0, key
    assert abs(figures["shared_images_per_s"] * figures["shared_step_ms_median"] / 1000
               - config.trainer.batch_size) < 1e-6
    phases = ("epoch_shared_s", "epoch_controller_s", "epoch_valid_s", "epoch_checkpoint_s")
    assert abs(figures["epoch_total_s"] - sum(figures[k] for k in phases)) < 1e-9
    assert json.loads((tmp_path / "bench.json").read_text())["figures"] == figures
    assert report["environment"]["torch"] and report["config"]["channels"] == 8
    environment = report["environment"]
    assert environment["device"] and environment["thp_mode"] == thp_mode()  # what the figures ran with
    assert environment["malloc_hugetlb"] == hugetlb_setting(os.environ.get("GLIBC_TUNABLES"))
    assert "shared_images_per_s" in capsys.readouterr().out


_CHURN = """
import os, sys, torch
from enas.build import configure_backends
if sys.argv[1] == "configured":
    configure_backends(torch.device("cpu"), deterministic=False)
def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before = resident_mib()
tensors = [torch.ones(1 << 20) for _ in range(64)]  # a step's pattern: 64 x 4 MiB of activations, then all freed
del tensors
print(resident_mib() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="keep_freed_memory tunes glibc's malloc")
def test_cpu_runs_keep_freed_memory_instead_of_handing_it_back_to_the_os():
    """A fresh process (clean malloc state): once configure_backends ran for the CPU, 256 MiB of freed activations
    stay resident, ready for the next step; by default glibc hands them back, and the next step page-faults them
    in again (bench_nni: ~2,400 faults per step without, ~1,000 with)."""
    def kept_mib(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True)
        return float(out.stdout.split()[-1])

    assert kept_mib("default") < 64
    assert kept_mib("configured") > 192
