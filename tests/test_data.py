"""Behaviour of the dataset loaders (enas/data.py): splits, statistics and error messages."""

import inspect
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar

from enas.data import (
    DataError,
    Split,
    check_batch_fits,
    load_cifar10,
    load_npz,
    make_synthetic,
)

PER_BATCH = 10  # images per fake CIFAR batch file: 50 train, 10 test


# ------------------------------------------------------------------------------------------- CIFAR-10


def cifar_rows(first: int, n: int) -> np.ndarray:
    """Rows in CIFAR's [n, 3072] planar layout; image i has R = i, G = 100 + i, B = 200 - i everywhere."""
    idx = np.arange(first, first + n)
    planes = np.stack([idx, 100 + idx, 200 - idx], axis=1).astype(np.uint8)  # [n, 3]
    return np.repeat(planes, 1024, axis=1)  # [n, 3 * 1024]: R plane, G plane, B plane


def write_fake_cifar(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    # Str keys, as the real Python-2 pickles decode under torchvision's encoding="latin1".
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        first = b * PER_BATCH if name != "test_batch" else 150
        entry = {"data": cifar_rows(first, PER_BATCH), "labels": [(first + i) % 10 for i in range(PER_BATCH)]}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch) -> Path:
    write_fake_cifar(tmp_path)
    # Only the md5 check is faked (it guards both the batches and batches.meta); the parsing is torchvision's.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    return tmp_path


def test_validation_split_defaults_to_last_5000_images():
    assert inspect.signature(load_cifar10).parameters["num_valid"].default == 5000


def test_validation_split_is_last_num_valid_training_images_in_file_order(fake_cifar):
    ds = load_cifar10(fake_cifar, num_valid=8)
    assert len(ds.train) == 42 and len(ds.valid) == 8
    assert torch.equal(ds.valid.x[:, 0, 0, 0].long(), torch.arange(42, 50))
    assert torch.equal(ds.train.x[:, 0, 0, 0].long(), torch.arange(42))
    assert torch.equal(ds.valid.y, torch.arange(42, 50) % 10)
    assert torch.equal(ds.valid.x[:, :, 5, 7].long(), torch.stack([torch.arange(42, 50), 100 + torch.arange(42, 50),
                                                                   200 - torch.arange(42, 50)], dim=1))


def test_cifar_test_split_is_the_official_test_batch(fake_cifar):
    ds = load_cifar10(fake_cifar, num_valid=8)
    assert ds.test is not None and len(ds.test) == PER_BATCH
    assert torch.equal(ds.test.x[:, 0, 0, 0].long(), torch.arange(150, 160))
    assert ds.num_classes == 10


