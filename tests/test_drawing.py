"""Pictures in the run directory: architecture drawings (.dot always; PNG from graphviz or matplotlib) and curves."""
from __future__ import annotations

import json
import logging
import shutil
from collections import Counter

import pytest
from matplotlib.image import imread

from enas import drawing
from enas.drawing import draw_arch, plot_curves
from enas.spaces.base import ArchGraph
from enas.spaces.micro_arch import published_arch

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Drawable:
    """Any value with `graphs()` can be drawn."""

    def __init__(self, **graphs: ArchGraph):
        self._graphs = graphs

    def graphs(self) -> dict[str, ArchGraph]:
        return self._graphs


def chain_with_skips(num_layers: int = 24) -> ArchGraph:
    """A macro-like network: ops on the nodes, an unlabelled chain, and skips of length 2 and 5."""
    ids = ["stem"] + [f"layer_{i}" for i in range(num_layers)]
    nodes = [("stem", "stem")] + [(ids[i + 1], f"{i}: conv_3x3") for i in range(num_layers)] + [("output", "output")]
    edges = [(ids[i], ids[i + 1], "") for i in range(num_layers)] + [(ids[-1], "output", "")]
    edges += [(ids[i - 2], ids[i], "") for i in range(2, num_layers + 1) if i % 3 == 0]
    edges += [(ids[i - 5], ids[i], "") for i in range(5, num_layers + 1) if i % 4 == 0]
    return ArchGraph(tuple(nodes), tuple(edges), ("stem",), "output")


@pytest.fixture
def no_dot(monkeypatch):
    monkeypatch.setattr(drawing.shutil, "which", lambda name: None)


def assert_png(path) -> tuple[int, int]:
    """The file is a decodable, non-empty PNG; returns its (height, width) in pixels."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width = imread(path).shape[:2]
    assert height > 50 and width > 50
    return height, width


def test_micro_cells_are_drawn_with_matplotlib_when_dot_is_missing(tmp_path, no_dot):
    written = draw_arch(published_arch(), tmp_path, stem="cell")
    assert [p.name for p in written] == ["cell_normal.dot", "cell_normal.png", "cell_reduce.dot", "cell_reduce.png"]
    for name in ("normal", "reduce"):
        assert_png(tmp_path / f"cell_{name}.png")
        assert (tmp_path / f"cell_{name}.dot").read_text().startswith(f'digraph "{name}"')


def test_micro_graph_is_the_paper_cell_figure():
    arch = published_arch()
    for name, cell in arch.cells().items():
        graph = arch.graphs()[name]
        assert dict(graph.nodes)["0"] == "c_{k-2}" and dict(graph.nodes)["1"] == "c_{k-1}"
        assert graph.inputs == ("0", "1") and graph.output == "c_{k}"
        op_edges = [e for e in graph.edges if e[2]]
        assert len(op_edges) == 2 * cell.num_nodes
        assert sorted(int(src) for src, dst, _ in graph.edges if dst == graph.output) == list(cell.loose_ends())


def test_dot_source_has_every_edge_with_its_op_exactly_once_per_edge():
    graphs = {**published_arch().graphs(), "network": chain_with_skips()}
    for name, graph in graphs.items():
        text = drawing.dot_source(graph, name)
        # an edge listed twice is written twice: the published reduce cell reads node 1 twice via sep_conv_3x3
        for (src, dst, op), count in Counter(graph.edges).items():
            line = f'"{src}" -> "{dst}" [label="{op}"];' if op else f'"{src}" -> "{dst}";'
            assert text.count(line) == count, (name, line)
        assert text.count("->") == len(graph.edges)
        assert all(f'[label="{label}",' in text for _, label in graph.nodes)


def test_long_chain_with_skips_is_drawn_top_to_bottom(tmp_path, no_dot):
    written = draw_arch(Drawable(network=chain_with_skips()), tmp_path, stem="macro")
    assert [p.name for p in written] == ["macro_network.dot", "macro_network.png"]
    height, width = assert_png(tmp_path / "macro_network.png")
    assert height > 2 * width
    assert "rankdir=TB;" in (tmp_path / "macro_network.dot").read_text()


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")
def test_graphviz_renders_the_png_when_installed(tmp_path, monkeypatch):
    def no_matplotlib(*args):
        raise AssertionError("matplotlib was used although dot is installed")
    monkeypatch.setattr(drawing, "_render_matplotlib", no_matplotlib)
    draw_arch(published_arch(), tmp_path)
    assert_png(tmp_path / "arch_normal.png")


def test_failing_graphviz_falls_back_to_matplotlib(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(drawing.shutil, "which", lambda name: str(tmp_path / "missing" / "dot"))
    with caplog.at_level(logging.WARNING, logger="enas.drawing"):
        draw_arch(published_arch(), tmp_path)
    assert_png(tmp_path / "arch_reduce.png")
    assert "graphviz could not render" in caplog.text


def test_broken_renderer_logs_a_warning_and_keeps_the_dot_files(tmp_path, no_dot, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("renderer exploded")
    monkeypatch.setattr(drawing, "_render_matplotlib", broken)
    with caplog.at_level(logging.WARNING, logger="enas.drawing"):
        written = draw_arch(published_arch(), tmp_path)
    assert [p.name for p in written] == ["arch_normal.dot", "arch_reduce.dot"]
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".*.tmp"))
    assert "renderer exploded" in caplog.text


def test_arch_whose_graphs_fail_draws_nothing_without_raising(tmp_path, caplog):
    class Broken:
        def graphs(self):
            raise ValueError("no graph")
    with caplog.at_level(logging.WARNING, logger="enas.drawing"):
        assert draw_arch(Broken(), tmp_path) == []
    assert "no graph" in caplog.text


def test_plot_curves_draws_the_metrics_present(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    records = [{"step": 16 * e, "epoch": e, "shared/loss": 2.3 - 0.1 * e, "shared/acc": 0.1 * e, "lr": 0.05 / e,
                "controller/reward": 0.1 * e, "controller/baseline": 0.05 * e, "controller/entropy": 57.0 - e,
                **({"valid/acc": 0.1 * e} if e % 2 == 0 else {})} for e in range(1, 7)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 112, "epo')  # killed mid-write
    out = plot_curves(metrics, tmp_path / "plots" / "curves.png")
    assert out == tmp_path / "plots" / "curves.png"
    height, width = assert_png(out)
    assert width > height  # five panels: a 3-wide grid, two rows


def test_plot_curves_returns_none_when_there_is_nothing_to_plot(tmp_path):
    assert plot_curves(tmp_path / "missing.jsonl", tmp_path / "curves.png") is None
    only_timings = tmp_path / "metrics.jsonl"
    only_timings.write_text(json.dumps({"step": 1, "epoch": 1, "time/shared_s": 3.0}) + "\n")
    assert plot_curves(only_timings, tmp_path / "curves.png") is None
    assert not (tmp_path / "curves.png").exists()
