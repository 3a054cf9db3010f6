"""Comparison report over a Hydra sweep: which search strategy found the better architecture, over seeds.

    python run.py -m trainer.strategy=enas,random,naswot,params seed=0,1,2 ...   # multirun/<date>/<time>/<job>/
    python -m enas.report multirun/<date>/<time> [--out DIR]                      # report.md, report.json, PNGs

Every job folder holds result.json (or {"error": ...} for a failed job), config_resolved.yaml, .hydra/overrides.yaml
and metrics.jsonl. The report has one row per run, mean ± sample std over seeds per strategy, and three pictures:
the ranking metric by strategy, controller reward/entropy per epoch, op shares per epoch. Strategies are ranked by
the most trustworthy accuracy every successful run has: NAS-Bench-201 CIFAR-10 test, else a short standalone
retrain (proxy_acc), else the accuracy with shared weights, which ranks poorly (Yu et al., 2020, "Evaluating the
search phase of neural architecture search") — hence the baselines `params` and `random_pick` a search must beat.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from enas.files import atomic_path, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

BASELINES = ("params", "random_pick")  # strategies that search nothing: a search strategy should beat them
CONFIG_KEYS = ("seed", "trainer.strategy", "search_space.name")
# value key, column header, display scale (result.json's 0..1 → %), format; shown when any run has the value
COLUMNS = (
    ("best_valid_acc", "search valid acc %", 100, ".2f"),  # shared weights; nas_rl: the child trained alone
    ("best_score", "training-free score (NASWOT / params)", 1, ".2f"),
    ("benchmark/cifar10_valid", "C10 valid %", 1, ".2f"),
    ("benchmark/cifar10_test", "C10 test %", 1, ".2f"),
    ("benchmark/cifar100_test", "C100 test %", 1, ".2f"),
    ("benchmark/imagenet16_test", "IN16-120 test %", 1, ".2f"),
    ("proxy_acc", "proxy acc %", 100, ".2f"),
    ("best_params", "params", 1, ",.0f"),
    ("param_free_share", "param-free share, last epoch", 1, ".2f"),
    ("wall_time_s", "wall time s", 1, ".0f"),
)
SCALES = {key: scale for key, _, scale, _ in COLUMNS}
# ranking metrics, most trustworthy first: the first one every successful run has (else shared-weight accuracy)
METRICS = {"benchmark/cifar10_test": "NAS-Bench-201 CIFAR-10 test accuracy (%)",
           "proxy_acc": "proxy accuracy (%), short standalone retrain",
           "best_valid_acc": "validation accuracy at search time (%; shared weights except nas_rl)"}
ARCH_CHARS = 48  # longer architecture strings are shortened in report.md; report.json keeps them whole
DPI = 100


@dataclass
class Run:
    job: str
    strategy: str
    seed: int | None
    space: str
    arch: str = ""
    values: dict[str, float] = field(default_factory=dict)  # COLUMNS keys, in result.json's units
    error: str | None = None
    epochs: list[dict] = field(default_factory=list)  # metrics.jsonl search-epoch records, merged per epoch


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --- reading the sweep ---
def collect_runs(sweep_dir: Path) -> list[Run]:
    """One Run per job folder, sorted by strategy then seed."""
    expected = "a Hydra sweep directory (multirun/<date>/<time>) with one folder per job holding result.json"
    if not sweep_dir.is_dir():
        raise ValueError(f"{sweep_dir} is not a directory; expected {expected}")
    job_dirs = [d for d in sweep_dir.iterdir() if d.is_dir() and not d.name.startswith(".")
                and ((d / "result.json").is_file() or (d / ".hydra").is_dir())]
    if not any((d / "result.json").is_file() for d in job_dirs):
        raise ValueError(f"{sweep_dir} holds no job results; expected {expected}")
    runs = [load_run(d) for d in job_dirs]
    return sorted(runs, key=lambda r: (r.strategy, r.seed is None, r.seed or 0, int(r.job) if r.job.isdigit() else -1,
                                       r.job))


def load_run(job_dir: Path) -> Run:
    config = _job_config(job_dir)
    try:
        result = json.loads((job_dir / "result.json").read_text())
    except FileNotFoundError:
        result = {"error": "no result.json (still running, or killed)"}
    except json.JSONDecodeError as e:
        result = {"error": f"unreadable result.json: {e}"}
    if not isinstance(result, dict):
        result = {"error": f"result.json holds a {type(result).__name__}, not an object"}
    seed = config.get("seed")
    run = Run(job=job_dir.name, strategy=str(result.get("strategy") or config.get("trainer.strategy") or "?"),
              seed=int(seed) if str(seed).lstrip("-").isdigit() else None,
              space=str(result.get("space") or config.get("search_space.name") or "?"),
              arch=str(result.get("best_arch") or ""), error=None if "error" not in result else str(result["error"]),
              epochs=_read_epochs(job_dir / "metrics.jsonl"))
    if run.error is None:
        run.values = {k: result[k] for k in ("best_valid_acc", "best_score", "proxy_acc", "best_params", "wall_time_s")
                      if _is_number(result.get(k))}
        run.values |= {f"benchmark/{k}": v for k, v in (result.get("benchmark") or {}).items() if _is_number(v)}
        if run.epochs and _is_number(run.epochs[-1].get("diag/param_free_share")):
            run.values["param_free_share"] = run.epochs[-1]["diag/param_free_share"]
    return run


def _job_config(job_dir: Path) -> dict:
    """CONFIG_KEYS from config_resolved.yaml, else from the job's command-line overrides."""
    found = {}
    overrides = job_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        for item in OmegaConf.load(overrides) or []:
            key, _, value = str(item).lstrip("+~").partition("=")
            found[key] = value
    resolved = job_dir / "config_resolved.yaml"
    if resolved.is_file():
        cfg = OmegaConf.load(resolved)
        found |= {k: v for k in CONFIG_KEYS if (v := OmegaConf.select(cfg, k, default=None)) is not None}
    return found


