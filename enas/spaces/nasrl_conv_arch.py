"""The NAS-RL layer-wise CNN architecture as a value: validation, integer string, JSON, readable table, graph.

Reference: Zoph & Le, "Neural Architecture Search with Reinforcement Learning", ICLR 2017, §3.1-3.3 and §4.1
(CIFAR-10 search). Per layer i: filter height and width in {1, 3, 5, 7}, number of filters in {24, 36, 48, 64},
stride 1; for i > 0 one yes/no per earlier layer j < i (the anchor-point skip connections, §3.3). The inputs of a
layer are exactly its chosen skips, concatenated along depth; there is no fixed chain to the previous layer.
Their three fixes for invalid graphs (§3.3) read off this value: a layer with no skip takes the image; every
layer that no later layer reads (the last one included) feeds the classifier, concatenated.

The integer string is one rollout of the controller: per layer i `height_id width_id filters_id skip_0 ..
skip_{i-1}` with ids indexing the tuples below, 3L + L(L-1)/2 integers for L layers.
"""
from __future__ import annotations

from dataclasses import dataclass

from enas.spaces.base import (JSON_FORMAT, JSON_VERSION, ArchError, ArchFile, ArchGraph, check_enas_string,
                              check_json_header, check_skip_mask, freeze_lists)

SPACE = "nasrl_conv"
FILTER_HEIGHTS = (1, 3, 5, 7)  # Zoph & Le §4.1, CIFAR-10
FILTER_WIDTHS = (1, 3, 5, 7)
NUM_FILTERS = (24, 36, 48, 64)
# field name -> allowed values, in the order a layer's decisions are sampled (and its ints written)
CHOICES = {"filter_height": FILTER_HEIGHTS, "filter_width": FILTER_WIDTHS, "num_filters": NUM_FILTERS}


@dataclass(frozen=True)
class NasrlConvLayer:
    """One conv layer; skips[j] = 1 makes layer j's output one of its (concatenated) inputs."""

    filter_height: int
    filter_width: int
    num_filters: int
    skips: tuple[int, ...]

    def __post_init__(self) -> None:
        freeze_lists(self, "skips")

    def sources(self) -> tuple[int, ...]:
        """Earlier layers this layer reads; empty: it reads the image."""
        return tuple(j for j, s in enumerate(self.skips) if s == 1)


