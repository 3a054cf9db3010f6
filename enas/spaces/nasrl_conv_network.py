"""The fixed network of a NAS-RL layer-wise CNN architecture (Zoph & Le, ICLR 2017, §3.1-3.3).

Each layer: its inputs zero-padded to one spatial size and concatenated along depth, then conv (filter height x
width, stride 1, "same" padding, the chosen number of filters) -> BN -> ReLU. The paper says only that the convs
use ReLU and batch norm; conv-BN-ReLU is our order. A layer with no input reads the image (the raw image, as in
the paper, or a stem's output when stem_channels > 0); the outputs no later layer reads, the last one included,
are padded and concatenated for the classifier: global average pool, dropout, linear. With stride 1 every
output keeps the image size, so the padding does nothing here; `pad_concat` is there for strided variants.

There are no shared weights: NAS-RL trains each sampled child from scratch. The paper also grew the depth during
the search (2 more layers every 1,600 children, starting at 6: §4.1); the depth is the architecture's own, and
nas_rl.depth_start samples shallower prefixes of the space as the schedule says (enas.nas_rl_depth).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from enas.ops import batch_norm, he_init_
from enas.spaces.base import ArchError
from enas.spaces.nasrl_conv_arch import NasrlConvArch


def pad_concat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate [N, C_k, H_k, W_k] along channels, zero-padding each to the largest H and W (Zoph & Le §3.3:
    "we pad the small layers with zeros"); the padding is split evenly, the odd pixel at the bottom/right."""
    height, width = max(t.shape[-2] for t in tensors), max(t.shape[-1] for t in tensors)
    padded = []
    for t in tensors:
        dh, dw = height - t.shape[-2], width - t.shape[-1]
        padded.append(F.pad(t, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)) if dh or dw else t)
    return padded[0] if len(padded) == 1 else torch.cat(padded, dim=1)


def conv_bn_relu(c_in: int, c_out: int, height: int, width: int) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, (height, width), padding=(height // 2, width // 2), bias=False)
    he_init_(conv.weight, height * width * c_in)
    # nn.ReLU, not torch.relu: NASWOT hooks ReLU modules
    return nn.Sequential(conv, batch_norm(c_out, track_running_stats=True), nn.ReLU())


class NasrlConvNetwork(nn.Module):
    """`forward(x) -> (logits, None)` of `arch`. num_layers, when given, must be the architecture's depth."""

    def __init__(self, arch: NasrlConvArch, num_layers: int | None = None, num_classes: int = 10,
                 in_channels: int = 3, stem_channels: int = 0, dropout: float = 0.0):
        super().__init__()
        if num_layers is not None and num_layers != arch.num_layers:
            raise ArchError(f"architecture has {arch.num_layers} layers; this network has {num_layers}")
        self.arch = arch
        self.stem = None
        if stem_channels > 0:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False),
                                      batch_norm(stem_channels, track_running_stats=True))
            he_init_(self.stem[0].weight, 9 * in_channels)
        image_channels = stem_channels or in_channels
        self.layers = nn.ModuleList(
            conv_bn_relu(self.input_channels(i, image_channels), layer.num_filters, layer.filter_height,
                         layer.filter_width) for i, layer in enumerate(arch.layers))
        self.dropout = nn.Dropout(dropout)
        features = sum(arch.layers[i].num_filters for i in arch.output_layers())
        self.classifier = nn.Linear(features, num_classes, bias=False)
        he_init_(self.classifier.weight, features)

    def input_channels(self, i: int, image_channels: int) -> int:
        """Depth of layer i's input: the sum of its sources' filters, or the image's channels."""
        sources = self.arch.layers[i].sources()
        return sum(self.arch.layers[j].num_filters for j in sources) if sources else image_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        image = self.stem(x) if self.stem is not None else x
        outputs: list[torch.Tensor] = []
        for layer, spec in zip(self.layers, self.arch.layers):
            sources = spec.sources()
            outputs.append(layer(pad_concat([outputs[j] for j in sources]) if sources else image))
        features = pad_concat([outputs[i] for i in self.arch.output_layers()])
        return self.classifier(self.dropout(features.mean((2, 3)))), None

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
