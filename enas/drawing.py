"""Pictures for a run directory: architecture figures (graphviz or matplotlib) and training curves.

The cell figures follow quark0/darts `visualize.py` (left-to-right graph, inputs green, output yellow, op names on
the edges), which is also how the ENAS paper (Pham et al., 2018, Fig. 4/8) draws its cells. Any `ArchGraph` is
drawn: micro and NAS-Bench-201 cells (ops on edges) and macro networks (ops on nodes, unlabelled skip edges).
A `.dot` file is always written; the PNG comes from the graphviz `dot` program when it is installed, else from
a matplotlib layout computed here. Pictures are a courtesy: a failure logs a warning and never stops a run.
"""
from __future__ import annotations

import io
import json
import logging
import math
import shutil
import subprocess
from collections import defaultdict
from graphlib import TopologicalSorter
from pathlib import Path

from enas.files import atomic_path, write_text_atomic
from enas.spaces.base import ArchGraph

log = logging.getLogger(__name__)

DOT_TIMEOUT_S = 30
INPUT_COLOR, OUTPUT_COLOR, NODE_COLOR = "#b4eeb4", "palegoldenrod", "lightblue"  # DARTS: darkseagreen2, ...
MAX_LAYERS_ACROSS = 10   # deeper graphs (a 24-layer macro chain) are drawn top to bottom instead of left to right
ALONG_IN, ACROSS_IN = 2.6, 1.0     # left-to-right: column and row spacing, inches
ALONG_TB_IN, ACROSS_TB_IN = 0.8, 2.4  # top-to-bottom: row and column spacing, inches
NODE_PT, EDGE_PT = 10, 8           # font sizes, points
BOX_HEIGHT_IN, DPI = 0.36, 100

# plot_curves panels: (title, ((metrics.jsonl key, legend label), ...)); a panel is drawn when any key is present
CURVE_PANELS = (
    ("controller reward", (("controller/reward", "reward"), ("controller/baseline", "baseline"))),
    ("controller entropy", (("controller/entropy", "entropy"),)),
    ("accuracy", (("shared/acc", "shared weights (train)"), ("train/acc", "train"),
                  ("valid/acc", "valid"), ("test/acc", "test"))),
    ("loss", (("shared/loss", "shared weights (train)"), ("train/loss", "train"))),
    ("learning rate", (("lr", "lr"),)),
    ("skip rate", (("controller/skip_rate", "skip rate"),)),
    ("NASWOT score", (("naswot/score", "candidate"), ("naswot/best_score", "best so far"))),
)


def draw_arch(arch, out_dir: str | Path, stem: str = "arch") -> list[Path]:
    """Write `<stem>_<name>.dot` and `<stem>_<name>.png` for every entry of `arch.graphs()`; return what was written."""
    try:
        graphs = arch.graphs()
    except Exception as e:  # a picture is never worth stopping a run for
        log.warning("no architecture drawing: %s.graphs() failed: %r", type(arch).__name__, e)
        return []
    written: list[Path] = []
    for name, graph in graphs.items():
        dot_path, png_path = Path(out_dir) / f"{stem}_{name}.dot", Path(out_dir) / f"{stem}_{name}.png"
        try:
            write_text_atomic(dot_path, dot_source(graph, name))
            written.append(dot_path)
            _write_bytes_atomic(png_path, _render_png(graph, name, dot_path))
            written.append(png_path)
        except Exception as e:
            log.warning("could not draw %s: %r (wrote %s)", png_path, e, ", ".join(map(str, written)) or "nothing")
    return written


