"""The ENAS macro architecture as a value: validation, ENAS integer string, JSON, readable table, graph.

Reference: enas_reference.md §2 (melodyguan/enas src/cifar10/general_child.py, `_model`, `_enas_layer`,
`_fixed_layer`) and §5 (the published arc of scripts/cifar10_macro_final.sh). A network of L layers; layer i
runs one op on the output of layer i-1 (the stem for layer 0) and may add skip connections from earlier entries.

Skip indexing follows the child, not the controller: skip_j of layer i (j < i) connects entry j of
[stem, layer 0, ..., layer i-1], i.e. skip_0 is the stem and skip_j (j >= 1) is layer j-1's output. The
immediately preceding layer is always the input and never in the mask, so layer i can skip from the stem and
layers 0..i-2. (`_model` appends the stem and then every layer to `layers`; `_enas_layer`/`_fixed_layer` read
`prev_layers[-1]` as input and `prev_layers[j]` for skip j. The controller pairs skip_j with its own anchor of
layer j, one off from this; the child's meaning is what the network computes.)
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from enas.spaces.base import (JSON_FORMAT, JSON_VERSION, ArchError, ArchFile, ArchGraph, check_enas_string,
                              check_json_header, check_skip_mask, freeze_lists)

OPS = ("conv_3x3", "sep_conv_3x3", "conv_5x5", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3")  # ENAS ids 0..5

# scripts/cifar10_macro_final.sh (melodyguan/enas, identical at commits 014bae1 and 00787a5): one layer per line
PUBLISHED_MACRO = """\
0
3 0
0 1 0
2 0 0 1
2 0 0 0 0
3 1 1 0 1 0
2 0 0 0 0 0 1
2 0 1 1 0 1 1 1
1 0 1 1 1 0 1 0 1
0 0 0 0 0 0 0 0 0 0
2 0 0 0 0 0 1 0 0 0 0
0 1 0 0 1 1 0 0 0 0 1 1
2 0 1 0 0 0 0 0 1 0 1 1 0
1 0 0 1 0 0 0 1 1 1 0 1 0 1
0 1 1 0 1 0 1 0 0 0 0 0 1 0 0
2 0 0 1 0 0 0 0 0 0 0 1 0 1 0 1
2 0 1 0 0 0 1 0 0 1 1 1 1 0 0 1 0
2 0 0 0 0 1 0 1 0 1 0 0 1 0 1 0 0 1
3 0 1 1 0 1 0 0 0 0 0 1 0 1 0 1 0 0 0
3 0 1 1 0 0 0 0 0 0 0 0 0 1 1 0 0 0 0 1
0 1 0 0 1 0 1 1 0 0 0 1 0 0 0 0 0 1 1 0 0
3 0 1 0 1 1 0 0 1 0 1 1 0 1 1 0 1 0 0 1 0 0
0 1 0 1 0 1 0 0 0 0 0 0 0 0 1 0 1 0 0 1 0 0 0
0 1 1 0 0 0 1 1 1 0 1 0 0 0 1 0 1 0 0 1 1 0 0 0
"""

# one line of the script: fixed_arc="0" or fixed_arc="$fixed_arc 3 0"
_SCRIPT_LINE = re.compile(r'^\s*fixed_arc="(?:\$fixed_arc|\$\{fixed_arc\})?([^"]*)"\s*$')


def reduction_layers(num_layers: int) -> tuple[int, ...]:
    """Layers after which the network halves the resolution: pool_distance - 1 and 2 * pool_distance - 1 with
    pool_distance = L // 3 (§2): after layers 3 and 7 for L = 12, 7 and 15 for L = 24; none for L < 3."""
    distance = num_layers // 3
    return (distance - 1, 2 * distance - 1) if distance else ()


def entry_name(j: int) -> str:
    """Entry j of [stem, layer 0, layer 1, ...]: what skip_j points at."""
    return "stem" if j == 0 else f"layer {j - 1}"


@dataclass(frozen=True)
class MacroLayer:
    """One layer: its op and its skip mask, skips[j] = 1 connects entry j of [stem, layer 0, ...]."""

    op: str
    skips: tuple[int, ...]

    def __post_init__(self) -> None:
        freeze_lists(self, "skips")

    def skip_sources(self) -> tuple[int, ...]:
        """Entry indices (0 = stem, j = layer j-1) whose outputs this layer adds or concatenates."""
        return tuple(j for j, s in enumerate(self.skips) if s == 1)