def _read_epochs(path: Path) -> list[dict]:
    """The search-epoch records of metrics.jsonl (lines with "epoch"), merged per epoch, in epoch order."""
    by_epoch: dict[float, dict] = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # e.g. the last line of a killed run
            continue
        if isinstance(record, dict) and _is_number(record.get("epoch")):
            by_epoch.setdefault(record["epoch"], {}).update(record)
    return [by_epoch[e] for e in sorted(by_epoch)]


# --- statistics ---
def choose_metric(runs: list[Run]) -> str | None:
    """The first METRICS key every successful run has; else shared-weight accuracy where any run has it."""
    ok = [r for r in runs if r.error is None]
    for key in METRICS:
        if ok and all(key in r.values for r in ok):
            return key
    return "best_valid_acc" if any("best_valid_acc" in r.values for r in ok) else None


def summarise(runs: list[Run]) -> dict[str, dict]:
    """Per strategy: successful and failed run counts, and mean, sample std (None for one value) and n per value."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.strategy].append(run)
    summary = {}
    for strategy, group in groups.items():
        ok = [r for r in group if r.error is None]
        stats = {}
        for key, *_ in COLUMNS:
            xs = [r.values[key] for r in ok if key in r.values]
            if xs:
                stats[key] = {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else None,
                              "n": len(xs)}
        summary[strategy] = {"num_runs": len(ok), "num_failed": len(group) - len(ok), "stats": stats}
    return summary


def compare(summary: dict[str, dict], metric: str | None) -> tuple[list[str], dict[str, dict[str, bool]]]:
    """Strategies best first by the metric's mean; per baseline present, whether each search strategy beat it."""
    means = {s: v["stats"][metric]["mean"] for s, v in summary.items() if metric in v["stats"]}
    ranking = sorted(means, key=means.get, reverse=True)
    beats = {b: {s: means[s] > means[b] for s in ranking if s not in BASELINES} for b in BASELINES if b in means}
    return ranking, beats


# --- report.md ---
def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _value(v, scale: float, fmt: str) -> str:
    return "—" if v is None else format(v * scale, fmt)


def _stat(stat: dict | None, scale: float, fmt: str, num_runs: int) -> str:
    if stat is None:
        return "—"
    text = _value(stat["mean"], scale, fmt)
    text += "" if stat["std"] is None else f" ± {_value(stat['std'], scale, fmt)}"
    return text + (f" (n={stat['n']})" if stat["n"] < num_runs else "")


