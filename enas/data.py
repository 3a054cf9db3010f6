"""Datasets as device-resident uint8 splits: CIFAR-10, a local .npz file, or synthetic images.

Reproduces the data side of melodyguan/enas `src/cifar10/data_utils.py` (`read_data`): the last
`num_valid` (5,000) of the 50k CIFAR-10 training images are held out for controller rewards, the
rest train the shared weights, and the per-channel mean/std of pixels/255 is taken over the training
split only. As in KellerJordan/cifar10-airbench, every split lives on the device once as uint8
(NHWC memory, NCHW view); `augment.py` turns batches of it into floats.
"""

from __future__ import annotations

import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

Device = torch.device | str
CIFAR10_NUM_TRAIN = 50_000
OFFLINE_CHOICES = "data=npz data.path=/path/to/file.npz, or data=synthetic"


class DataError(ValueError):
    """Bad or missing data; the message names the bad value or path and what is allowed."""


@dataclass(frozen=True)
class Split:
    """Images `x` (uint8 [N, C, H, W], channels_last strides) and labels `y` (int64 [N]) on one device."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.ndim != 4:
            raise DataError(f"Split.x must be uint8 [N, C, H, W], got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.dtype != torch.int64 or self.y.ndim != 1:
            raise DataError(f"Split.y must be int64 [N], got {self.y.dtype} {tuple(self.y.shape)}")
        if self.x.shape[0] != self.y.shape[0] or self.x.device != self.y.device:
            raise DataError(
                f"Split.x ({self.x.shape[0]} images on {self.x.device}) and Split.y "
                f"({self.y.shape[0]} labels on {self.y.device}) must have the same length and device"
            )

    def __len__(self) -> int:
        return self.y.shape[0]


@dataclass(frozen=True)
class Dataset:
    """Train/valid(/test) splits plus the train-split pixel statistics used to normalise every batch."""

    train: Split
    valid: Split  # held out from the training images; controller rewards
    test: Split | None  # reports only
    num_classes: int
    mean: tuple[float, ...]  # per-channel mean of train.x / 255
    std: tuple[float, ...]  # per-channel std of train.x / 255 (population std, as np.std)


def check_batch_fits(split: Split, batch_size: int, name: str) -> None:
    """Raise DataError unless `split` holds at least one full batch (ENAS only serves full batches)."""
    if batch_size <= 0:
        raise DataError(f"batch size for the {name} split must be a positive integer, got {batch_size}")
    if len(split) < batch_size:
        raise DataError(
            f"the {name} split has {len(split)} images, fewer than the batch size {batch_size}; "
            f"use a batch size <= {len(split)} or more data"
        )


def _to_split(x_nhwc: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, device: Device) -> Split:
    """Move uint8 NHWC images once to `device`; the NCHW view then has channels_last strides."""
    x = torch.as_tensor(np.ascontiguousarray(x_nhwc)) if isinstance(x_nhwc, np.ndarray) else x_nhwc.contiguous()
    y = torch.as_tensor(np.asarray(y), dtype=torch.int64) if isinstance(y, np.ndarray) else y.long()
    return Split(x.to(device).permute(0, 3, 1, 2), y.to(device))


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std of x/255 from a 256-bin histogram, so no float copy of the split is made."""
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).cpu().double()
        n = counts.sum()
        mean = (counts * values).sum() / n
        var = (counts * values**2).sum() / n - mean**2
        means.append(float(mean) / 255.0)
        stds.append(math.sqrt(max(float(var), 0.0)) / 255.0)
    return tuple(means), tuple(stds)


def _make_dataset(train: Split, valid: Split, test: Split | None, num_classes: int) -> Dataset:
    mean, std = _channel_stats(train.x)
    sizes = f"{len(train)} train / {len(valid)} valid / {len(test) if test is not None else 0} test"
    log.info("data: %s images of shape %s, %d classes", sizes, tuple(train.x.shape[1:]), num_classes)
    return Dataset(train, valid, test, num_classes, mean, std)


# ----------------------------------------------------------------------------------------------- CIFAR-10


