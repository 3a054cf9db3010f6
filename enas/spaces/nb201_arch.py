"""The NAS-Bench-201 cell as a value: validation, the benchmark's arch string, ENAS integers, JSON, table, graph.

Reference: shared/reference/nb201.md §1 (AutoDL-Projects `cell_operations.py`, `genotypes.py` `Structure.tostr` /
`str2structure`). A cell has 4 nodes: node 0 is its input, node j (1..3) sums op_ij(node i) over i < j, and the
cell output is node 3. One op per edge of the complete DAG, so 5^6 = 15,625 cells. Edges and op indices are in
the benchmark's order (the string's, the supernet's and a controller's): 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.
The string `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` lists each node's incoming edges, sources ascending, `none`
kept; the benchmark looks it up by exact match, so it is parsed strictly and always emitted in that form.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache

from enas.spaces.base import (JSON_FORMAT, JSON_VERSION, ArchError, ArchFile, ArchGraph, check_enas_string,
                              check_json_header, freeze_lists)

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")  # NB201 op indices 0..4
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (target, source), the benchmark's edge order
NUM_NODES = 4
OUTPUT_NODE = NUM_NODES - 1
SPACE = "nb201"
STRING_FORM = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"

# nb201.md §1, §4, §6: benchmark index 1, the all-skip cell (index 1835, what ENAS and DARTS return on NB201),
# the all-conv3x3 cell (index 1462) and the best CIFAR-10 cell (index 6111)
INDEX_1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
BEST_CIFAR10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def edge_name(k: int) -> str:
    target, source = EDGES[k]
    return f"edge {target}<-{source}"


def _allowed_ids() -> str:
    return f"allowed 0..{len(OPS) - 1} ({', '.join(f'{i}={name}' for i, name in enumerate(OPS))})"


@dataclass(frozen=True)
class Nb201Arch(ArchFile):
    """The six edge ops, in EDGES order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        freeze_lists(self, "ops")
        if not isinstance(self.ops, tuple) or len(self.ops) != len(EDGES):
            raise ArchError(f"a NAS-Bench-201 cell has {len(EDGES)} edge ops "
                            f"({', '.join(edge_name(k)[5:] for k in range(len(EDGES)))}), got {self.ops!r}")
        for k, op in enumerate(self.ops):
            if op not in OPS:
                raise ArchError(f"{edge_name(k)}: op {op!r} is unknown; allowed {', '.join(OPS)}")

    # --- structure ---
    def used_edges(self) -> tuple[int, ...]:
        """Edges that can change the cell output: not `none`, into node 3 or into a node that feeds it."""
        return _used_edges(self.ops)

    @property
    def is_dead(self) -> bool:
        """No path of non-`none` edges from the input to the output: every input gives the same output
        (nb201.md §1: 341 such cells, all at 10.00%)."""
        reached = {0}
        for k, (target, source) in enumerate(EDGES):  # sources precede targets in EDGES order
            if self.ops[k] != "none" and source in reached:
                reached.add(target)
        return OUTPUT_NODE not in reached

    # --- the benchmark's string ---
    def to_bench_string(self) -> str:
        nodes = ["|" + "|".join(f"{self.ops[k]}~{s}" for k, (t, s) in enumerate(EDGES) if t == target) + "|"
                 for target in range(1, NUM_NODES)]
        return "+".join(nodes)

    @classmethod
    def from_bench_string(cls, text: str) -> Nb201Arch:
        if not isinstance(text, str):
            raise ArchError(f"a NAS-Bench-201 string is a str, got {type(text).__name__}")
        parts = text.strip().split("+")
        if len(parts) != NUM_NODES - 1:
            raise ArchError(f"NAS-Bench-201 string {text!r} has {len(parts)} node(s) separated by '+'; expected "
                            f"{NUM_NODES - 1} (nodes 1, 2, 3) in the form {STRING_FORM}")
        ops: list[str] = []
        for target, part in enumerate(parts, start=1):
            ops += _parse_node(target, part)
        return cls(tuple(ops))

    # --- ENAS integers: the six op indices, the controller's choices ---
    def to_ints(self) -> list[int]:
        return [OPS.index(op) for op in self.ops]

    @classmethod
    def from_ints(cls, ints: Sequence[int]) -> Nb201Arch:
        if len(ints) != len(EDGES):
            raise ArchError(f"a NAS-Bench-201 cell has {len(EDGES)} op indices (edges 1<-0, 2<-0, 2<-1, 3<-0, "
                            f"3<-1, 3<-2), got {len(ints)}")
        for k, v in enumerate(ints):
            if type(v) is not int or not 0 <= v < len(OPS):
                raise ArchError(f"{edge_name(k)}: op index {v!r} is unknown; {_allowed_ids()}")
        return cls(tuple(OPS[v] for v in ints))

    def to_enas_string(self) -> str:
        return " ".join(map(str, self.to_ints()))

    @classmethod
    def from_enas_string(cls, text: str) -> Nb201Arch:
        if not isinstance(text, str):
            raise ArchError(f"an NB201 ENAS string is a str, got {type(text).__name__}")
        try:
            ints = [int(t) for t in text.split()]
        except ValueError:
            raise ArchError(f"an NB201 ENAS string holds 6 op indices separated by spaces, got {text!r}") from None
        return cls.from_ints(ints)

    # --- JSON ---
    def to_json(self) -> dict:
        return {"format": JSON_FORMAT, "version": JSON_VERSION, "space": SPACE,
                "bench_string": self.to_bench_string(), "enas_string": self.to_enas_string()}

    @classmethod
    def from_json(cls, data: dict) -> Nb201Arch:
        check_json_header(data, SPACE)
        if "bench_string" not in data:
            raise ArchError(f"an nb201 architecture file needs 'bench_string' ({STRING_FORM})")
        arch = cls.from_bench_string(data["bench_string"])
        check_enas_string(data, arch, "bench_string")
        return arch

    # --- views ---
    def __str__(self) -> str:
        width = max(map(len, OPS))
        rows = ["NAS-Bench-201 cell (node j = sum of op(node i) over i < j; output: node 3"
                + (", dead: no path from the input" if self.is_dead else "") + ")",
                (f"  {'node':>4} | " + " | ".join(f"{f'from {i}':<{width}}" for i in range(OUTPUT_NODE))).rstrip()]
        for target in range(1, NUM_NODES):
            cells = [self.ops[EDGES.index((target, i))] for i in range(target)]
            rows.append(f"  {target:>4} | " + " | ".join(f"{c:<{width}}" for c in cells).rstrip())
        rows.append(f"bench string: {self.to_bench_string()}")
        return "\n".join(rows)

    def graphs(self) -> dict[str, ArchGraph]:
        """{"cell": ...}: nodes 0 (input) .. 3 (output), one edge per non-`none` op, labelled with it."""
        nodes = (("0", "0 (input)"), ("1", "1"), ("2", "2"), ("3", "3 (output)"))
        edges = tuple((str(s), str(t), op) for (t, s), op in zip(EDGES, self.ops) if op != "none")
        return {"cell": ArchGraph(nodes, edges, ("0",), str(OUTPUT_NODE))}


