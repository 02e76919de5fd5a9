"""Datasets: generated moving digits (deterministic by seed), the Moving MNIST file, --data parsing,
and the batch schedule that makes runs reproducible, resumable and distributable."""
import numpy as np
import pytest
import torch

from cellgen.data import DataConfig, MovingDigits, MovingMNIST, open_splits, parse_data_argument
from cellgen.data.glyphs import STROKES, render_digit
from cellgen.errors import CellgenError
from cellgen.training.batches import BatchSchedule, check_batch_size


def test_moving_digits_shape_range_and_determinism():
    data = MovingDigits(10, split="train", seed=7)
    video = data[3]
    assert video.shape == (20, 1, 64, 64) and video.dtype == torch.float32
    assert 0.0 <= video.min() and video.max() <= 1.0 and video.max() > 0.9
    assert torch.equal(video, MovingDigits(10, split="train", seed=7)[3])          # same seed, same sequence
    assert torch.equal(data[3], data[3])
    assert not torch.equal(video, MovingDigits(10, split="train", seed=8)[3])      # another seed
    assert not torch.equal(video, MovingDigits(10, split="test", seed=7)[3])       # another split
    assert not torch.equal(video, data[4])


def test_order_of_access_does_not_matter():
    a = MovingDigits(None, seed=1)
    first = a[5]
    b = MovingDigits(None, seed=1)
    for i in (9, 2, 100):
        b[i]
    assert torch.equal(first, b[5])


def test_digits_move_and_stay_inside_the_frame():
    video = MovingDigits(4, seed=0)[0][:, 0].numpy()
    masses = video.sum(axis=(1, 2))
    glyph = 28
    assert (masses > 0).all()
    # two glyphs: at most the mass of two, and at least that of the larger when they overlap
    assert masses.max() <= 2 * glyph * glyph
    centroids = []
    for frame in video:
        ys, xs = np.nonzero(frame)
        centroids.append((xs.mean(), ys.mean()))
        assert xs.min() >= 0 and xs.max() < 64 and ys.min() >= 0 and ys.max() < 64
    steps = np.linalg.norm(np.diff(np.array(centroids), axis=0), axis=1)
    assert steps.mean() > 0.5  # they move


def test_glyphs_are_every_digit_and_vary():
    generator = torch.Generator().manual_seed(0)
    for digit in STROKES:
        image = render_digit(digit, 28, generator)
        assert image.shape == (28, 28) and 0 <= image.min() and image.max() <= 1.0
        assert 40 < (image > 0.5).sum() < 400
    a = render_digit(3, 28, torch.Generator().manual_seed(1))
    b = render_digit(3, 28, torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)


def test_small_frames_scale_the_glyphs():
    video = MovingDigits(2, frame_size=16, frames=5)[0]
    assert video.shape == (5, 1, 16, 16) and video.max() > 0.5


def write_moving_mnist(path, sequences=12, frames=20, size=64, dtype=np.uint8):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(frames, sequences, size, size)).astype(dtype)
    np.save(path, array)
    return array


def test_moving_mnist_file_layout_and_split(tmp_path):
    path = tmp_path / "mnist_test_seq.npy"
    array = write_moving_mnist(path)
    train = MovingMNIST(path, split="train", test_sequences=2)
    test = MovingMNIST(path, split="test", test_sequences=2)
    assert len(train) == 10 and len(test) == 2
    assert test[1].shape == (20, 1, 64, 64)
    assert torch.allclose(test[1][:, 0], torch.from_numpy(array[:, 11].astype(np.float32) / 255))
    assert torch.allclose(train[0][:, 0], torch.from_numpy(array[:, 0].astype(np.float32) / 255))
    splits = open_splits(DataConfig("moving-mnist", str(path), test_sequences=2))
    assert splits.frame_size == (64, 64) and len(splits.test) == 2


@pytest.mark.parametrize("content, message", [
    (None, "no such Moving MNIST file"),
    (b"this is not numpy", "not a readable .npy file"),
    (np.zeros((20, 64, 64), dtype=np.uint8), "not a Moving MNIST layout"),
    (np.zeros((20, 3, 8, 8), dtype=np.int64), "int64 pixels"),
])
def test_bad_moving_mnist_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "data.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.save(path, content)
    with pytest.raises(CellgenError, match=message):
        MovingMNIST(path)


def test_too_short_or_too_few_sequences(tmp_path):
    path = tmp_path / "short.npy"
    write_moving_mnist(path, sequences=3, frames=8, size=8)
    with pytest.raises(CellgenError, match="8 frames; 20 are needed"):
        MovingMNIST(path)
    with pytest.raises(CellgenError, match="cannot hold out 3"):
        MovingMNIST(path, frames=8, test_sequences=3)


def test_data_argument():
    assert parse_data_argument("moving-digits") == ("moving-digits", None)
    assert parse_data_argument("moving-mnist:/d/m.npy") == ("moving-mnist", "/d/m.npy")
    assert parse_data_argument("m.npy") == ("moving-mnist", "m.npy")
    with pytest.raises(CellgenError, match="unknown --data `moving-digit`") as error:
        parse_data_argument("moving-digit")
    assert "did you mean `moving-digits`" in error.value.render()
    with pytest.raises(CellgenError, match="needs the file"):
        parse_data_argument("moving-mnist")


def test_batch_schedule_is_deterministic_and_shards_the_global_batch():
    stream = BatchSchedule(6, seed=0, length=None)
    assert stream.indices(2) == [12, 13, 14, 15, 16, 17]
    finite = BatchSchedule(4, seed=3, length=10)
    epoch = finite.indices(0) + finite.indices(1) + finite.indices(2)[:2]   # 10 positions = one epoch
    assert sorted(epoch) == list(range(10))
    assert BatchSchedule(4, seed=3, length=10).indices(7) == finite.indices(7)
    assert BatchSchedule(4, seed=4, length=10).indices(0) != finite.indices(0)
    for step in range(4):
        shards = [finite.shard(step, rank, 2) for rank in range(2)]
        assert shards[0] + shards[1] == finite.indices(step)
    check_batch_size(4, 2)
    with pytest.raises(CellgenError, match="cannot be split evenly over 3"):
        check_batch_size(4, 3)