def test_cifar_mean_std_come_from_the_train_split_only(fake_cifar):
    ds = load_cifar10(fake_cifar, num_valid=8)
    train = ds.train.x.double() / 255
    assert ds.mean == pytest.approx(train.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert ds.std == pytest.approx(train.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-9)


def test_splits_are_uint8_channels_last_with_int64_labels(fake_cifar):
    ds = load_cifar10(fake_cifar, num_valid=8)
    for split in (ds.train, ds.valid, ds.test):
        assert split.x.dtype == torch.uint8 and split.x.shape[1:] == (3, 32, 32)
        assert split.x.is_contiguous(memory_format=torch.channels_last)
        assert split.y.dtype == torch.int64


def test_cifar_num_valid_out_of_range_is_rejected(fake_cifar):
    with pytest.raises(DataError, match=r"num_valid must be in \(0, 50000\).*got 0"):
        load_cifar10(fake_cifar, num_valid=0)
    with pytest.raises(DataError, match=r"\(0, 50\).*got 50"):
        load_cifar10(fake_cifar, num_valid=50)


def test_missing_cifar_folder_names_the_folder_and_offline_choices(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_cifar10(root, download=False)
    message = str(info.value)
    assert str(root) in message and "cifar-10-batches-py" in message
    assert "data.download=true" in message and "data=synthetic" in message and "data=npz data.path=" in message
    assert info.value.__cause__ is not None


# ------------------------------------------------------------------------------------------- npz


def write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def good_arrays(n: int = 40, channels: int = 3) -> dict:
    rng = np.random.default_rng(0)
    return {"x": rng.integers(0, 256, (n, 8, 8, channels), dtype=np.uint8), "y": np.arange(n) % 5}


def test_npz_loads_with_last_fraction_as_validation_and_inferred_classes(tmp_path):
    arrays = good_arrays(40)
    arrays.update(x_test=arrays["x"][:6], y_test=arrays["y"][:6])
    ds = load_npz(write_npz(tmp_path / "d.npz", **arrays), valid_fraction=0.25)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (30, 10, 6)
    assert ds.num_classes == 5
    assert torch.equal(ds.valid.x, torch.from_numpy(arrays["x"][30:]).permute(0, 3, 1, 2))
    assert ds.valid.x.is_contiguous(memory_format=torch.channels_last)
    assert len(ds.mean) == 3 and all(s > 0 for s in ds.std)


def test_npz_accepts_single_channel_images_and_explicit_num_classes(tmp_path):
    ds = load_npz(write_npz(tmp_path / "d.npz", **good_arrays(20, channels=1)), num_classes=7)
    assert ds.train.x.shape[1] == 1 and ds.num_classes == 7 and ds.test is None and len(ds.mean) == 1


def bad_case(name: str, arrays: dict, kwargs: dict, expected: str):
    return pytest.param(arrays, kwargs, expected, id=name)


GOOD = good_arrays()
BAD_NPZ_CASES = [
    bad_case("missing_key", {"x": GOOD["x"]}, {}, r"missing key\(s\) \['y'\]; found \['x'\]"),
    bad_case("test_without_labels", {**GOOD, "x_test": GOOD["x"]}, {}, r"missing key\(s\) \['y_test'\]"),
    bad_case("float_pixels", {**GOOD, "x": GOOD["x"].astype(np.float32)}, {}, "must have dtype uint8.*float32"),
    bad_case("no_channel_axis", {**GOOD, "x": GOOD["x"][..., 0]}, {}, r"shape \[N, H, W, C\].*\(40, 8, 8\)"),
    bad_case("four_channels", {**GOOD, "x": np.repeat(GOOD["x"][..., :1], 4, -1)}, {}, "C in {1, 3}"),
    bad_case("float_labels", {**GOOD, "y": GOOD["y"].astype(float)}, {}, "integer labels.*float64"),
    bad_case("length_mismatch", {**GOOD, "y": GOOD["y"][:-1]}, {}, "length mismatch: 40 images but 39 labels"),
    bad_case("negative_label", {**GOOD, "y": GOOD["y"] - 1}, {}, r"negative label -1.*\[0, num_classes\)"),
    bad_case("label_out_of_range", GOOD, {"num_classes": 3}, r"label 4, outside the allowed range \[0, 3\)"),
    bad_case("test_label_out_of_range", {**GOOD, "x_test": GOOD["x"], "y_test": GOOD["y"] + 1}, {"num_classes": 5},
             r"'y_test' has label 5"),
    bad_case("valid_fraction_one", GOOD, {"valid_fraction": 1.0}, r"valid_fraction must be in \(0, 1\), got 1.0"),
    bad_case("valid_fraction_zero", GOOD, {"valid_fraction": 0.0}, r"valid_fraction must be in \(0, 1\), got 0.0"),
    bad_case("empty_valid_split", GOOD, {"valid_fraction": 0.001}, "gives 0 validation.*must be non-empty"),
]


@pytest.mark.parametrize(("arrays", "kwargs", "expected"), BAD_NPZ_CASES)
def test_bad_npz_raises_data_error_naming_the_problem(tmp_path, arrays, kwargs, expected):
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=expected) as info:
        load_npz(path, **kwargs)
    if "valid_fraction must" not in expected:
        assert str(path) in str(info.value), "the message must name the file"


def test_missing_npz_file_raises_data_error_naming_the_path(tmp_path):
    with pytest.raises(DataError, match=r"nope\.npz' does not exist"):
        load_npz(tmp_path / "nope.npz")


def test_file_that_is_not_an_npz_archive_raises_data_error(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(path)


# ------------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_per_seed():
    a, b = make_synthetic(50, 10, 5, seed=3), make_synthetic(50, 10, 5, seed=3)
    c = make_synthetic(50, 10, 5, seed=4)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.valid.y, b.valid.y) and torch.equal(a.test.x, b.test.x)
    assert not torch.equal(a.train.x, c.train.x)


def test_synthetic_has_requested_sizes_and_layout():
    ds = make_synthetic(num_train=30, num_valid=7, num_test=0, num_classes=4, image_size=16)
    assert (len(ds.train), len(ds.valid), ds.test, ds.num_classes) == (30, 7, None, 4)
    assert ds.train.x.shape == (30, 3, 16, 16) and ds.train.x.dtype == torch.uint8
    assert ds.train.x.is_contiguous(memory_format=torch.channels_last)
    assert int(ds.train.y.max()) < 4 and int(ds.train.y.min()) >= 0


def test_synthetic_classes_are_separable_by_nearest_class_mean_but_images_are_noisy():
    ds = make_synthetic(num_train=1000, num_valid=300, num_classes=10, seed=0)
    x_train, x_valid = ds.train.x.flatten(1).float(), ds.valid.x.flatten(1).float()
    centres = torch.stack([x_train[ds.train.y == k].mean(0) for k in range(10)])
    predicted = torch.cdist(x_valid, centres).argmin(1)
    assert (predicted == ds.valid.y).float().mean() > 0.5
    same_class = x_train[ds.train.y == 0]
    assert (same_class[0] != same_class[1]).float().mean() > 0.5, "images of one class must not be copies"


@pytest.fixture
def one_thread():
    # Two busy cores: oversubscribed intra-op threads make this tiny model 5x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_synthetic_is_learnable_by_a_tiny_convnet_in_two_epochs(one_thread):
    torch.manual_seed(0)
    ds = make_synthetic(num_train=512, num_valid=256, image_size=16, seed=1)
    mean, std = torch.tensor(ds.mean).view(1, 3, 1, 1), torch.tensor(ds.std).view(1, 3, 1, 1)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
                              torch.nn.Flatten(), torch.nn.Linear(16 * 16, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(2):
        for idx in torch.randperm(512).split(32):
            loss = torch.nn.functional.cross_entropy(net((ds.train.x[idx] / 255 - mean) / std), ds.train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        accuracy = (net((ds.valid.x / 255 - mean) / std).argmax(1) == ds.valid.y).float().mean()
    assert accuracy > 0.5


def test_synthetic_rejects_empty_splits():
    with pytest.raises(DataError, match="num_valid must be >= 1, got 0"):
        make_synthetic(num_train=10, num_valid=0)


def test_check_batch_fits_names_split_and_both_sizes():
    split = make_synthetic(num_train=20, num_valid=12).valid
    check_batch_fits(split, 12, "valid")
    with pytest.raises(DataError, match="valid split has 12 images, fewer than the batch size 16"):
        check_batch_fits(split, 16, "valid")


def test_split_rejects_float_images():
    with pytest.raises(DataError, match="uint8"):
        Split(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64))
