"""The sweep report: one row per run, mean ± std per strategy, the ranking metric rule, baselines and pictures.

Every sweep here is fake (a few JSON and YAML files written by hand): no training runs.
"""
from __future__ import annotations

import json
import logging
import re
import statistics
from pathlib import Path

import pytest

from enas import report
from enas.report import build_report, choose_metric, collect_runs, main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"
# CIFAR-10 test accuracy (%) per strategy and seed; None: the job failed
C10_TEST = {"enas": [93.0, 92.0, 94.5], "random": [90.0, 91.0, None], "params": [91.0, 91.5, 92.5]}
STRATEGIES = list(C10_TEST)


def write_job(sweep: Path, job: int, strategy: str, seed: int, result: dict, epochs: list[dict] = ()) -> None:
    job_dir = sweep / str(job)
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / "result.json").write_text(json.dumps(result))
    (job_dir / "config_resolved.yaml").write_text(
        f"seed: {seed}\ntrainer:\n  strategy: {strategy}\nsearch_space:\n  name: nb201\n")
    (job_dir / ".hydra" / "overrides.yaml").write_text(f"- trainer.strategy={strategy}\n- seed={seed}\n")
    candidate = {"candidate": 3, "naswot/score": 1.0}  # not a search epoch: ignored
    lines = [json.dumps(e) for e in epochs] + [json.dumps(candidate), '{"epoch": 9, "controller/rew']  # cut off
    (job_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def search_epochs(strategy: str, seed: int) -> list[dict]:
    epochs = []
    for epoch in range(3):
        record = {"epoch": epoch, "shared/acc": 0.3 + 0.1 * epoch, "diag/param_free_share": 0.1 * (epoch + seed),
                  "ops/nor_conv_3x3": 0.2 + 0.1 * epoch, "ops/skip_connect": 0.3 - 0.1 * epoch}
        if strategy == "enas":
            record |= {"controller/reward": 0.4 + 0.05 * epoch, "controller/entropy": 5.0 - epoch}
        epochs.append(record)
    return epochs


@pytest.fixture
def sweep(tmp_path) -> Path:
    """3 strategies x 3 seeds, job numbers seed-major (as `seed=0,1,2 trainer.strategy=...` would number them);
    random's seed 2 failed."""
    sweep = tmp_path / "multirun" / "2024-01-01" / "12-00-00"
    for seed in range(3):
        for k, strategy in enumerate(STRATEGIES):
            job, acc = 3 * seed + k, C10_TEST[strategy][seed]
            if acc is None:
                write_job(sweep, job, strategy, seed, {"error": "CUDA out of memory"})
                continue
            result = {"mode": "search", "space": "nb201", "strategy": strategy, "best_arch": ARCH,
                      "best_params": 400_000 + 1000 * job, "wall_time_s": 60.0 + job,
                      "benchmark": {"cifar10_valid": acc - 2, "cifar10_test": acc, "cifar100_test": acc - 20,
                                    "imagenet16_test": acc - 50}}
            if strategy != "params":
                result["best_valid_acc"] = acc / 200
            write_job(sweep, job, strategy, seed, result, [] if strategy == "params" else search_epochs(strategy, seed))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def table(md: str, section: str) -> list[dict[str, str]]:
    """The markdown table under `## section` as one dict per row, keyed by header."""
    body = md.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in body.splitlines()
            if line.startswith("|")]
    return [dict(zip(rows[0], row)) for row in rows[2:]]


def test_report_has_one_row_per_run_sorted_by_strategy_then_seed(sweep):
    md = build_report(sweep).read_text()
    assert md.startswith(f"# Sweep report: {sweep}")
    rows = table(md, "Runs")
    expected = sorted((s, seed) for s in STRATEGIES for seed in range(3))
    assert [(r["strategy"], int(r["seed"])) for r in rows] == expected
    assert all(r["job"] == str(3 * int(r["seed"]) + STRATEGIES.index(r["strategy"])) for r in rows)
    enas_0 = rows[0]
    assert enas_0["C10 test %"] == "93.00" and enas_0["search valid acc %"] == "46.50"
    assert enas_0["params"] == "400,000" and enas_0["space"] == "nb201"
    assert enas_0["architecture"].endswith("…`") and len(enas_0["architecture"]) < len(ARCH)
    assert rows[3]["search valid acc %"] == "—"  # params: no shared weights


def test_failed_job_is_shown_and_left_out_of_the_means(sweep):
    build_report(sweep)
    md = (sweep / "report.md").read_text()
    failed = [r for r in table(md, "Runs") if r["error"]]
    assert [(r["strategy"], r["seed"], r["error"]) for r in failed] == [("random", "2",
                                                                       "**failed**: CUDA out of memory")]
    random_summary = next(r for r in table(md, "Per strategy") if r["strategy"] == "random")
    assert random_summary["n"] == "2 (+1 failed)"
    assert random_summary["C10 test %"] == f"90.50 ± {statistics.stdev([90.0, 91.0]):.2f}"


