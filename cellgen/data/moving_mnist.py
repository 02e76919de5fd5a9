"""The standard Moving MNIST file, for users who have it: `mnist_test_seq.npy`.

Srivastava et al.'s released file holds 10,000 sequences of 20 frames of 64×64 uint8 pixels,
stored time-major: shape (20, 10000, 64, 64). It is conventionally a test set; a user who
has only this file can train on its first sequences and test on the last `test_sequences`
(1,000 by default), which is what `--data moving-mnist:PATH` does. It is `--data npy:PATH`
(cellgen/data/arrays.py) held to Moving MNIST's own layout.
"""
from __future__ import annotations

from pathlib import Path

from cellgen.data.arrays import ArraySequences


class MovingMNIST(ArraySequences):
    """One split of a Moving MNIST file: items (frames, 1, H, W) float32 in [0, 1]."""

    def __init__(self, path: Path, *, split: str = "train", test_sequences: int = 1000, frames: int = 20):
        super().__init__(path, split=split, test_sequences=test_sequences, frames=frames, layouts=(4,),
                         kind="Moving MNIST")