def dot_source(graph: ArchGraph, name: str) -> str:
    """Graphviz source in the DARTS style: filled rounded boxes, op names on the edges, inputs in the first rank;
    deep graphs (a long macro chain) run top to bottom."""
    colors = {**{i: INPUT_COLOR for i in graph.inputs}, graph.output: OUTPUT_COLOR}
    lines = [f"digraph {_quote(name)} {{", f"  rankdir={'TB' if _is_deep(graph) else 'LR'};",
             '  node [shape=rect, style="rounded,filled", fontname="helvetica", fontsize=20, penwidth=2, height=0.5];',
             '  edge [fontname="helvetica", fontsize=20];']
    for node_id, label in graph.nodes:
        color = colors.get(node_id, NODE_COLOR)
        lines.append(f"  {_quote(node_id)} [label={_quote(label)}, fillcolor={_quote(color)}];")
    for src, dst, label in graph.edges:
        lines.append(f"  {_quote(src)} -> {_quote(dst)}" + (f" [label={_quote(label)}]" if label else "") + ";")
    lines.append("  {rank=source; " + " ".join(f"{_quote(i)};" for i in graph.inputs) + "}")
    lines.append(f"  {{rank=sink; {_quote(graph.output)};}}")
    return "\n".join(lines + ["}"]) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render_png(graph: ArchGraph, name: str, dot_path: Path) -> bytes:
    dot = shutil.which("dot")
    if dot is not None:
        try:
            return subprocess.run([dot, "-Tpng", str(dot_path)], capture_output=True, check=True,
                                  timeout=DOT_TIMEOUT_S).stdout
        except (OSError, subprocess.SubprocessError) as e:
            log.warning("graphviz could not render %s (%r); drawing it with matplotlib", dot_path, e)
    return _render_matplotlib(graph, name)


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# --- matplotlib layout: layer = 1 + the latest predecessor's layer; layers are columns (or rows when deep) ---
def _layers(graph: ArchGraph) -> dict[str, int]:
    preds: dict[str, list[str]] = {node_id: [] for node_id, _ in graph.nodes}
    for src, dst, _ in graph.edges:
        preds[dst].append(src)
    layer: dict[str, int] = {}
    for node_id in TopologicalSorter(preds).static_order():
        sources = preds[node_id] if node_id not in graph.inputs else []
        layer[node_id] = 1 + max(layer[p] for p in sources) if sources else 0
    return layer


def _is_deep(graph: ArchGraph) -> bool:
    return max(_layers(graph).values()) + 1 > MAX_LAYERS_ACROSS


def _positions(graph: ArchGraph, layer: dict[str, int], deep: bool) -> dict[str, tuple[float, float]]:
    """Centre of every node in inches; nodes sharing a layer are spread across it in drawing order."""
    by_layer: dict[int, list[str]] = defaultdict(list)
    for node_id, _ in graph.nodes:
        by_layer[layer[node_id]].append(node_id)
    pos = {}
    for depth, ids in by_layer.items():
        for rank, node_id in enumerate(ids):
            offset = rank - (len(ids) - 1) / 2
            if deep:
                pos[node_id] = (offset * ACROSS_TB_IN, -depth * ALONG_TB_IN)
            else:
                pos[node_id] = (depth * ALONG_IN, -offset * ACROSS_IN)
    return pos


def _box_width(label: str) -> float:
    return 0.6 * NODE_PT / 72 * len(label) + 0.3  # ~0.6 em per character plus padding, inches


def _hits(a, b, box_centre, half_w, half_h, samples: int = 24) -> bool:
    """Whether the straight segment a→b passes through the (slightly enlarged) box."""
    return any(abs(a[0] + (b[0] - a[0]) * t - box_centre[0]) < half_w + 0.05
               and abs(a[1] + (b[1] - a[1]) * t - box_centre[1]) < half_h + 0.05
               for t in (k / samples for k in range(1, samples)))


def _bends(graph, pos, layer, half_w) -> list[float]:
    """Sideways offset (inches, + = right of travel) of each edge's midpoint: parallel edges fan out, and an edge
    whose straight line would cross another node arcs around it, farther for longer skips."""
    pairs: dict[tuple[str, str], list[int]] = defaultdict(list)
    for k, (src, dst, _) in enumerate(graph.edges):
        pairs[(src, dst)].append(k)
    bends = [0.0] * len(graph.edges)
    for (src, dst), ks in pairs.items():
        blockers = [half_w[n] for n in pos if n not in (src, dst)
                    and _hits(pos[src], pos[dst], pos[n], half_w[n], BOX_HEIGHT_IN / 2)]
        detour = 0.0
        if blockers:
            sign = 1 if layer[src] % 2 else -1
            detour = sign * (max(blockers) + 0.2 + 0.1 * (layer[dst] - layer[src]))
        for rank, k in enumerate(ks):
            bends[k] = detour + 0.4 * (rank - (len(ks) - 1) / 2)
    return bends


