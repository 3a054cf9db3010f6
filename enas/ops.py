"""Candidate operations and shared blocks of the ENAS CIFAR-10 children.

Reference: enas_reference.md §1.2 (op structure), §1.6 (calibration, factorized reduction), §1.7 (aux head),
§9 (TF "SAME" padding at stride 2, He init with TF's fan-in). Source: melodyguan/enas src/cifar10/micro_child.py.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-5  # ENAS batch_norm epsilon


def batch_norm(channels: int, track_running_stats: bool) -> nn.BatchNorm2d:
    """Affine BN. Search children normalise with batch statistics always (track_running_stats=False, §1.2)."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.1, track_running_stats=track_running_stats)


TRUNCATION_STD = 0.87962566103423978  # std of a unit normal truncated at +-2: TF divides by it (VarianceScaling)


def he_init_(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
    """TF `he_normal`: a normal truncated at 2 std, scaled so the std after truncation is sqrt(2/fan_in) (the
    measured official init, enas_reference.md §9); ENAS computes fan_in from the stored shape (§4)."""
    std = math.sqrt(2.0 / fan_in) / TRUNCATION_STD
    with torch.no_grad():
        return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def same_pad(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """TF "SAME" padding: asymmetric (more at bottom/right) when the stride does not divide evenly (§9)."""
    size = x.shape[-1]
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before = total // 2
    return F.pad(x, (before, total - before, before, total - before), value=value)


def conv_bn(c_in: int, c_out: int, kernel: int, track_running_stats: bool, relu_first: bool = True) -> nn.Sequential:
    """[ReLU →] conv kxk (stride 1, same padding, no bias) → BN: ENAS calibration and layer-base convs."""
    conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)
    he_init_(conv.weight, kernel * kernel * c_in)
    layers = [nn.ReLU()] if relu_first else []
    return nn.Sequential(*layers, conv, batch_norm(c_out, track_running_stats))


class _SplitBackwardDepthwiseConv(torch.autograd.Function):
    """Depthwise kxk conv, stride 1, "same" padding, whose backward avoids oneDNN's slow depthwise kernels on CPU
    (used for k > 3).

    Measured on this project's 2-core AMD EPYC CPU, channels last, 32x32x16, batch 64 (BENCHMARKS.md):
    - joint backward (both gradients in one call) is slower than two calls: 5x5 4.1 ms against 0.3 + 2.3 ms;
    - the input gradient as a forward conv with the kernel flipped: 0.19 against 0.34 ms;
    - the weight gradient of a kernel wider than 3 columns is slow (5x5 2.3 ms), that of a kx3 one fast (5x3
      0.15 ms): `_depthwise_weight_gradient` computes it as kx3 column tiles, 0.55 ms for 5x5.
    The same maths, in another summation order.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, padding=weight.shape[-1] // 2, groups=weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable  # a double backward raises instead of going wrong
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        x, weight = x.to(grad.dtype), weight.to(grad.dtype)  # under autocast the forward ran in grad's dtype
        grad_input = grad_weight = None
        if ctx.needs_input_grad[0]:  # stride 1, "same": the transposed conv is the conv with the kernel flipped
            grad_input = F.conv2d(grad, weight.flip(-2, -1), padding=weight.shape[-1] // 2, groups=weight.shape[0])
        if ctx.needs_input_grad[1]:
            grad_weight = _depthwise_weight_gradient(grad, x, weight.shape[-1])
        return grad_input, grad_weight


def _depthwise_weight_gradient(grad: torch.Tensor, x: torch.Tensor, kernel: int) -> torch.Tensor:
    """The weight gradient of a stride-1 "same" depthwise kxk conv (k odd), as column tiles k rows by 3 wide.

    The tile starting at tap column b is the kx3 weight gradient of the input padded by k//2 columns each side
    against the output gradient shifted b columns right (zero-padded by b left, k-3-b right). Tiles start at
    columns 0, 2, 4, ...; a column in two tiles keeps the later tile's value (equal maths; a fixed order).
    """
    channels, pad = x.shape[1], kernel // 2

    def tile(grad: torch.Tensor, x: torch.Tensor, width: int, pad_width: int) -> torch.Tensor:
        shape = x.new_zeros(()).expand(channels, 1, kernel, width)  # convolution_backward reads only its shape
        return torch.ops.aten.convolution_backward(
            grad, x, shape, None, [1, 1], [pad, pad_width], [1, 1], False, [0, 0], channels,
            [False, True, False])[1]

    if kernel <= 3:
        return tile(grad, x, kernel, pad)
    padded = F.pad(x, (pad, pad, 0, 0))  # not the conv's own column padding: oneDNN's fast kernel wants it <= 1
    out = x.new_empty(channels, 1, kernel, kernel)
    for start in range(0, kernel - 2, 2):
        out[..., start:start + 3] = tile(F.pad(grad, (start, kernel - 3 - start, 0, 0)), padded, 3, 0)
    return out


class DepthwiseConv2d(nn.Conv2d):
    """Depthwise kxk conv without bias, k odd: "same" padding at stride 1; at stride s > 1 the caller pads
    TF-style. On CPU, stride 1 with k > 3 trains through `_SplitBackwardDepthwiseConv` (around oneDNN's slow
    kernels). A 3x3 one keeps oneDNN's own backward: with it a SepConv 3x3 trains faster on a 2-core Intel Xeon
    (AMX) VM, forward and backward at batch 64 7.1-7.2 against 7.4-7.8 ms at 32x32x16 and 2.8 against 3.1-3.4 ms at
    8x8x64, while on the 2-core AMD EPYC VM an all-3x3 step took the same time either way (BENCHMARKS.md)."""

    def __init__(self, channels: int, kernel: int, stride: int = 1):
        if kernel % 2 == 0:
            raise ValueError(f"a depthwise conv with 'same' padding needs an odd kernel size, got {kernel}")
        super().__init__(channels, channels, kernel, stride=stride, padding=0 if stride > 1 else kernel // 2,
                         groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and self.stride == (1, 1) and self.kernel_size[1] > 3
                and torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return _SplitBackwardDepthwiseConv.apply(x, self.weight)
        return super().forward(x)


class SepConv(nn.Module):
    """ENAS separable conv: (ReLU → depthwise kxk → pointwise 1x1 → BN) twice; stride on the first (§1.2).

    fan_in: None gives TF's fan-in of a 4-D weight (k*k*C for depthwise, C for pointwise, the final graph);
    the search tables store every weight as a 2-D row table, so their fan_in is the table's row count.
    """

    reads_all_weights = True  # every call runs both blocks (LazyDecaySGD.watch catches them up in one go)

    def __init__(self, channels: int, kernel: int, stride: int = 1, track_running_stats: bool = False,
                 fan_in: int | None = None):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        # the first depthwise conv takes the stride, on an input padded TF-style ("SAME") in forward
        self.depthwise = nn.ModuleList(DepthwiseConv2d(channels, kernel, s) for s in (stride, 1))
        self.pointwise = nn.ModuleList(nn.Conv2d(channels, channels, 1, bias=False) for _ in range(2))
        self.bns = nn.ModuleList(batch_norm(channels, track_running_stats) for _ in range(2))
        # modules, not F.relu: NASWOT hooks nn.ReLU. The second reads the first block's BN output, which nothing
        # else reads (BN's backward needs its input only): in place, bit for bit the same, 3-4% off a SepConv at
        # 32x32x16 on this project's CPU (BENCHMARKS.md)
        self.relus = nn.ModuleList([nn.ReLU(), nn.ReLU(inplace=True)])
        for dw, pw in zip(self.depthwise, self.pointwise):
            he_init_(dw.weight, fan_in or kernel * kernel * channels)
            he_init_(pw.weight, fan_in or channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (relu, dw, pw, bn) in enumerate(zip(self.relus, self.depthwise, self.pointwise, self.bns)):
            x = relu(x)
            if i == 0 and self.stride > 1:
                x = same_pad(x, self.kernel, self.stride)
            x = bn(pw(dw(x)))
        return x


def pool(x: torch.Tensor, kind: str, stride: int = 1) -> torch.Tensor:
    """3x3 avg or max pool with TF "SAME" padding: padding never counts in the average nor wins the max."""
    if stride == 1:
        if kind == "avg":
            if x.device.type == "cpu":
                return _AvgPool3x3.apply(x)
            return F.avg_pool2d(x, 3, 1, padding=1, count_include_pad=False)
        return F.max_pool2d(x, 3, 1, padding=1)
    if kind == "avg":
        ones = same_pad(torch.ones_like(x[:1, :1]), 3, stride)
        return F.avg_pool2d(same_pad(x, 3, stride), 3, stride) / F.avg_pool2d(ones, 3, stride)
    return F.max_pool2d(same_pad(x, 3, stride, value=float("-inf")), 3, stride)


class _AvgPool3x3(torch.autograd.Function):
    """3x3 stride-1 average pool over the pixels inside the map (F.avg_pool2d with padding 1 and
    count_include_pad=False) as a depthwise conv of ones divided by each pixel's count: on CPU oneDNN's depthwise
    conv is far faster than the pooling kernels (32x32x16, batch 64, channels last, this project's 2-core CPU:
    forward 0.16 against 0.82 ms, forward and backward 0.72 against 1.5-1.65 ms). The same maths; the backward is
    the same conv of the output gradient divided by the counts (the kernel of ones is its own flip)."""

    @staticmethod
    @torch.autocast("cpu", enabled=False)  # in the input's dtype, as F.avg_pool2d under autocast
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ones, counts = _pool_kernel_and_counts(x.shape[1], *x.shape[-2:], x.dtype, x.device)
        ctx.save_for_backward(ones, counts)
        return F.conv2d(x, ones, padding=1, groups=x.shape[1]) / counts

    @staticmethod
    @torch.autograd.function.once_differentiable
    @torch.autocast("cpu", enabled=False)
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        ones, counts = ctx.saved_tensors
        return F.conv2d(grad.to(ones.dtype) / counts, ones, padding=1, groups=ones.shape[0])


@functools.lru_cache(maxsize=64)
def _pool_kernel_and_counts(channels: int, height: int, width: int, dtype: torch.dtype,
                            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The depthwise kernel of ones [C, 1, 3, 3] and each pixel's count of in-map neighbours [1, 1, H, W] (4, 6 or
    9), made once per shape: read-only, shared by every call (never inference tensors, which a later training
    call could not save for backward)."""
    with torch.inference_mode(False), torch.no_grad():
        ones = torch.ones(channels, 1, 3, 3, dtype=dtype, device=device)
        counts = F.conv2d(torch.ones(1, 1, height, width, dtype=dtype, device=device), ones[:1], padding=1)
    return ones, counts


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing half the pixels: two 1x1 convs on the even and the odd pixel grids,
    concatenated, then BN (§1.6; melodyguan/enas#14). No ReLU inside; callers put one in front when calibrating."""

    reads_all_weights = True

    def __init__(self, c_in: int, c_out: int, track_running_stats: bool = False):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"factorized reduction needs an even number of output channels, got {c_out}")
        self.path1 = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.path2 = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        for conv in (self.path1, self.path2):
            he_init_(conv.weight, c_in)
        self.bn = batch_norm(c_out, track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # TF shifts the map by one pixel (pad bottom/right, crop top/left) then samples every 2nd pixel: the odd
        # grid x[1::2, 1::2], and along an odd side one more sample, of the zero pad. Taken directly, not from a
        # padded copy of the whole map (FR at 32x32x16, forward and backward: 1.9 against 2.5 ms, BENCHMARKS.md)
        even, odd = x[:, :, ::2, ::2], x[:, :, 1::2, 1::2]
        if odd.shape[-2:] != even.shape[-2:]:
            odd = F.pad(odd, (0, even.shape[-1] - odd.shape[-1], 0, even.shape[-2] - odd.shape[-2]))
        return self.bn(torch.cat([self.path1(even), self.path2(odd)], dim=1))


class ReLUFactorizedReduce(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, track_running_stats: bool = False):
        super().__init__(nn.ReLU(), FactorizedReduce(c_in, c_out, track_running_stats))


class AuxHead(nn.Module):
    """NASNet-style auxiliary classifier (§1.7): ReLU → avgpool 5/3 VALID → 1x1 conv 128 → BN → ReLU →
    conv over the whole remaining map (TF SAME padding) to 768 → BN → ReLU → global pool → FC."""

    reads_all_weights = True

    def __init__(self, c_in: int, spatial: int, num_classes: int, track_running_stats: bool = False):
        super().__init__()
        if spatial < 5:
            raise ValueError(f"the aux head pools 5x5 windows but its input map is {spatial}x{spatial}; use larger "
                             "images or set the aux-head weight to 0 (search_space.aux_weight / retrain.aux_weight)")
        self.kernel = (spatial - 5) // 3 + 1
        self.conv1 = nn.Conv2d(c_in, 128, 1, bias=False)
        self.bn1 = batch_norm(128, track_running_stats)
        self.conv2 = nn.Conv2d(128, 768, self.kernel, bias=False)
        self.bn2 = batch_norm(768, track_running_stats)
        self.fc = nn.Linear(768, num_classes, bias=False)
        he_init_(self.conv1.weight, c_in)
        he_init_(self.conv2.weight, self.kernel * self.kernel * 128)
        he_init_(self.fc.weight, 768)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(F.relu(x), 5, 3)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(same_pad(x, self.kernel, 1))))
        return self.fc(x.mean((2, 3)))
