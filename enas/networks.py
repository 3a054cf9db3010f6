"""Found architectures as ordinary networks: read an architecture (file or published name), build its fixed
network, save it as `final.pt`, and load that back into a plain `torch.nn.Module` with one call:

    from enas.networks import load_network
    net = load_network("outputs/.../final.pt").eval()
    logits, _ = net(images)        # images normalised with the mean/std stored in the file (net.data_stats)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from enas.files import save_torch_atomic
from enas.spaces.base import ArchError
from enas.spaces.macro_arch import MacroArch, published_macro_arch
from enas.spaces.macro_supernet import MacroNetwork
from enas.spaces.micro_arch import MicroArch, published_arch as published_micro
from enas.spaces.micro_network import MicroNetwork
from enas.spaces.nasrl_conv_arch import NasrlConvArch
from enas.spaces.nasrl_conv_network import NasrlConvNetwork
from enas.spaces.nb201_arch import Nb201Arch
from enas.spaces.nb201_supernet import Nb201Network

NETWORK_FORMAT, NETWORK_VERSION = "enas-network", 1

# space name -> (architecture type, fixed network type)
SPACES: dict[str, tuple[type, type]] = {"micro": (MicroArch, MicroNetwork), "macro": (MacroArch, MacroNetwork),
                                        "nb201": (Nb201Arch, Nb201Network),
                                        "nasrl_conv": (NasrlConvArch, NasrlConvNetwork)}
PUBLISHED: dict[str, Callable[[], object]] = {"enas_micro_paper": published_micro,
                                              "enas_macro_paper": published_macro_arch}


def space_of(arch) -> str:
    return arch.to_json()["space"]


def arch_from_json(data: dict):
    space = data.get("space") if isinstance(data, dict) else None
    if space not in SPACES:
        raise ArchError(f"architecture space {space!r} is not one of {', '.join(SPACES)}")
    return SPACES[space][0].from_json(data)


def load_arch(spec: str):
    """A published architecture by name (enas_micro_paper, ...) or an architecture JSON file (best_arch.json,
    or any file with the project's architecture format)."""
    if spec in PUBLISHED:
        return PUBLISHED[spec]()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ArchError(f"arch={spec!r} is neither a published architecture ({', '.join(PUBLISHED)}) nor an "
                        "existing architecture file (e.g. the best_arch.json of a search run)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArchError(f"architecture file {str(path)!r} is not valid JSON: {e}") from None
    return arch_from_json(data)


def build_network(arch, **kwargs) -> nn.Module:
    """The fixed network of `arch`; kwargs are the network type's constructor arguments (width, depth, ...)."""
    return SPACES[space_of(arch)][1](arch, **kwargs)


def save_network(path: str | Path, net: nn.Module, arch, kwargs: dict, data_stats: dict | None = None) -> None:
    """Write `final.pt`: the state dict, the architecture and the constructor arguments (and the input
    normalisation), everything `load_network` needs. Tensors and plain values only (safe weights_only loads)."""
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_torch_atomic(path, {"format": NETWORK_FORMAT, "version": NETWORK_VERSION, "arch": arch.to_json(),
                             "kwargs": dict(kwargs), "data_stats": data_stats, "state_dict": state})


def load_network(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The trained network of a `final.pt`, weights loaded, in training mode (call `.eval()` to evaluate).
    `net.arch` is its architecture and `net.data_stats` the mean/std its inputs were normalised with."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"network file {str(path)!r} does not exist; a mode=train run writes final.pt into "
                                "its run directory")
    saved = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != NETWORK_FORMAT:
        raise ArchError(f"{str(path)!r} is not a network file written by mode=train (format {NETWORK_FORMAT!r}); "
                        "a search checkpoint (last.pt) holds a supernet, not a network")
    arch = arch_from_json(saved["arch"])
    net = build_network(arch, **saved["kwargs"])
    net.load_state_dict(saved["state_dict"])
    net.data_stats = saved.get("data_stats")
    return net.to(map_location)