def _control_points(graph, pos, bends) -> list[tuple[tuple[float, float], ...]]:
    """(start, control, end) of each edge's quadratic curve; the curve's midpoint lies `bend` right of the chord."""
    curves = []
    for (src, dst, _), bend in zip(graph.edges, bends):
        (xa, ya), (xb, yb) = pos[src], pos[dst]
        length = math.hypot(xb - xa, yb - ya)
        nx, ny = (yb - ya) / length, -(xb - xa) / length  # unit normal, to the right of travel
        curves.append(((xa, ya), ((xa + xb) / 2 + 2 * bend * nx, (ya + yb) / 2 + 2 * bend * ny), (xb, yb)))
    return curves


def _bezier(curve, t: float) -> tuple[float, float]:
    (xa, ya), (xc, yc), (xb, yb) = curve
    return ((1 - t) ** 2 * xa + 2 * (1 - t) * t * xc + t ** 2 * xb,
            (1 - t) ** 2 * ya + 2 * (1 - t) * t * yc + t ** 2 * yb)


def _free_spot(curve, label: str, taken: list[tuple[float, ...]]) -> tuple[float, float]:
    """The first point along the curve (nearer the target first, so labels of edges leaving one node separate)
    where the label overlaps no node and no label placed before; else the first candidate."""
    half_w, half_h = (0.6 * EDGE_PT / 72 * len(label) + 0.06) / 2, 0.75 * EDGE_PT / 72
    spots = [_bezier(curve, t) for t in (0.6, 0.45, 0.72, 0.35, 0.8, 0.52, 0.66, 0.28)]
    boxes = [(x - half_w, y - half_h, x + half_w, y + half_h) for x, y in spots]
    box = next((b for b in boxes if not any(b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3]
                                            for o in taken)), boxes[0])
    taken.append(box)
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _render_matplotlib(graph: ArchGraph, name: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazily: only runs that draw need matplotlib
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    layer, deep = _layers(graph), _is_deep(graph)
    pos = _positions(graph, layer, deep)
    labels = dict(graph.nodes)
    half_w = {n: _box_width(labels[n]) / 2 for n in pos}
    bends = _bends(graph, pos, layer, half_w)
    curves = _control_points(graph, pos, bends)
    node_boxes = [(x - half_w[n], y - BOX_HEIGHT_IN / 2, x + half_w[n], y + BOX_HEIGHT_IN / 2)
                  for n, (x, y) in pos.items()]
    apexes = [_bezier(c, 0.5) for c in curves]
    xs = [b[0] for b in node_boxes] + [b[2] for b in node_boxes] + [x for x, _ in apexes]
    ys = [b[1] for b in node_boxes] + [b[3] for b in node_boxes] + [y for _, y in apexes]
    x0, x1, y0, y1 = min(xs) - 0.5, max(xs) + 0.5, min(ys) - 0.5, max(ys) + 0.8  # room for the title on top
    fig = Figure(figsize=(x1 - x0, y1 - y0), dpi=DPI)  # one data unit = one inch, so text sizes are known
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(x0, x1), ylim=(y0, y1), aspect="equal")
    ax.axis("off")
    ax.text(x0 + 0.2, y1 - 0.2, name, fontsize=NODE_PT + 2, va="top", weight="bold")
    colors = {**{i: INPUT_COLOR for i in graph.inputs}, graph.output: OUTPUT_COLOR}
    boxes = {}
    for n, (x, y) in pos.items():
        boxes[n] = ax.add_patch(FancyBboxPatch(
            (x - half_w[n], y - BOX_HEIGHT_IN / 2), 2 * half_w[n], BOX_HEIGHT_IN,
            boxstyle="round,pad=0,rounding_size=0.08", fc=colors.get(n, NODE_COLOR), ec="black", lw=1.2, zorder=3))
        ax.text(x, y, labels[n], ha="center", va="center", fontsize=NODE_PT, zorder=4)
    taken = list(node_boxes)
    for (src, dst, label), curve, bend in zip(graph.edges, curves, bends):
        (xa, ya), _, (xb, yb) = curve
        rad = 2 * bend / math.hypot(xb - xa, yb - ya)  # arc3's control point: rad·length right of the midpoint
        color = f"C{layer[src] % 10}" if deep and rad else "0.25"  # colour long skips by source, to follow them
        ax.add_patch(FancyArrowPatch((xa, ya), (xb, yb), connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                                     mutation_scale=10, patchA=boxes[src], patchB=boxes[dst], shrinkA=0,
                                     shrinkB=1, lw=1, color=color, zorder=2))
        if label:
            ax.text(*_free_spot(curve, label, taken), label, ha="center", va="center", fontsize=EDGE_PT, zorder=5,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85})
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


