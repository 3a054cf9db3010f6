"""What every search space provides, and the step list a controller walks.

DESIGN.md: every strategy is a sampler plus a judge over a search space. The controller knows decision
steps, never spaces; a space turns a sequence of sampled choices into its architecture value and back.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import torch
from torch import nn

from enas.files import write_json_atomic

JSON_FORMAT, JSON_VERSION = "enas-arch", 1  # the header of every architecture file (best_arch.json, ...)


class ArchError(ValueError):
    """An architecture (string, JSON or value) that the space does not allow; the message says where and why."""


STEP_KINDS = ("anchor", "input", "op", "skip")


def check_json_header(data, space: str) -> None:
    """Raise ArchError unless `data` is an architecture object of this format, version and space."""
    if not isinstance(data, dict):
        raise ArchError(f"an architecture file holds a JSON object, got {type(data).__name__}")
    if data.get("format") != JSON_FORMAT or data.get("version") != JSON_VERSION:
        raise ArchError(f"unsupported architecture file: format={data.get('format')!r} "
                        f"version={data.get('version')!r}; expected format={JSON_FORMAT!r} version={JSON_VERSION}")
    if data.get("space") != space:
        raise ArchError(f"architecture space is {data.get('space')!r}; this loader reads {space!r}")


def check_enas_string(data: dict, arch, parts: str) -> None:
    """An optional "enas_string" in a file must encode the same architecture as its structured `parts`."""
    if "enas_string" in data and (not isinstance(data["enas_string"], str)
                                  or data["enas_string"].split() != arch.to_enas_string().split()):
        raise ArchError(f"enas_string {data['enas_string']!r} does not match the {parts}, which encode "
                        f"{arch.to_enas_string()!r}")


def freeze_lists(value, *fields: str) -> None:
    """In a frozen dataclass's __post_init__: turn list fields (as JSON gives them) into tuples."""
    for name in fields:
        if isinstance(getattr(value, name), list):
            object.__setattr__(value, name, tuple(getattr(value, name)))


def check_skip_mask(layer: int, skips, entries: str) -> None:
    """Layer `layer`'s skip mask is a tuple of `layer` values of 0/1, one per earlier entry (`entries` names them)."""
    if not isinstance(skips, tuple) or len(skips) != layer:
        raise ArchError(f"layer {layer}: skips {skips!r} must hold {layer} values of 0/1, one per {entries}")
    for j, s in enumerate(skips):
        if type(s) is not int or s not in (0, 1):
            raise ArchError(f"layer {layer}: skip_{j} = {s!r}; allowed 0 or 1")


class ArchFile:
    """`save`/`load` for architecture values that have `to_json` / `from_json`."""

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path):
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ArchError(f"architecture file {str(path)!r} does not exist") from None
        except json.JSONDecodeError as e:
            raise ArchError(f"architecture file {str(path)!r} is not valid JSON: {e}") from None
        return cls.from_json(data)


@dataclass(frozen=True)
class Step:
    """One step of a controller rollout.

    kind:
      "anchor": an LSTM step whose output becomes an attention anchor (a node the later input choices can
                point at); the next step's input is the start embedding again. `feed_zero` anchors feed back a
                zero vector when chosen (the ENAS micro controller's two cell inputs).
      "input":  choose one of the first `num_choices` anchors of the current block by additive attention;
                the chosen anchor is the next input.
      "op":     choose one of `num_choices` operations (or values of `vocab`); its embedding is the next input.
      "skip":   an anchor step that also decides, for each of the first `num_choices` anchors of the block,
                whether to connect it (an independent yes/no by additive attention, ENAS macro §3.3); it
                contributes `num_choices` 0/1 columns to a rollout, and the next input is the sum of the chosen
                anchors / (1 + #chosen). Its own output then becomes an anchor.
    block: anchors are reset when the block changes (one block per cell).
    logit_bias: a fixed bias added after the tanh shaping (ENAS micro normal cell), or None.
    vocab: which decision an op step takes; op steps of one vocab share an embedding and a softmax (and so a
           choice count). "op" is the ENAS op choice; other names (NAS-RL's "filter_height", ...) get their own.
    """

    kind: str
    num_choices: int = 0
    block: int = 0
    feed_zero: bool = False
    logit_bias: tuple[float, ...] | None = None
    vocab: str = "op"

    def __post_init__(self) -> None:
        if self.kind not in STEP_KINDS:
            raise ValueError(f"step kind {self.kind!r} is not one of {', '.join(map(repr, STEP_KINDS))}")
        if self.kind != "anchor" and self.num_choices < 1:
            raise ValueError(f"a {self.kind!r} step needs num_choices >= 1, got {self.num_choices}")
        if self.logit_bias is not None and self.kind != "op":
            raise ValueError(f"only op steps take a logit_bias, not a {self.kind!r} step")
        if self.logit_bias is not None and len(self.logit_bias) != self.num_choices:
            raise ValueError(f"logit_bias has {len(self.logit_bias)} entries for {self.num_choices} choices")
        if self.vocab != "op" and (self.kind != "op" or not self.vocab.isidentifier()):
            raise ValueError(f"vocab {self.vocab!r}: only op steps name a vocab, and it must be an identifier")

    @property
    def is_choice(self) -> bool:
        return self.kind != "anchor"

    @property
    def num_columns(self) -> int:
        """How many columns of `Rollout.choices` this step fills."""
        return self.num_choices if self.kind == "skip" else int(self.is_choice)


@dataclass(frozen=True)
class ArchGraph:
    """A drawable view of one cell or network: what `enas.drawing` renders (graphviz or matplotlib).

    nodes: (id, label) in drawing order, inputs first and the output last; edges: (source id, target id, label),
    the label being the op on that edge or "" (micro and NAS-Bench-201 put ops on edges, macro on nodes).
    """

    nodes: tuple[tuple[str, str], ...]
    edges: tuple[tuple[str, str, str], ...]
    inputs: tuple[str, ...]
    output: str


class SearchSpace(Protocol):
    """The contract between a space and the samplers, judges and loops."""

    name: str

    def steps(self) -> Sequence[Step]:
        """The controller's rollout plan; the choice steps, in order, are what `from_choices` reads."""

    def from_choices(self, choices: Sequence[int]):
        """Architecture value from one rollout's choices (in the order of the choice steps)."""

    def to_choices(self, arch) -> list[int]:
        """Inverse of `from_choices`: the choices a controller would have made for `arch`."""

    def sample_uniform(self, generator: torch.Generator):
        """A uniformly random architecture."""

    def supernet(self) -> nn.Module:
        """The shared-weights network; `net(x, arch)` runs only the sampled path."""
