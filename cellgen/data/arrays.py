"""`--data npy:PATH`: any array of video sequences in a .npy file.

Two layouts, told apart by the number of axes (the two in which video-prediction data ships):

    (T, N, H, W)        time-major, one channel: Moving MNIST's mnist_test_seq.npy (20, 10000, 64, 64)
    (N, T, C, H, W)     sequence-major, C channels: what `np.stack` of (T, C, H, W) clips makes

Pixels are uint8 (0-255, scaled to [0, 1]) or floats already in [0, 1]. The file is
memory-mapped, so opening it reads only its header and each sequence is read when asked for.
The last `test_sequences` sequences are the test split, the others the training split
(`held_out`). Reading `.npy` needs NumPy, a dependency of cellgen.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cellgen.errors import CellgenError

LAYOUTS = "(frames, sequences, height, width) as Moving MNIST, or (sequences, frames, channels, height, width)"


def held_out(total: int, test_sequences: int, split: str, what: str) -> range:
    """The sequences of `split`: the last `test_sequences` of `total` for "test", the rest for "train"."""
    if not 0 < test_sequences < total:
        raise CellgenError(f"{what} has {total} sequences: cannot hold out {test_sequences} for testing",
                           hint="lower --test-sequences")
    if split == "train":
        return range(0, total - test_sequences)
    if split == "test":
        return range(total - test_sequences, total)
    raise ValueError(f"split must be 'train' or 'test', not {split!r}")


def open_array(path: Path, *, layouts: tuple[int, ...] = (4, 5), kind: str = "array") -> np.ndarray:
    """The file's array (a memmap), checked: a clear error for anything else."""
    path = Path(path)
    expected = LAYOUTS if layouts == (4, 5) else "(frames, sequences, height, width), e.g. (20, 10000, 64, 64) " \
                                                 "uint8, as mnist_test_seq.npy"
    if not path.is_file():
        raise CellgenError(f"no such {kind} file: {path}", hint=f"expected a .npy file of {expected}")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise CellgenError(f"{path} is not a readable .npy file ({error})", hint=f"expected {expected}") from None
    if not isinstance(array, np.ndarray) or array.ndim not in layouts:
        shape = getattr(array, "shape", "?")
        raise CellgenError(f"{path} holds an array of shape {shape}, not a {kind} layout", hint=f"expected {expected}")
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise CellgenError(f"{path} holds {array.dtype} pixels; expected uint8 (0-255) or floats in [0, 1]")
    return array


class ArraySequences(Dataset):
    """One split of a .npy file of sequences: items (frames, C, H, W) float32 in [0, 1]."""

    unbounded = False

    def __init__(self, path: Path, *, split: str = "train", test_sequences: int = 1000, frames: int = 20,
                 layouts: tuple[int, ...] = (4, 5), kind: str = "array"):
        self.path = Path(path)
        self.array = open_array(self.path, layouts=layouts, kind=kind)
        self.time_major = self.array.ndim == 4
        length, total = self.array.shape[:2] if self.time_major else self.array.shape[1::-1]
        if frames > length:
            raise CellgenError(f"{self.path} has sequences of {length} frames; {frames} are needed",
                               hint="lower --context or --future")
        self.indices = held_out(total, test_sequences, split, str(self.path))
        self.frames = frames
        self.channels = 1 if self.time_major else int(self.array.shape[2])
        self.frame_size = tuple(int(n) for n in self.array.shape[-2:])
        self.scale = 1 / 255 if self.array.dtype == np.uint8 else 1.0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(index)
        sequence = self.indices[index]
        if self.time_major:
            video = self.array[: self.frames, sequence][:, None]
        else:
            video = self.array[sequence, : self.frames]
        return torch.from_numpy(np.ascontiguousarray(video, dtype=np.float32) * np.float32(self.scale))