def _verdict(summary: dict, metric: str | None, ranking: list[str], beats: dict) -> list[str]:
    if metric is None:
        return ["No run has a benchmark, proxy or shared-weight accuracy: strategies are not ranked."]
    means = {s: summary[s]["stats"][metric]["mean"] * SCALES[metric] for s in ranking}
    lines = [f"Strategies are ranked by **{METRICS[metric]}**, mean over seeds: "
             + " > ".join(f"`{s}` {means[s]:.2f}" for s in ranking) + "."]
    if metric == "best_valid_acc":
        lines.append("Shared-weight accuracy ranks supernet paths, not stand-alone architectures: read with care.")
    for baseline, verdicts in beats.items():
        lines += ["", f"Against the baseline `{baseline}` ({means[baseline]:.2f}):"]
        lines += [f"- `{s}` {'beat' if won else 'did not beat'} `{baseline}`: {means[s]:.2f} vs {means[baseline]:.2f}"
                  for s, won in verdicts.items()] or ["- no search strategy to compare"]
    return lines


def render_markdown(sweep_dir: Path, runs: list[Run], summary: dict, metric: str | None, ranking: list[str],
                    beats: dict, plots: list[Path]) -> str:
    shown = [c for c in COLUMNS if any(c[0] in r.values for r in runs)]
    num_failed = sum(r.error is not None for r in runs)
    generated = f"Generated {datetime.now():%Y-%m-%d %H:%M}: {len(runs)} runs ({num_failed} failed)."
    lines = [f"# Sweep report: {sweep_dir}", "", generated, "", "## Runs", ""]
    rows = []
    for r in runs:
        arch = r.arch if len(r.arch) <= ARCH_CHARS else r.arch[:ARCH_CHARS - 1] + "…"
        rows.append([r.job, r.strategy, "—" if r.seed is None else r.seed, r.space, f"`{arch}`" if arch else "—",
                     *(_value(r.values.get(k), scale, fmt) for k, _, scale, fmt in shown)]
                    + ([f"**failed**: {r.error}" if r.error is not None else ""] if num_failed else []))
    lines += _table(["job", "strategy", "seed", "space", "architecture", *(c[1] for c in shown)]
                    + (["error"] if num_failed else []), rows)
    lines += ["", "## Per strategy", "", "Mean ± sample std over seeds; n counts the successful runs only.", ""]
    rows = [[s, f"{v['num_runs']}" + (f" (+{v['num_failed']} failed)" if v["num_failed"] else ""),
             *(_stat(v["stats"].get(k), scale, fmt, v["num_runs"]) for k, _, scale, fmt in shown)]
            for s, v in summary.items()]
    lines += _table(["strategy", "n", *(c[1] for c in shown)], rows)
    if plots:
        lines += ["", "## Plots"] + [f"\n![{p.stem}]({p.name})" for p in plots]
    lines += ["", "## Ranking", "", *_verdict(summary, metric, ranking, beats)]
    return "\n".join(lines) + "\n"