@dataclass(frozen=True)
class NasrlConvArch(ArchFile):
    layers: tuple[NasrlConvLayer, ...]

    def __post_init__(self) -> None:
        freeze_lists(self, "layers")
        if not self.layers:
            raise ArchError("a nasrl_conv architecture needs at least one layer")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, NasrlConvLayer):
                raise ArchError(f"layer {i}: expected a NasrlConvLayer(filter_height, filter_width, num_filters, "
                                f"skips), got {layer!r}")
            for name, allowed in CHOICES.items():
                value = getattr(layer, name)
                if type(value) is not int or value not in allowed:
                    raise ArchError(f"layer {i}: {name} {value!r} is not allowed; allowed "
                                    f"{', '.join(map(str, allowed))}")
            check_skip_mask(i, layer.skips, f"earlier layer 0..{i - 1}" if i else "earlier layer (layer 0 has none)")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def output_layers(self) -> tuple[int, ...]:
        """Layers the classifier reads: every layer no later layer reads, the last one always among them."""
        read = {j for layer in self.layers for j in layer.sources()}
        return tuple(i for i in range(self.num_layers) if i not in read)

    # --- the integer string: per layer i, `height_id width_id filters_id skip_0 .. skip_{i-1}` ---
    def to_ints(self) -> list[int]:
        return [v for layer in self.layers
                for v in (*(allowed.index(getattr(layer, name)) for name, allowed in CHOICES.items()), *layer.skips)]

    def to_enas_string(self) -> str:
        return " ".join(map(str, self.to_ints()))

    @classmethod
    def from_ints(cls, ints: list[int]) -> "NasrlConvArch":
        num_layers = num_layers_of(len(ints))
        layers, k = [], 0
        for i in range(num_layers):
            values = []
            for (name, allowed), index in zip(CHOICES.items(), ints[k:k + 3]):
                if type(index) is not int or not 0 <= index < len(allowed):
                    raise ArchError(f"layer {i}: {name} id {index!r} is unknown; allowed 0..{len(allowed) - 1} "
                                    f"({', '.join(f'{n}={v}' for n, v in enumerate(allowed))})")
                values.append(allowed[index])
            layers.append(NasrlConvLayer(*values, tuple(ints[k + 3:k + 3 + i])))
            k += 3 + i
        return cls(tuple(layers))

    @classmethod
    def from_enas_string(cls, text: str) -> "NasrlConvArch":
        """Integers separated by spaces or newlines (one layer per line reads best)."""
        if not isinstance(text, str):
            raise ArchError(f"a nasrl_conv string is a str, got {type(text).__name__}")
        try:
            ints = [int(t) for t in text.split()]
        except ValueError:
            raise ArchError(f"a nasrl_conv string holds integers separated by spaces, got {text!r}") from None
        return cls.from_ints(ints)

    # --- JSON ---
    def to_json(self) -> dict:
        return {"format": JSON_FORMAT, "version": JSON_VERSION, "space": SPACE, "num_layers": self.num_layers,
                "layers": [{**{name: getattr(layer, name) for name in CHOICES}, "skips": list(layer.sources())}
                           for layer in self.layers],
                "enas_string": self.to_enas_string()}

    @classmethod
    def from_json(cls, data: dict) -> "NasrlConvArch":
        check_json_header(data, SPACE)
        layers = data.get("layers")
        if not isinstance(layers, list) or not layers:
            raise ArchError(f"expected 'layers': a non-empty list of {{'filter_height': h, 'filter_width': w, "
                            f"'num_filters': n, 'skips': [layer, ...]}}, got {layers!r}")
        if "num_layers" in data and data["num_layers"] != len(layers):
            raise ArchError(f"has {len(layers)} layers but num_layers is {data['num_layers']!r}")
        arch = cls(tuple(_layer_from_json(i, layer) for i, layer in enumerate(layers)))
        check_enas_string(data, arch, "layers")
        return arch

    # --- views ---
    def __str__(self) -> str:
        rows = [f"nasrl_conv network, {self.num_layers} layers (conv-BN-ReLU, stride 1; inputs concatenated along "
                "depth; no input: the image)",
                f"  {'layer':>5} | {'filter':<6} | {'filters':>7} | inputs"]
        for i, layer in enumerate(self.layers):
            inputs = ", ".join(f"layer {j}" for j in layer.sources()) or "image"
            rows.append(f"  {i:>5} | {layer.filter_height}x{layer.filter_width:<4} | {layer.num_filters:>7} | {inputs}")
        outputs = self.output_layers()
        channels = sum(self.layers[i].num_filters for i in outputs)
        rows.append(f"classifier reads: {', '.join(f'layer {i}' for i in outputs)} ({channels} channels; every output "
                    "no later layer reads, concatenated)")
        rows.append(f"ENAS string: {self.to_enas_string()}")
        return "\n".join(rows)

    def graphs(self) -> dict[str, ArchGraph]:
        """{"network": ...}: the image, one node per layer labelled by its conv, the output; every input edge."""
        ids = [f"layer_{i}" for i in range(self.num_layers)]
        nodes = [("image", "image")] + [(ids[i], f"{i}: {layer.filter_height}x{layer.filter_width} conv, "
                                         f"{layer.num_filters}") for i, layer in enumerate(self.layers)]
        edges = [(ids[j] if j is not None else "image", ids[i], "")
                 for i, layer in enumerate(self.layers) for j in (layer.sources() or (None,))]
        edges += [(ids[i], "output", "") for i in self.output_layers()]
        return {"network": ArchGraph(tuple(nodes + [("output", "output")]), tuple(edges), ("image",), "output")}


def num_choices_of(num_layers: int) -> int:
    """Integers of an L-layer string: 3 decisions per layer and i skips for layer i."""
    return 3 * num_layers + num_layers * (num_layers - 1) // 2


def num_layers_of(count: int) -> int:
    """L such that count = 3L + L(L-1)/2, or an ArchError."""
    num_layers = 0
    while num_choices_of(num_layers) < count:
        num_layers += 1
    if count == 0 or num_choices_of(num_layers) != count:
        raise ArchError(f"a nasrl_conv string has 3L + L(L-1)/2 integers for L layers (3, 7, 12, 18, ..., 33 for 6: "
                        f"height width filters skip_0 .. skip_(i-1) per layer i), got {count}")
    return num_layers


def _layer_from_json(i: int, layer) -> NasrlConvLayer:
    keys = {*CHOICES, "skips"}
    if not isinstance(layer, dict) or set(layer) != keys or not isinstance(layer["skips"], list):
        raise ArchError(f"layer {i}: expected {{'filter_height': h, 'filter_width': w, 'num_filters': n, "
                        f"'skips': [layer, ...]}}, got {layer!r}")
    sources = layer["skips"]
    for j in sources:
        if type(j) is not int or not 0 <= j < i:
            raise ArchError(f"layer {i}: skip source {j!r} is out of range; allowed earlier layers 0..{i - 1}"
                            if i else f"layer 0: skip source {j!r}; layer 0 reads only the image")
    if len(set(sources)) != len(sources):
        raise ArchError(f"layer {i}: skip sources {sources} repeat a layer")
    return NasrlConvLayer(*(layer[name] for name in CHOICES), tuple(int(j in sources) for j in range(i)))
