"""Behaviour of the whole-batch augmentation ops and the minibatch index stream (enas/augment.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from enas.augment import (
    BatchSampler,
    augment_batch,
    cutout,
    normalise,
    random_crop,
    random_flip,
)
from enas.data import make_synthetic

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uint8_batch(n: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    x = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=gen(seed))
    return x.permute(0, 3, 1, 2)  # channels_last, as data.Split stores it


def label_coded_batch(labels: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Uniform images whose pixel value encodes the label, so any crop/flip keeps it readable."""
    value = (labels * 20 + 10).to(torch.uint8)
    return value[:, None, None, None].expand(-1, size, size, 3).contiguous().permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------------------- normalise


def test_normalise_computes_pixels_over_255_minus_mean_over_std():
    x = uint8_batch(4)
    out = normalise(x, MEAN, STD)
    expected = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_normalise_gives_zero_mean_unit_std_on_train_split():
    ds = make_synthetic(num_train=300, num_valid=20, seed=1)
    out = normalise(ds.train.x, ds.mean, ds.std)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)


def test_normalise_rejects_float_input_and_wrong_channel_count():
    with pytest.raises(ValueError, match="uint8"):
        normalise(uint8_batch(2).float(), MEAN, STD)
    with pytest.raises(ValueError, match="3 values"):
        normalise(uint8_batch(2), (0.5,), (0.2,))


# ------------------------------------------------------------------------------------------- crop / flip


def test_crop_with_padding_zero_is_identity():
    x = normalise(uint8_batch(8), MEAN, STD)
    assert torch.equal(random_crop(x, 0, gen()), x)


def test_crop_is_a_zero_filled_shift_of_each_image_by_at_most_the_padding():
    x = normalise(uint8_batch(12, size=8), MEAN, STD) + 10  # +10: no real pixel equals the zero fill
    out = random_crop(x, 2, gen(3))
    padded = F.pad(x, (2, 2, 2, 2))
    windows = {(dy, dx): padded[:, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)}
    found = []
    for i in range(len(x)):
        matches = [k for k, w in windows.items() if torch.equal(out[i], w[i])]
        assert len(matches) == 1, f"image {i} is not a padded crop of its input"
        found.append(matches[0])
    assert len(set(found)) > 1, "all images got the same offset; offsets must be per sample"


def test_flip_mirrors_whole_images_and_about_half_of_them():
    x = normalise(uint8_batch(200, size=8), MEAN, STD)
    out = random_flip(x, gen(5))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same ^ mirrored).all()), "each image must be either unchanged or exactly mirrored"
    assert 60 < int(mirrored.sum()) < 140


def test_augmentation_keeps_labels_aligned_with_images():
    labels = torch.randint(0, 10, (64,), generator=gen(7))
    x = label_coded_batch(labels)
    out = augment_batch(x, MEAN, STD, gen(8), padding=4, flip=True)
    # The centre pixel is never padding for a shift <= 4; decode it back to the label.
    centre = out[:, 0, 16, 16] * STD[0] + MEAN[0]
    decoded = torch.round((centre * 255 - 10) / 20).long()
    assert torch.equal(decoded, labels)


# ------------------------------------------------------------------------------------------- cutout


def test_cutout_zeroes_one_clipped_square_of_at_most_size_squared_per_image():
    x = torch.ones(300, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    out = cutout(x, 6, gen(9))
    zero = out == 0
    assert torch.equal(zero[:, 0], zero[:, 1]) and torch.equal(zero[:, 0], zero[:, 2]), "same square on all channels"
    counts = zero[:, 0].flatten(1).sum(1)
    assert int(counts.min()) >= 1 and int(counts.max()) <= 36
    rows_hit, cols_hit = zero[:, 0].any(2).sum(1), zero[:, 0].any(1).sum(1)
    assert torch.equal(counts, rows_hit * cols_hit), "the zeroed region must be a rectangle"
    assert int((counts < 36).sum()) > 50, "squares whose corner lands near the border must be clipped"
    assert int((counts == 36).sum()) > 50


def test_cutout_corner_covers_the_whole_image_including_bottom_right_pixels():
    x = torch.ones(2000, 1, 8, 8)
    zero = cutout(x, 3, gen(10))[:, 0] == 0
    first_zero = zero.flatten(1).float().argmax(1)  # top-left of the square = first zero in row-major order
    assert set(first_zero.tolist()) == set(range(64))


def test_cutout_size_zero_is_identity():
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(cutout(x, 0, gen()), x)


# ------------------------------------------------------------------------------------------- pipeline


def test_augment_batch_returns_float_channels_last_of_same_shape_by_default():
    x = uint8_batch(8)
    out = augment_batch(x, MEAN, STD, gen(), cutout_size=8)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_augment_batch_honours_contiguous_memory_format():
    out = augment_batch(uint8_batch(4), MEAN, STD, gen(), memory_format=torch.contiguous_format)
    assert out.is_contiguous()


def test_same_generator_seed_gives_identical_augmentation():
    x = uint8_batch(32)
    a = augment_batch(x, MEAN, STD, gen(11), cutout_size=8)
    b = augment_batch(x, MEAN, STD, gen(11), cutout_size=8)
    c = augment_batch(x, MEAN, STD, gen(12), cutout_size=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ------------------------------------------------------------------------------------------- BatchSampler


def test_sampler_length_is_ceil_of_items_over_batch():
    assert len(BatchSampler(100, 32, gen())) == math.ceil(100 / 32) == 4
    assert len(BatchSampler(96, 32, gen())) == 3


def test_every_batch_is_full_and_an_epoch_covers_every_index():
    sampler = BatchSampler(100, 32, gen(13))
    for _ in range(3):
        batches = list(sampler.epoch())
        assert len(batches) == 4
        assert all(b.shape == (32,) and b.dtype == torch.int64 for b in batches)
        seen = torch.cat(batches)
        assert torch.equal(torch.unique(seen), torch.arange(100))


def test_next_batch_stream_walks_through_whole_permutations():
    sampler = BatchSampler(10, 4, gen(14))
    stream = torch.cat([sampler.next_batch() for _ in range(5)])  # 20 items = two full permutations
    assert torch.equal(stream[:10].sort().values, torch.arange(10))
    assert torch.equal(stream[10:].sort().values, torch.arange(10))


def test_state_dict_round_trip_continues_the_identical_stream():
    g = gen(15)
    sampler = BatchSampler(50, 16, g)
    for _ in range(5):
        sampler.next_batch()
    state, g_state = sampler.state_dict(), g.get_state()
    expected = [sampler.next_batch() for _ in range(7)] + list(sampler.epoch())

    g2 = torch.Generator()
    g2.set_state(g_state)
    restored = BatchSampler(50, 16, g2)
    restored.load_state_dict(state)
    got = [restored.next_batch() for _ in range(7)] + list(restored.epoch())
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_sampler_rejects_batch_larger_than_items_and_mismatched_state():
    with pytest.raises(ValueError, match="batch_size 20 for 10 items"):
        BatchSampler(10, 20, gen())
    with pytest.raises(ValueError, match="num_items, batch_size"):
        BatchSampler(10, 5, gen()).load_state_dict(BatchSampler(12, 5, gen()).state_dict())