def _parse_node(target: int, part: str) -> list[str]:
    """The ops of node `target`'s incoming edges from its part `|op~0|...|op~{target-1}|` of the string."""
    where = f"node {target} ({part!r})"
    if len(part) < 2 or not (part.startswith("|") and part.endswith("|")):
        raise ArchError(f"{where}: each node's edges are wrapped in '|', as in {STRING_FORM}")
    tokens = part[1:-1].split("|")
    if len(tokens) != target:
        raise ArchError(f"{where}: lists {len(tokens)} incoming edge(s); node {target} has {target} "
                        f"(from nodes {', '.join(map(str, range(target)))}, in that order)")
    ops = []
    for source, token in enumerate(tokens):
        op, sep, src = token.partition("~")
        if not sep:
            raise ArchError(f"{where}: edge {token!r} is not 'op~source'")
        if src != str(source):
            raise ArchError(f"{where}: edge {token!r} has source {src!r}; expected {source} "
                            f"(sources ascending from 0)")
        if op not in OPS:
            raise ArchError(f"{where}: op {op!r} is unknown; allowed {', '.join(OPS)}")
        ops.append(op)
    return ops


@cache
def _used_edges(ops: tuple[str, ...]) -> tuple[int, ...]:
    used_nodes = {OUTPUT_NODE}
    for k in reversed(range(len(EDGES))):  # targets follow sources, so walk back from the output
        target, source = EDGES[k]
        if ops[k] != "none" and target in used_nodes:
            used_nodes.add(source)
    return tuple(k for k, (target, _) in enumerate(EDGES) if ops[k] != "none" and target in used_nodes)


def all_archs() -> Iterator[Nb201Arch]:
    """The 15,625 cells, edge 1<-0 varying slowest."""
    for ops in itertools.product(OPS, repeat=len(EDGES)):
        yield Nb201Arch(ops)