@dataclass(frozen=True)
class MacroArch(ArchFile):
    layers: tuple[MacroLayer, ...]

    def __post_init__(self) -> None:
        freeze_lists(self, "layers")
        if not self.layers:
            raise ArchError("a macro architecture needs at least one layer")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, MacroLayer):
                raise ArchError(f"layer {i}: expected a MacroLayer(op, skips), got {layer!r}")
            if layer.op not in OPS:
                raise ArchError(f"layer {i}: op {layer.op!r} is unknown; allowed {', '.join(OPS)}")
            check_skip_mask(i, layer.skips, f"entry of [stem, layer 0, ..., layer {i - 1}] before the input")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    # --- the ENAS integer string: per layer i, `op skip_0 .. skip_{i-1}` ---
    def to_ints(self) -> list[int]:
        return [v for layer in self.layers for v in (OPS.index(layer.op), *layer.skips)]

    def to_enas_string(self) -> str:
        return " ".join(map(str, self.to_ints()))

    @classmethod
    def from_ints(cls, ints: list[int]) -> "MacroArch":
        num_layers = _num_layers_of(len(ints))
        layers, k = [], 0
        for i in range(num_layers):
            op, skips = ints[k], ints[k + 1:k + 1 + i]
            k += 1 + i
            if not 0 <= op < len(OPS):
                raise ArchError(f"layer {i}: op id {op} is unknown; allowed 0..{len(OPS) - 1} "
                                f"({', '.join(f'{n}={name}' for n, name in enumerate(OPS))})")
            layers.append(MacroLayer(OPS[op], tuple(skips)))
        return cls(tuple(layers))

    @classmethod
    def from_enas_string(cls, text: str) -> "MacroArch":
        """One line, one layer per line, or the script's `fixed_arc="$fixed_arc ..."` lines."""
        if not isinstance(text, str):
            raise ArchError(f"an ENAS macro string is a str, got {type(text).__name__}")
        lines = [m.group(1) if (m := _SCRIPT_LINE.match(line)) else line for line in text.splitlines()]
        try:
            ints = [int(t) for t in " ".join(lines).split()]
        except ValueError:
            raise ArchError(f"an ENAS macro string holds integers separated by spaces, got {text!r}") from None
        return cls.from_ints(ints)

    # --- JSON ---
    def to_json(self) -> dict:
        return {"format": JSON_FORMAT, "version": JSON_VERSION, "space": "macro", "num_layers": self.num_layers,
                "layers": [{"op": layer.op, "skips": list(layer.skip_sources())} for layer in self.layers],
                "enas_string": self.to_enas_string()}

    @classmethod
    def from_json(cls, data: dict) -> "MacroArch":
        check_json_header(data, "macro")
        layers = data.get("layers")
        if not isinstance(layers, list) or not layers:
            raise ArchError(f"expected 'layers': a non-empty list of {{'op': name, 'skips': [entry, ...]}}, "
                            f"got {layers!r}")
        if "num_layers" in data and data["num_layers"] != len(layers):
            raise ArchError(f"has {len(layers)} layers but num_layers is {data['num_layers']!r}")
        arch = cls(tuple(_layer_from_json(i, layer) for i, layer in enumerate(layers)))
        check_enas_string(data, arch, "layers")
        return arch

    # --- views ---
    def __str__(self) -> str:
        reductions = reduction_layers(self.num_layers)
        rows = [f"macro network, {self.num_layers} layers (input: the previous layer; skips add earlier outputs)",
                f"  {'layer':>5} | {'op':<12} | {'input':<8} | skips from"]
        for i, layer in enumerate(self.layers):
            skips = ", ".join(entry_name(j) for j in layer.skip_sources()) or "-"
            note = "  [then reduce]" if i in reductions else ""
            rows.append(f"  {i:>5} | {layer.op:<12} | {entry_name(i):<8} | {skips}{note}")
        rows.append(f"ENAS string: {self.to_enas_string()}")
        return "\n".join(rows)

    def graphs(self) -> dict[str, ArchGraph]:
        """{"network": ...}: stem, one node per layer labelled by its op, output; the chain and the skips."""
        ids = ["stem"] + [f"layer_{i}" for i in range(self.num_layers)]
        nodes = [("stem", "stem")] + [(ids[i + 1], f"{i}: {layer.op}") for i, layer in enumerate(self.layers)]
        edges = [(ids[i], ids[i + 1], "") for i in range(self.num_layers)]
        edges += [(ids[j], ids[i + 1], "") for i, layer in enumerate(self.layers) for j in layer.skip_sources()]
        edges.append((ids[-1], "output", ""))
        return {"network": ArchGraph(tuple(nodes + [("output", "output")]), tuple(edges), ("stem",), "output")}


def _num_layers_of(count: int) -> int:
    """L such that count = L(L+1)/2 (1 op + i skips for layer i), or an ArchError."""
    num_layers = 0
    while num_layers * (num_layers + 1) // 2 < count:
        num_layers += 1
    if count == 0 or num_layers * (num_layers + 1) // 2 != count:
        raise ArchError(f"an ENAS macro string has L(L+1)/2 integers for L layers (1, 3, 6, 10, ..., 78 for 12, "
                        f"300 for 24: op skip_0 .. skip_(i-1) per layer i), got {count}")
    return num_layers


def _layer_from_json(i: int, layer) -> MacroLayer:
    if not isinstance(layer, dict) or set(layer) != {"op", "skips"} or not isinstance(layer["skips"], list):
        raise ArchError(f"layer {i}: expected {{'op': name, 'skips': [entry, ...]}}, got {layer!r}")
    sources = layer["skips"]
    for j in sources:
        if type(j) is not int or not 0 <= j < i:
            raise ArchError(f"layer {i}: skip source {j!r} is out of range; allowed 0..{i - 1} "
                            f"(0 = stem, j = layer j-1; the input layer {i - 1} is never a skip)"
                            if i else f"layer 0: skip source {j!r}; layer 0 takes no skips")
    if len(set(sources)) != len(sources):
        raise ArchError(f"layer {i}: skip sources {sources} repeat an entry")
    return MacroLayer(layer["op"], tuple(int(j in sources) for j in range(i)))


def published_macro_arch() -> MacroArch:
    """The 24-layer network found by ENAS macro search (scripts/cifar10_macro_final.sh)."""
    return MacroArch.from_enas_string(PUBLISHED_MACRO)
