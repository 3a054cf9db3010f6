"""The speed benchmark runs its CI-sized preset and reports every figure, as a table and as JSON."""
from __future__ import annotations

import json

from conftest import compose_config

from enas.bench import run_bench


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
    assert "shared_images_per_s" in capsys.readouterr().out