# --- training curves from metrics.jsonl ---
def plot_curves(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """A PNG grid of the curves found in `metrics.jsonl` (see CURVE_PANELS), against epoch (or step); None if
    there is nothing to plot or drawing fails."""
    metrics_path, out_path = Path(metrics_path), Path(out_path)
    try:
        records = _read_records(metrics_path)
        if records is None:
            return None
        x_key = "epoch" if all("epoch" in r for r in records) else "step"
        panels = [(title, [(label, *_series(records, x_key, key)) for key, label in curves])
                  for title, curves in CURVE_PANELS]
        panels = [(title, [c for c in curves if c[1]]) for title, curves in panels]
        panels = [(title, curves) for title, curves in panels if curves]
        if not panels:
            log.info("no curves: %s holds none of the plotted keys", metrics_path)
            return None
        _write_bytes_atomic(out_path, _render_curves(panels, x_key))
        return out_path
    except Exception as e:  # a picture is never worth stopping a run for
        log.warning("could not plot curves from %s to %s: %r", metrics_path, out_path, e)
        return None


def _read_records(path: Path) -> list[dict] | None:
    if not path.is_file():
        log.info("no curves: %s does not exist", path)
        return None
    records, bad = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:  # e.g. the last line of a killed run
            record, bad = None, bad + 1
        if isinstance(record, dict):
            records.append(record)
    if bad:
        log.warning("skipped %d unreadable line(s) of %s", bad, path)
    if not records:
        log.info("no curves: %s holds no records", path)
        return None
    return records


def _series(records: list[dict], x_key: str, key: str) -> tuple[list[float], list[float]]:
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    points = [(r[x_key], r[key]) for r in records if number(r.get(x_key)) and number(r.get(key))]
    return [x for x, _ in points], [y for _, y in points]


def _render_curves(panels, x_key: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazily: only runs that draw need matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    num_cols = min(3, len(panels))
    num_rows = math.ceil(len(panels) / num_cols)
    fig = Figure(figsize=(4.5 * num_cols, 3.2 * num_rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(num_rows, num_cols, squeeze=False).ravel()
    for ax, (title, curves) in zip(axes, panels):
        for label, xs, ys in curves:
            ax.plot(xs, ys, label=label, marker="o" if len(xs) <= 30 else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel(x_key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)  # entropy 57.18 reads better than +5.718e1 and 0.007
        ax.grid(alpha=0.3)
        if len(curves) > 1:
            ax.legend(fontsize=8)
    for ax in axes[len(panels):]:
        ax.remove()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# --- score histogram (NASWOT) ---
def plot_histogram(values: list[float], out_path: str | Path, xlabel: str, title: str = "") -> Path | None:
    """A PNG histogram of the finite `values` (the count of non-finite ones goes in the title); None if none is
    finite or drawing fails."""
    out_path = Path(out_path)
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        log.info("no histogram: none of the %d values is finite", len(values))
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazily: only runs that draw need matplotlib
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        fig = Figure(figsize=(5.5, 3.5), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.hist(finite, bins=min(50, max(5, len(finite) // 4)), color=NODE_COLOR, edgecolor="black", lw=0.5)
        left_out = len(values) - len(finite)
        ax.set_title(title + (f" ({left_out} non-finite left out)" if left_out else ""), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("architectures")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        _write_bytes_atomic(out_path, buffer.getvalue())
        return out_path
    except Exception as e:  # a picture is never worth stopping a run for
        log.warning("could not plot a histogram to %s: %r", out_path, e)
        return None