def _cifar_missing_message(root: Path, download: bool, cause: Exception) -> str:
    if download:
        problem = f"could not download CIFAR-10 into '{root}': data.download=true needs internet"
    else:
        problem = f"CIFAR-10 not found (or unreadable) under '{root}'; data.download=true fetches it (needs internet)"
    return (
        f"{problem}. Or put torchvision's 'cifar-10-batches-py' folder (data_batch_1..5, test_batch, batches.meta) "
        f"inside '{root}'. Offline choices: {OFFLINE_CHOICES}. Cause: {cause}"
    )


def load_cifar10(root: str | Path, num_valid: int = 5000, download: bool = False, device: Device = "cpu") -> Dataset:
    """CIFAR-10 with the LAST `num_valid` training images as the validation split (ENAS: 45k/5k)."""
    from torchvision.datasets import CIFAR10  # torchvision import is slow; only pay for it here

    if not 0 < num_valid < CIFAR10_NUM_TRAIN:
        raise DataError(f"num_valid must be in (0, {CIFAR10_NUM_TRAIN}) for CIFAR-10, got {num_valid}")
    root = Path(root).expanduser()
    try:
        train_set = CIFAR10(root, train=True, download=download)
        test_set = CIFAR10(root, train=False, download=False)
    except (RuntimeError, OSError, EOFError, KeyError) as e:  # torchvision: RuntimeError; network: URLError
        raise DataError(_cifar_missing_message(root, download, e)) from e
    x, y = train_set.data, np.asarray(train_set.targets, dtype=np.int64)
    if not num_valid < len(x):
        raise DataError(f"num_valid must be in (0, {len(x)}) for the {len(x)} images under '{root}', got {num_valid}")
    cut = len(x) - num_valid
    train = _to_split(x[:cut], y[:cut], device)
    valid = _to_split(x[cut:], y[cut:], device)
    test = _to_split(test_set.data, np.asarray(test_set.targets, dtype=np.int64), device)
    return _make_dataset(train, valid, test, num_classes=10)


# ----------------------------------------------------------------------------------------------- .npz file


def _check_images(path: Path, key: str, x: np.ndarray) -> None:
    if x.dtype != np.uint8:
        raise DataError(f"{path}: '{key}' must have dtype uint8 (pixels 0..255), got {x.dtype}")
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{path}: '{key}' must have shape [N, H, W, C] with C in {{1, 3}}, got {x.shape}")


def _check_labels(path: Path, key: str, y: np.ndarray, num_images: int) -> None:
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: '{key}' must hold integer labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise DataError(f"{path}: '{key}' must have shape [N], got {y.shape}")
    if len(y) != num_images:
        raise DataError(f"{path}: length mismatch: {num_images} images but {len(y)} labels in '{key}'")
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: '{key}' has negative label {y.min()}; labels must be in [0, num_classes)")


def _check_label_range(path: Path, key: str, y: np.ndarray, num_classes: int) -> None:
    if len(y) and y.max() >= num_classes:
        raise DataError(f"{path}: '{key}' has label {y.max()}, outside the allowed range [0, {num_classes})")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"npz file '{path}' does not exist; set data.path to an .npz with keys x, y")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, AttributeError, zipfile.BadZipFile) as e:  # AttributeError: a .npy has no .files
        raise DataError(f"'{path}' is not a readable .npz archive: {e}") from e
    missing = [k for k in ("x", "y") if k not in arrays]
    if ("x_test" in arrays) != ("y_test" in arrays):
        missing.append("y_test" if "x_test" in arrays else "x_test")
    if missing:
        raise DataError(
            f"{path}: missing key(s) {missing}; found {sorted(arrays)}. "
            "Required: x (uint8 [N,H,W,C]), y (int [N]); optional together: x_test, y_test"
        )
    return arrays