# --- pictures ---
def _figure(width_in: float, height_in: float):
    # lazily: only reports need matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _plot_accuracy(runs: list[Run], metric: str | None, colors: dict[str, str]):
    ok = [r for r in runs if r.error is None and metric in r.values]
    if not ok:
        return None
    strategies = list(dict.fromkeys(r.strategy for r in ok))
    fig = _figure(1.5 + 1.2 * len(strategies), 4)
    ax = fig.subplots()
    for i, s in enumerate(strategies):
        ys = [r.values[metric] * SCALES[metric] for r in ok if r.strategy == s]
        ax.scatter([i + 0.08 * (k - (len(ys) - 1) / 2) for k in range(len(ys))], ys, color=colors[s], alpha=0.7,
                   zorder=3, label="seeds" if i == 0 else None)
        ax.hlines(statistics.fmean(ys), i - 0.3, i + 0.3, color="black", lw=2, zorder=4,
                  label="mean" if i == 0 else None)
    ax.set_xticks(range(len(strategies)), strategies)
    ax.set(ylabel=METRICS[metric], title=f"{METRICS[metric]}\nby strategy")
    ax.title.set_fontsize(10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _plot_curves(runs: list[Run], metric: str | None, colors: dict[str, str]):
    panels = [(key, [r for r in runs if any(_is_number(e.get(key)) for e in r.epochs)])
              for key in ("controller/reward", "controller/entropy")]
    panels = [(key, with_key) for key, with_key in panels if with_key]
    if not panels:
        return None
    fig = _figure(5 * len(panels), 3.6)
    for ax, (key, with_key) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for r in with_key:
            points = [(e["epoch"], e[key]) for e in r.epochs if _is_number(e.get(key))]
            ax.plot(*zip(*points), color=colors[r.strategy], alpha=0.8, lw=1.2, label=r.strategy)
        handles, labels = ax.get_legend_handles_labels()
        by_label = dict(zip(labels, handles))  # one legend entry per strategy, not per run
        ax.legend(by_label.values(), by_label.keys(), fontsize=8)
        ax.set(title=f"{key} (one line per run)", xlabel="epoch")
        _style_epochs(ax)
    return fig


def _plot_ops(runs: list[Run], metric: str | None, colors: dict[str, str]):
    shares: dict[str, dict[str, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in runs:
        for e in r.epochs:
            for key, v in e.items():
                if key.startswith("ops/") and _is_number(v):
                    shares[r.strategy][key.removeprefix("ops/")][e["epoch"]].append(v)
    if not shares:
        return None
    op_colors = {op: f"C{i % 10}" for i, op in enumerate(sorted({op for ops in shares.values() for op in ops}))}
    fig = _figure(4.5 * len(shares), 3.6)
    for ax, (strategy, ops) in zip(fig.subplots(1, len(shares), squeeze=False, sharey=True)[0], shares.items()):
        for op, by_epoch in sorted(ops.items()):
            epochs = sorted(by_epoch)
            ax.plot(epochs, [statistics.fmean(by_epoch[x]) for x in epochs], color=op_colors[op], label=op)
        ax.set(title=f"{strategy}: op shares (mean over seeds)", xlabel="epoch", ylabel="share of sampled ops")
        ax.title.set_fontsize(10)
        _style_epochs(ax)
        ax.legend(fontsize=7)
    return fig


PLOTS = (("report_accuracy.png", _plot_accuracy), ("report_curves.png", _plot_curves), ("report_ops.png", _plot_ops))


def draw_plots(runs: list[Run], metric: str | None, out_dir: Path) -> list[Path]:
    """The PNGs that had something to show; a drawing failure only logs a warning."""
    colors = {s: f"C{i % 10}" for i, s in enumerate(dict.fromkeys(r.strategy for r in runs))}
    written = []
    for name, plot in PLOTS:
        try:
            fig = plot(runs, metric, colors)
            if fig is None:
                log.info("no %s: the runs hold nothing to plot there", name)
                continue
            with atomic_path(out_dir / name) as tmp:
                fig.savefig(tmp, format="png")
            written.append(out_dir / name)
        except Exception as e:  # noqa: BLE001 - a picture is never worth losing the report for
            log.warning("could not draw %s: %r", out_dir / name, e)
    return written


# --- entry points ---
def build_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write report.md, report.json and the PNGs into out_dir (default: the sweep directory); return report.md."""
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir
    runs = collect_runs(sweep_dir)
    metric = choose_metric(runs)
    summary = summarise(runs)
    ranking, beats = compare(summary, metric)
    plots = draw_plots(runs, metric, out_dir)
    write_json_atomic(out_dir / "report.json", {
        "sweep_dir": str(sweep_dir), "generated": datetime.now().isoformat(timespec="seconds"),
        "metric": None if metric is None else {"key": metric, "label": METRICS[metric],
                                               "scale_to_percent": SCALES[metric]},
        "rows": [{"job": r.job, "strategy": r.strategy, "seed": r.seed, "space": r.space, "best_arch": r.arch,
                  "values": r.values, "error": r.error} for r in runs],
        "summary": summary, "ranking": ranking, "beats_baseline": beats, "plots": [p.name for p in plots]})
    write_text_atomic(out_dir / "report.md", render_markdown(sweep_dir, runs, summary, metric, ranking, beats, plots))
    return out_dir / "report.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m enas.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="multirun/<date>/<time>: one folder per job")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: the sweep dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(build_report(args.sweep_dir, args.out))
    except ValueError as e:
        parser.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
