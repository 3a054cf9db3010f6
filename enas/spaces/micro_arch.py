"""The ENAS micro (cell) architecture as a value: validation, ENAS integer string, JSON, readable table.

Reference: enas_reference.md §1.1 (cell definition, arc encoding `index_1 op_1 index_2 op_2` per node, normal
cell first) and §5 (the two published cells). Nodes 0 and 1 are the cell inputs (outputs of the two previous
cells); computed node k (k >= 2) picks two inputs among nodes 0..k-1 and one op for each, and adds the results.
"""
from __future__ import annotations

from dataclasses import dataclass

from enas.spaces.base import (JSON_FORMAT, JSON_VERSION, ArchError, ArchFile, ArchGraph, check_enas_string,
                              check_json_header)

OPS = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "identity")  # ENAS op ids 0..4
NUM_INPUT_NODES = 2

# enas_reference.md §5: scripts/cifar10_micro_final.sh
PUBLISHED_NORMAL = "0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1"
PUBLISHED_REDUCE = "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1"


@dataclass(frozen=True)
class Node:
    """One computed node: op_a(node input_a) + op_b(node input_b)."""

    input_a: int
    op_a: str
    input_b: int
    op_b: str


@dataclass(frozen=True)
class Cell:
    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ArchError("a cell needs at least one computed node")
        for k, node in enumerate(self.nodes, start=NUM_INPUT_NODES):
            for slot, index, op in (("a", node.input_a, node.op_a), ("b", node.input_b, node.op_b)):
                if not isinstance(index, int) or not 0 <= index < k:
                    raise ArchError(f"node {k}: input_{slot} = {index!r} is out of range; allowed 0..{k - 1} "
                                    f"(the two cell inputs and the nodes before node {k})")
                if op not in OPS:
                    raise ArchError(f"node {k}: op_{slot} = {op!r} is unknown; allowed {', '.join(OPS)}")

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    def used_inputs(self) -> frozenset[int]:
        return frozenset(i for node in self.nodes for i in (node.input_a, node.input_b))

    def loose_ends(self) -> tuple[int, ...]:
        """Nodes (cell inputs included) that no node reads: the cell output concatenates them (§1.3)."""
        used = self.used_inputs()
        return tuple(k for k in range(NUM_INPUT_NODES + self.num_nodes) if k not in used)

    def to_ints(self) -> list[int]:
        out: list[int] = []
        for node in self.nodes:
            out += [node.input_a, OPS.index(node.op_a), node.input_b, OPS.index(node.op_b)]
        return out

    @classmethod
    def from_ints(cls, ints: list[int]) -> "Cell":
        if len(ints) % 4 or not ints:
            raise ArchError(f"a cell needs 4 integers per node (index_1 op_1 index_2 op_2), got {len(ints)}")
        nodes = []
        for k in range(len(ints) // 4):
            ia, oa, ib, ob = ints[4 * k: 4 * k + 4]
            for slot, op in (("1", oa), ("2", ob)):
                if not 0 <= op < len(OPS):
                    raise ArchError(f"node {k + NUM_INPUT_NODES}: op_{slot} = {op} is unknown; allowed 0..{len(OPS) - 1} "
                                    f"({', '.join(f'{i}={name}' for i, name in enumerate(OPS))})")
            nodes.append(Node(ia, OPS[oa], ib, OPS[ob]))
        return cls(tuple(nodes))

    def table(self, title: str) -> str:
        rows = [f"{title} (output: concat of nodes {', '.join(map(str, self.loose_ends()))})",
                f"  {'node':>4} | {'input a':>7} | {'op a':<13} | {'input b':>7} | {'op b':<13}"]
        for k, n in enumerate(self.nodes, start=NUM_INPUT_NODES):
            rows.append(f"  {k:>4} | {n.input_a:>7} | {n.op_a:<13} | {n.input_b:>7} | {n.op_b:<13}")
        return "\n".join(rows)


def _named(cell_name: str, build):
    """Run a cell constructor and put the cell's name in front of any error."""
    try:
        return build()
    except ArchError as e:
        raise ArchError(f"{cell_name} cell, {e}") from None


@dataclass(frozen=True)
class MicroArch(ArchFile):
    """A normal cell and a reduction cell with the same number of computed nodes."""

    normal: Cell
    reduce: Cell

    def __post_init__(self) -> None:
        if self.normal.num_nodes != self.reduce.num_nodes:
            raise ArchError(f"normal cell has {self.normal.num_nodes} nodes but reduce cell has "
                            f"{self.reduce.num_nodes}; both cells must have the same number")

    @property
    def num_nodes(self) -> int:
        return self.normal.num_nodes

    def cells(self) -> dict[str, Cell]:
        return {"normal": self.normal, "reduce": self.reduce}

    def graphs(self) -> dict[str, ArchGraph]:
        """{"normal", "reduce"}: cell figures as in the ENAS and DARTS papers.

        Inputs c_{k-2}, c_{k-1} (ids "0", "1"), computed nodes "2".."B+1" with one op-labelled edge per input,
        and the output c_{k} fed by unlabelled edges from the loose ends it concatenates.
        """
        graphs = {}
        for name, cell in self.cells().items():
            computed = [(str(k), str(k)) for k in range(NUM_INPUT_NODES, NUM_INPUT_NODES + cell.num_nodes)]
            nodes = (("0", "c_{k-2}"), ("1", "c_{k-1}"), *computed, ("c_{k}", "c_{k}"))
            edges = [(str(i), str(k), op) for k, n in enumerate(cell.nodes, start=NUM_INPUT_NODES)
                     for i, op in ((n.input_a, n.op_a), (n.input_b, n.op_b))]
            edges += [(str(k), "c_{k}", "") for k in cell.loose_ends()]
            graphs[name] = ArchGraph(nodes, tuple(edges), ("0", "1"), "c_{k}")
        return graphs

    # --- the ENAS integer string (normal cell's 4B ints, then the reduction cell's) ---
    def to_enas_string(self) -> str:
        return " ".join(map(str, self.normal.to_ints() + self.reduce.to_ints()))

    @classmethod
    def from_enas_string(cls, text: str, num_nodes: int | None = None) -> "MicroArch":
        try:
            ints = [int(t) for t in text.split()]
        except ValueError:
            raise ArchError(f"an ENAS micro string holds integers separated by spaces, got {text!r}") from None
        return cls.from_ints(ints, num_nodes)

    @classmethod
    def from_ints(cls, ints: list[int], num_nodes: int | None = None) -> "MicroArch":
        """From the ENAS integers: the normal cell's 4B (index_1 op_1 index_2 op_2 per node), then the reduce cell's."""
        if len(ints) % 8 or not ints or (num_nodes is not None and len(ints) != 8 * num_nodes):
            want = f"{8 * num_nodes}" if num_nodes else "8 per node (4 per node and cell)"
            raise ArchError(f"an ENAS micro string has {want} integers (normal cell then reduce cell), got {len(ints)}")
        half = len(ints) // 2
        return cls(_named("normal", lambda: Cell.from_ints(ints[:half])),
                   _named("reduce", lambda: Cell.from_ints(ints[half:])))

    # --- JSON ---
    def to_json(self) -> dict:
        def cell_json(cell: Cell) -> list[dict]:
            return [{"inputs": [n.input_a, n.input_b], "ops": [n.op_a, n.op_b]} for n in cell.nodes]
        return {"format": JSON_FORMAT, "version": JSON_VERSION, "space": "micro", "num_nodes": self.num_nodes,
                "normal": cell_json(self.normal), "reduce": cell_json(self.reduce),
                "enas_string": self.to_enas_string()}

    @classmethod
    def from_json(cls, data: dict) -> "MicroArch":
        check_json_header(data, "micro")
        arch = cls(_named("normal", lambda: _cell_from_json(data.get("normal"), data.get("num_nodes"))),
                   _named("reduce", lambda: _cell_from_json(data.get("reduce"), data.get("num_nodes"))))
        check_enas_string(data, arch, "cells")
        return arch

    def __str__(self) -> str:
        return (f"{self.normal.table('normal cell')}\n{self.reduce.table('reduce cell')}\n"
                f"ENAS string: {self.to_enas_string()}")


def _cell_from_json(nodes, num_nodes) -> Cell:
    if not isinstance(nodes, list) or not nodes:
        raise ArchError(f"expected a non-empty list of nodes, got {nodes!r}")
    if num_nodes is not None and len(nodes) != num_nodes:
        raise ArchError(f"has {len(nodes)} nodes but num_nodes is {num_nodes}")
    parsed = []
    for k, node in enumerate(nodes, start=NUM_INPUT_NODES):
        inputs, ops = (node.get("inputs"), node.get("ops")) if isinstance(node, dict) else (None, None)
        if not (isinstance(inputs, list) and isinstance(ops, list) and len(inputs) == 2 and len(ops) == 2):
            raise ArchError(f"node {k}: expected {{'inputs': [a, b], 'ops': [op_a, op_b]}}, got {node!r}")
        parsed.append(Node(inputs[0], ops[0], inputs[1], ops[1]))
    return Cell(tuple(parsed))


def published_arch() -> MicroArch:
    """The cells found by ENAS in the paper (scripts/cifar10_micro_final.sh)."""
    return MicroArch.from_enas_string(f"{PUBLISHED_NORMAL} {PUBLISHED_REDUCE}")
