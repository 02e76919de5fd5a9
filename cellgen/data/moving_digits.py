"""Moving-MNIST-style sequences generated on the fly: two digits bouncing in a square frame.

The motion is Srivastava et al.'s (2015) generator's: each glyph starts at a random place
with a random direction and constant speed, and bounces off the frame's edges; glyphs are
combined with a pixelwise maximum. The glyphs are stroke-drawn digits (glyphs.py) instead
of MNIST images, so nothing is downloaded; at 64×64 with 28×28 glyphs and 2-4 px per frame
the statistics are those of Moving MNIST.

Sequence i of a split is a function of (seed, split, i) only, so that any process, at any
time, in any order, draws the same sequence: a resumed or distributed run needs no state
for its data. Train and test use separate random streams.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch.utils.data import Dataset

from cellgen.data.glyphs import render_digit
from cellgen.data.seeding import seeded_generator
from cellgen.runtime.threads import one_thread

SPLITS = {"train": 0, "test": 1}


class MovingDigits(Dataset):
    """`sequences` sequences of `frames` frames, each (frames, 1, size, size) float32 in [0, 1].

    `sequences=None` is an unbounded stream (training draws fresh sequences at every step).
    """

    def __init__(self, sequences: Optional[int], *, split: str = "train", seed: int = 0, frames: int = 20,
                 frame_size: int = 64, digits: int = 2, glyph_size: Optional[int] = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, not {split!r}")
        self.sequences = sequences
        self.split = split
        self.seed = seed
        self.frames = frames
        self.frame_size = frame_size
        self.digits = digits
        self.glyph_size = glyph_size or max(4, round(frame_size * 28 / 64))
        if self.glyph_size > frame_size:
            raise ValueError(f"glyphs of {self.glyph_size} px do not fit in {frame_size}×{frame_size} frames")

    @property
    def unbounded(self) -> bool:
        return self.sequences is None

    def __len__(self) -> int:
        if self.sequences is None:
            raise TypeError("an unbounded MovingDigits stream has no length")
        return self.sequences

    def __getitem__(self, index: int) -> torch.Tensor:
        if index < 0 or (self.sequences is not None and index >= self.sequences):
            raise IndexError(index)
        return self.generate(index)

    def generate(self, index: int) -> torch.Tensor:
        with one_thread():
            return self._generate(index)

    def _generate(self, index: int) -> torch.Tensor:
        generator = seeded_generator("moving-digits", self.seed, self.split, index)
        uniform = lambda low, high: low + (high - low) * float(torch.rand((), generator=generator,  # noqa: E731
                                                                           dtype=torch.float64))
        size, glyph = self.frame_size, self.glyph_size
        limit = size - glyph
        scale = size / 64
        frame_index = torch.arange(self.frames).view(-1, 1, 1)
        offsets = torch.arange(glyph)
        video = torch.zeros((self.frames, size, size), dtype=torch.float32)
        for _ in range(self.digits):
            image = render_digit(int(torch.randint(10, (), generator=generator)), glyph, generator)
            angle = uniform(0, 2 * math.pi)
            speed = uniform(2.0, 4.0) * scale
            velocity = [math.cos(angle) * speed, math.sin(angle) * speed]
            position = [uniform(0, limit), uniform(0, limit)]
            corners = []  # the glyph's top-left pixel in every frame: the motion is scalar work
            for _ in range(self.frames):
                corners.append([int(round(v)) for v in position])
                position, velocity = _bounce([p + v for p, v in zip(position, velocity)], velocity, limit)
            xs, ys = torch.tensor(corners).unbind(1)
            # every frame of this digit in one indexed write, then one maximum with the others
            layer = torch.zeros_like(video)
            layer[frame_index, (ys.view(-1, 1) + offsets).unsqueeze(2), (xs.view(-1, 1) + offsets).unsqueeze(1)] = image
            torch.maximum(video, layer, out=video)
        return video.unsqueeze(1)


def _bounce(position: list[float], velocity: list[float], limit: float) -> tuple[list[float], list[float]]:
    """Reflect a position that left [0, limit] back inside, and flip that velocity component."""
    position, velocity = list(position), list(velocity)
    for axis in range(2):
        if position[axis] < 0:
            position[axis], velocity[axis] = -position[axis], -velocity[axis]
        elif position[axis] > limit:
            position[axis], velocity[axis] = 2 * limit - position[axis], -velocity[axis]
        position[axis] = min(max(position[axis], 0.0), float(limit))
    return position, velocity
