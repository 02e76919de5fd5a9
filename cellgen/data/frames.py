"""`--data frames:DIR`: folders of PNG frames, one folder a sequence (as KTH, Human3.6M and
similar sets are usually extracted from their videos).

    DIR/
      person01_walking_d1/   0001.png 0002.png …     one sequence: its frames in name order
      person01_walking_d2/   …

Frames are ordered by name with numbers compared as numbers (`frame_2.png` before
`frame_10.png`). A folder of n frames gives ⌊n / T⌋ clips of T = context + future frames, one
after the other; the clips of all folders, in folder-name order, are the sequences, and the
last `test_sequences` of them are the test split (so name the folders so that the ones to
test on sort last, and a folder split between the two shares no clip). Every frame must have
the same size and kind (grey: 1 channel; RGB, RGBA or palette: 3); pixels are scaled to
[0, 1]. Only the folder listing is read up front; a clip's PNGs are decoded when asked for
(cellgen/training/png.py: no image library needed).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cellgen.data.arrays import held_out
from cellgen.errors import CellgenError
from cellgen.training.png import PNGError, decode_png


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _read(path: Path) -> np.ndarray:
    try:
        return decode_png(path.read_bytes())
    except PNGError as error:
        raise CellgenError(f"{path}: {error}") from None
    except OSError as error:
        raise CellgenError(f"cannot read {path}: {error.strerror}") from None


def list_clips(root: Path, frames: int) -> list[list[Path]]:
    """Every clip of `frames` consecutive frames under `root`, in order; clear errors for a
    missing or empty DIR."""
    root = Path(root)
    if not root.is_dir():
        raise CellgenError(f"no such frames directory: {root}",
                           hint="--data frames:DIR needs a directory of sequence folders, each holding PNG frames")
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: _natural(p.name))
    if not folders:
        raise CellgenError(f"{root} holds no sequence folders",
                           hint="put each sequence's PNG frames in a folder of its own under it")
    clips = []
    for folder in folders:
        pngs = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".png"), key=lambda p: _natural(p.name))
        clips += [pngs[start:start + frames] for start in range(0, len(pngs) - frames + 1, frames)]
    if not clips:
        longest = max(sum(1 for p in f.iterdir() if p.suffix.lower() == ".png") for f in folders)
        raise CellgenError(f"no folder under {root} has {frames} PNG frames (the longest has {longest})",
                           hint="lower --context or --future")
    return clips


class FrameFolders(Dataset):
    """One split of a directory of PNG sequences: items (frames, C, H, W) float32 in [0, 1]."""

    unbounded = False

    def __init__(self, root: Path, *, split: str = "train", test_sequences: int = 1000, frames: int = 20):
        self.root = Path(root)
        clips = list_clips(self.root, frames)
        self.clips = [clips[i] for i in held_out(len(clips), test_sequences, split, f"{self.root} (clips of {frames} "
                                                                                     "frames)")]
        first = _read(clips[0][0])
        self.frame_size = tuple(int(n) for n in first.shape[:2])
        self.channels = 1 if first.ndim == 2 else 3
        self.frames = frames

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(index)
        pixels = []
        for path in self.clips[index]:
            image = _read(path)
            if image.shape[:2] != self.frame_size or (1 if image.ndim == 2 else 3) != self.channels:
                kind = lambda shape: f"{shape[0]}×{shape[1]} {'grey' if len(shape) == 2 else 'RGB'}"  # noqa: E731
                raise CellgenError(f"{path} is a {kind(image.shape)} frame; the others are "
                                   f"{kind(self.frame_size + (() if self.channels == 1 else (3,)))}",
                                   hint="every frame of a frames:DIR dataset must have the same size and colours")
            pixels.append(image[None] if image.ndim == 2 else image.transpose(2, 0, 1))
        return torch.from_numpy(np.stack(pixels).astype(np.float32) / np.float32(255))
