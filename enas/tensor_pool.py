"""Pack the many small tensors of a state into one flat tensor per dtype and device, and back.

A micro supernet's checkpoint holds ~10,000 tensors (a weight and a momentum buffer per op slot); `torch.save`
pays a fixed cost per tensor and per pickled object, so saving them one by one took 0.26-0.56 s an epoch on this
project's 2-core CPU (BENCHMARKS.md). `pack` swaps every tensor of a nested dict/list/tuple for a 2-tuple
reference (REF, index) and keeps, per tensor, its pool, offset, layout and shape in one int64 table; `unpack`
rebuilds equal tensors (values, dtype, shape, and channels-last layout where a 4-D tensor had it), each with
storage of its own. Only plain containers, numbers and strings remain beside the pools, so a packed state still
loads with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch

POOLS = "__tensor_pools__"  # the key that marks a packed state: {"pools": [...], "table": int64 [tensors, 4 + d]}
REF = "__pooled_tensor__"


@torch.no_grad()
def pack(state: dict) -> dict:
    """`state` with its tensors replaced by references, plus the pools under POOLS (a copy; `state` is untouched)."""
    pool_index: dict[tuple, int] = {}
    parts: list[list[torch.Tensor]] = []
    rows: list[list[int]] = []  # pool, offset, channels_last, ndim, *shape
    sizes: list[int] = []

    def visit(obj):
        if isinstance(obj, torch.Tensor):
            key = (obj.dtype, obj.device)
            if key not in pool_index:
                pool_index[key] = len(parts)
                parts.append([])
                sizes.append(0)
            pool = pool_index[key]
            channels_last = (not obj.is_contiguous() and obj.dim() == 4
                             and obj.is_contiguous(memory_format=torch.channels_last))
            parts[pool].append((obj.permute(0, 2, 3, 1) if channels_last else obj).reshape(-1))
            rows.append([pool, sizes[pool], int(channels_last), obj.dim(), *obj.shape])
            sizes[pool] += obj.numel()
            return REF, len(rows) - 1
        if isinstance(obj, dict):
            return _same_kind(obj, {k: visit(v) for k, v in obj.items()})
        if isinstance(obj, (list, tuple)):
            if _starts_with_ref(obj):
                raise ValueError(f"a tuple starting with {REF!r} is reserved for packed tensors; the state holds "
                                 f"{obj!r}")
            return type(obj)(visit(v) for v in obj)
        return obj

    packed = visit(state)
    width = max((len(row) for row in rows), default=4)
    table = torch.tensor([row + [0] * (width - len(row)) for row in rows], dtype=torch.int64).view(-1, width)
    packed[POOLS] = {"pools": [torch.cat(p) for p in parts], "table": table}
    return packed


def unpack(packed: dict) -> dict:
    """The state `pack` was given (a state without POOLS is returned as it is)."""
    if POOLS not in packed:
        return packed
    pools, table = packed[POOLS]["pools"], packed[POOLS]["table"].tolist()

    def tensor(index: int) -> torch.Tensor:
        pool, offset, channels_last, ndim, *shape = table[index]
        shape = shape[:ndim]
        values = pools[pool][offset:offset + math.prod(shape)]
        if channels_last:
            n, c, h, w = shape
            return values.view(n, h, w, c).permute(0, 3, 1, 2).clone(memory_format=torch.channels_last)
        return values.view(shape).clone()

    def visit(obj):
        if isinstance(obj, tuple) and len(obj) == 2 and _starts_with_ref(obj):
            return tensor(obj[1])
        if isinstance(obj, dict):
            return _same_kind(obj, {k: visit(v) for k, v in obj.items() if k != POOLS})
        if isinstance(obj, (list, tuple)):
            return type(obj)(visit(v) for v in obj)
        return obj

    return visit(packed)


def _starts_with_ref(seq: list | tuple) -> bool:
    return bool(seq) and isinstance(seq[0], str) and seq[0] == REF  # the str check: never compare a tensor


def _same_kind(original: dict, items: dict) -> dict:
    """A module's state dict is an OrderedDict whose `_metadata` (per-module versions) load_state_dict reads."""
    if not isinstance(original, OrderedDict):
        return items
    out = OrderedDict(items)
    if hasattr(original, "_metadata"):
        out._metadata = original._metadata
    return out