def test_per_strategy_means_and_stds(sweep):
    build_report(sweep)
    summary = json.loads((sweep / "report.json").read_text())["summary"]
    rows = {r["strategy"]: r for r in table((sweep / "report.md").read_text(), "Per strategy")}
    for strategy, accs in C10_TEST.items():
        accs = [a for a in accs if a is not None]
        mean, std = statistics.fmean(accs), statistics.stdev(accs)
        stat = summary[strategy]["stats"]["benchmark/cifar10_test"]
        assert stat["mean"] == pytest.approx(mean) and stat["std"] == pytest.approx(std) and stat["n"] == len(accs)
        assert rows[strategy]["C10 test %"] == f"{mean:.2f} ± {std:.2f}"
        if strategy != "params":  # shared-weight accuracy is shown in percent
            assert rows[strategy]["search valid acc %"] == f"{mean / 2:.2f} ± {std / 2:.2f}"
    assert rows["params"]["search valid acc %"] == "—"
    assert "best_valid_acc" not in summary["params"]["stats"]


def test_report_json_holds_rows_summary_metric_and_verdicts(sweep):
    build_report(sweep)
    data = json.loads((sweep / "report.json").read_text())
    assert data["sweep_dir"] == str(sweep)
    assert data["metric"]["key"] == "benchmark/cifar10_test"
    assert len(data["rows"]) == 9 and data["rows"][0]["best_arch"] == ARCH  # whole, not shortened
    failed = [r for r in data["rows"] if r["error"]]
    assert failed == [{"job": "7", "strategy": "random", "seed": 2, "space": "nb201", "best_arch": "", "values": {},
                       "error": "CUDA out of memory"}]
    assert data["rows"][0]["values"]["param_free_share"] == pytest.approx(0.2)  # last epoch, seed 0
    assert data["ranking"] == ["enas", "params", "random"]
    assert data["beats_baseline"] == {"params": {"enas": True, "random": False}}
    assert set(data["plots"]) == {"report_accuracy.png", "report_curves.png", "report_ops.png"}


def test_ranking_line_compares_search_strategies_with_the_baseline(sweep):
    md = build_report(sweep).read_text()
    ranking = md.split("## Ranking\n", 1)[1]
    assert "ranked by **NAS-Bench-201 CIFAR-10 test accuracy (%)**" in ranking
    assert "`enas` beat `params`: 93.17 vs 91.67" in ranking
    assert "`random` did not beat `params`: 90.50 vs 91.67" in ranking


def test_plots_are_written_and_linked(sweep, tmp_path):
    out = tmp_path / "out"
    md = build_report(sweep, out).read_text()
    for name in ("report_accuracy.png", "report_curves.png", "report_ops.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
        assert f"]({name})" in md  # relative link beside report.md
    assert not (sweep / "report.md").exists()


@pytest.mark.parametrize(("keep", "expected"), [
    (("benchmark", "proxy_acc", "best_valid_acc"), "benchmark/cifar10_test"),
    (("proxy_acc", "best_valid_acc"), "proxy_acc"),
    (("best_valid_acc",), "best_valid_acc"),
])
def test_metric_is_benchmark_then_proxy_then_shared_accuracy_where_every_run_has_it(tmp_path, keep, expected):
    full = {"strategy": "enas", "best_arch": ARCH, "best_valid_acc": 0.5, "proxy_acc": 0.8,
            "benchmark": {"cifar10_test": 93.0}, "wall_time_s": 1.0}
    write_job(tmp_path, 0, "enas", 0, full)
    write_job(tmp_path, 1, "enas", 1, {k: v for k, v in full.items() if k in keep or k not in
                                       ("benchmark", "proxy_acc", "best_valid_acc")})
    write_job(tmp_path, 2, "enas", 2, {"error": "diverged"})  # a failed job has nothing and is not counted
    assert choose_metric(collect_runs(tmp_path)) == expected


def test_shared_accuracy_ranking_skips_empty_plots_and_warns(tmp_path):
    for seed in range(2):
        write_job(tmp_path, seed, "random", seed, {"strategy": "random", "best_arch": "0 1", "best_valid_acc": 0.4})
    md = build_report(tmp_path).read_text()
    assert "ranked by **validation accuracy at search time (%; shared weights except nas_rl)**" in md and "read with care" in md
    assert "baseline" not in md.split("## Ranking", 1)[1]
    assert (tmp_path / "report_accuracy.png").is_file()
    assert not (tmp_path / "report_curves.png").exists() and "report_curves.png" not in md
    assert not (tmp_path / "report_ops.png").exists()


def test_a_drawing_failure_only_warns(sweep, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("no display")
    monkeypatch.setattr(report, "PLOTS", (("report_curves.png", broken),))
    with caplog.at_level(logging.WARNING, logger="enas.report"):
        md = build_report(sweep).read_text()
    assert "could not draw" in caplog.text and "no display" in caplog.text
    assert "## Plots" not in md and "## Ranking" in md


def test_cli_prints_the_report_path(sweep, tmp_path, capsys):
    main([str(sweep), "--out", str(tmp_path / "cli")])
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli" / "report.md")
    assert (tmp_path / "cli" / "report.json").is_file()


@pytest.mark.parametrize("make", [
    lambda p: p / "missing",
    lambda p: p,  # empty
    lambda p: (p / "0" / "checkpoints").mkdir(parents=True) or p,  # folders, but no job results
])
def test_no_job_results_is_a_clear_error(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*result.json"):
        build_report(path)


def test_cli_reports_the_error_without_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"error: {tmp_path} holds no job results" in capsys.readouterr().err
