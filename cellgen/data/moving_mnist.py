"""The standard Moving MNIST file, for users who have it: `mnist_test_seq.npy`.

Srivastava et al.'s released file holds 10,000 sequences of 20 frames of 64×64 uint8 pixels,
stored time-major: shape (20, 10000, 64, 64). It is conventionally a test set; a user who
has only this file can train on its first sequences and test on the last `test_sequences`
(1,000 by default), which is what `--data moving-mnist:PATH` does. The file is memory-mapped,
so opening it costs nothing and each sequence is read when asked for.

Reading `.npy` needs NumPy, which cellgen does not otherwise require; it is imported here only.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from cellgen.errors import CellgenError

LAYOUT = "(frames, sequences, height, width), e.g. (20, 10000, 64, 64) uint8, as mnist_test_seq.npy"


def _numpy():
    try:
        import numpy
    except ImportError:
        raise CellgenError("reading a Moving MNIST .npy file needs NumPy", hint="pip install numpy") from None
    return numpy


def open_moving_mnist(path: Path):
    """The file's array (a NumPy memmap), checked; a clear error for anything else."""
    np = _numpy()
    path = Path(path)
    if not path.is_file():
        raise CellgenError(f"no such Moving MNIST file: {path}",
                           hint="pass the path of mnist_test_seq.npy, e.g. --data moving-mnist:data/mnist_test_seq.npy")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise CellgenError(f"{path} is not a readable .npy file ({error})", hint=f"expected {LAYOUT}") from None
    if not isinstance(array, np.ndarray) or array.ndim != 4:
        shape = getattr(array, "shape", "?")
        raise CellgenError(f"{path} holds an array of shape {shape}, not a Moving MNIST layout",
                           hint=f"expected {LAYOUT}")
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise CellgenError(f"{path} holds {array.dtype} pixels; expected uint8 (0-255) or floats in [0, 1]")
    return array


class MovingMNIST(Dataset):
    """One split of a Moving MNIST file: items (frames, 1, H, W) float32 in [0, 1]."""

    def __init__(self, path: Path, *, split: str = "train", test_sequences: int = 1000, frames: int = 20):
        self.path = Path(path)
        self.array = open_moving_mnist(self.path)
        length, total = self.array.shape[0], self.array.shape[1]
        if frames > length:
            raise CellgenError(f"{self.path} has sequences of {length} frames; {frames} are needed")
        if not 0 < test_sequences < total:
            raise CellgenError(f"{self.path} has {total} sequences: cannot hold out {test_sequences} for testing")
        if split == "train":
            self.start, self.stop = 0, total - test_sequences
        elif split == "test":
            self.start, self.stop = total - test_sequences, total
        else:
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        self.frames = frames
        self.frame_size = tuple(self.array.shape[2:])
        self.scale = 1 / 255 if self.array.dtype == _numpy().uint8 else 1.0

    unbounded = False

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(index)
        np = _numpy()
        video = np.asarray(self.array[: self.frames, self.start + index], dtype=np.float32) * self.scale
        return torch.from_numpy(np.ascontiguousarray(video[:, None]))