def load_npz(
    path: str | Path, valid_fraction: float = 0.1, num_classes: int | None = None, device: Device = "cpu"
) -> Dataset:
    """Images from an .npz (x, y and optional x_test, y_test); the LAST round(N * valid_fraction) validate."""
    path = Path(path).expanduser()
    if not 0.0 < valid_fraction < 1.0:
        raise DataError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    arrays = _read_npz(path)
    x, y = arrays["x"], arrays["y"]
    _check_images(path, "x", x)
    _check_labels(path, "y", y, len(x))
    has_test = "x_test" in arrays
    if has_test:
        _check_images(path, "x_test", arrays["x_test"])
        _check_labels(path, "y_test", arrays["y_test"], len(arrays["x_test"]))
        if arrays["x_test"].shape[1:] != x.shape[1:]:
            raise DataError(f"{path}: x_test images {arrays['x_test'].shape[1:]} differ from x images {x.shape[1:]}")
    if num_classes is None:
        num_classes = int(max([y.max(initial=-1)] + ([arrays["y_test"].max(initial=-1)] if has_test else []))) + 1
    elif num_classes < 1:
        raise DataError(f"num_classes must be >= 1 (or null to infer it), got {num_classes}")
    _check_label_range(path, "y", y, num_classes)
    if has_test:
        _check_label_range(path, "y_test", arrays["y_test"], num_classes)
    num_valid = round(len(x) * valid_fraction)
    if not 0 < num_valid < len(x):
        raise DataError(
            f"{path}: valid_fraction {valid_fraction} of {len(x)} images gives {num_valid} validation and "
            f"{len(x) - num_valid} training images; both splits must be non-empty"
        )
    cut = len(x) - num_valid
    train, valid = _to_split(x[:cut], y[:cut], device), _to_split(x[cut:], y[cut:], device)
    test = _to_split(arrays["x_test"], arrays["y_test"], device) if has_test else None
    return _make_dataset(train, valid, test, num_classes)


# ----------------------------------------------------------------------------------------------- synthetic

SYNTHETIC_CHUNK = 8192  # images generated per step; fixed so the result does not depend on memory


def _synthetic_images(patterns: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """uint8 NHWC images: class pattern + per-image brightness shift + per-pixel Gaussian noise."""
    chunks = []
    for y in labels.split(SYNTHETIC_CHUNK):
        noise = torch.randn((len(y), *patterns.shape[1:]), generator=gen) * 56.0
        brightness = torch.randn((len(y), 1, 1, 1), generator=gen) * 16.0
        chunks.append((patterns[y] + noise + brightness).round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(chunks) if chunks else torch.empty((0, *patterns.shape[1:]), dtype=torch.uint8)


def make_synthetic(
    num_train: int,
    num_valid: int,
    num_test: int = 0,
    num_classes: int = 10,
    image_size: int = 32,
    seed: int = 0,
    device: Device = "cpu",
) -> Dataset:
    """Deterministic 3-channel images, one smooth random colour pattern per class plus noise.

    A tiny convnet separates the classes within a couple of epochs, yet no two images are equal.
    """
    for name, value, low in (("num_train", num_train, 1), ("num_valid", num_valid, 1), ("num_test", num_test, 0),
                             ("num_classes", num_classes, 2), ("image_size", image_size, 4)):
        if value < low:
            raise DataError(f"synthetic data: {name} must be >= {low}, got {value}")
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand((num_classes, 3, 4, 4), generator=gen)
    smooth = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
    # Amplitude vs noise tuned so a tiny convnet goes ~40% -> ~90% over its first two epochs, not 100% at once.
    patterns = (smooth * 96.0 + 80.0).permute(0, 2, 3, 1).contiguous()  # [K, H, W, 3] in [80, 176]
    labels = torch.randint(0, num_classes, (num_train + num_valid + num_test,), generator=gen)
    x = _synthetic_images(patterns, labels, gen)
    cuts = (num_train, num_train + num_valid)
    train = _to_split(x[: cuts[0]], labels[: cuts[0]], device)
    valid = _to_split(x[cuts[0] : cuts[1]], labels[cuts[0] : cuts[1]], device)
    test = _to_split(x[cuts[1] :], labels[cuts[1] :], device) if num_test else None
    return _make_dataset(train, valid, test, num_classes)


def with_valid_in_train(data: Dataset) -> Dataset:
    """Final training on every labelled training image (ENAS final runs use all 50,000, §4): the validation
    images join the training split and the pixel statistics are recomputed over the union."""
    train = Split(torch.cat([data.train.x, data.valid.x]).contiguous(memory_format=torch.channels_last),
                  torch.cat([data.train.y, data.valid.y]))
    mean, std = _channel_stats(train.x)
    return Dataset(train, data.valid, data.test, data.num_classes, mean, std)
