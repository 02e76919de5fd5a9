"""`--data NAME[:PATH]`: which frames a run trains and tests on.

    moving-digits          two stroke-drawn digits bouncing in a square frame, generated on
                           the fly (no download); --frame-size sets the square's side
    moving-mnist:PATH      the standard Moving MNIST file (mnist_test_seq.npy); its last
                           test_sequences are held out for testing
    npy:PATH               any .npy array of sequences, (T, N, H, W) as Moving MNIST or
                           (N, T, C, H, W) (cellgen/data/arrays.py)
    frames:DIR             folders of PNG frames, one folder a sequence (cellgen/data/frames.py)

The file sources hold out their last test_sequences sequences for testing and take the frame
size and channels from the data.

A `DataConfig` says everything needed to draw the same sequences again; checkpoints store
it, so that `cellgen eval` tests on exactly the frames the run was tested on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from torch.utils.data import Dataset

from cellgen.errors import CellgenError, did_you_mean

SOURCES = ("moving-digits", "moving-mnist", "npy", "frames")
FILE_SOURCES = {"moving-mnist": "PATH/mnist_test_seq.npy", "npy": "PATH.npy", "frames": "DIR"}


@dataclass(frozen=True)
class DataConfig:
    name: str
    path: Optional[str] = None
    seed: int = 0
    frame_size: int = 64          # moving-digits only: frames are frame_size × frame_size
    context: int = 10             # observed frames
    future: int = 10              # predicted frames
    test_sequences: int = 1000    # size of the test split

    @property
    def frames(self) -> int:
        return self.context + self.future

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DataConfig":
        return cls(**data)

    def describe(self) -> str:
        if self.name == "python":
            return f"a Python dataset: {self.context} → {self.future} frames, {self.test_sequences} test sequences"
        where = f" from {self.path}" if self.path else f", {self.frame_size}×{self.frame_size}, seed {self.seed}"
        return f"{self.name}{where}: {self.context} → {self.future} frames"


def parse_data_argument(text: str) -> tuple[str, Optional[str]]:
    """`moving-digits` → (name, None); `moving-mnist:PATH` → (name, PATH); a bare `.npy` path → moving-mnist."""
    name, sep, path = text.partition(":")
    if not sep and text.endswith(".npy"):
        return "moving-mnist", text
    if name not in SOURCES:
        hint = did_you_mean(name, SOURCES) or f"known data: {', '.join(SOURCES)}"
        raise CellgenError(f"unknown --data `{text}`", hint=hint)
    if name in FILE_SOURCES and not path:
        what = "directory" if name == "frames" else "file"
        raise CellgenError(f"--data {name} needs the {what}: --data {name}:{FILE_SOURCES[name]}")
    if name == "moving-digits" and sep:
        raise CellgenError(f"--data moving-digits is generated on the fly and reads no file (got `{text}`)")
    return name, path or None


@dataclass
class Splits:
    train: Dataset        # may be unbounded (`train.unbounded`)
    test: Dataset
    frame_size: tuple[int, int]
    channels: int


def open_splits(config: DataConfig) -> Splits:
    """The train and test datasets a config names (errors for missing or malformed files)."""
    if config.context < 1 or config.future < 1:
        raise CellgenError(f"need at least one observed and one predicted frame, "
                           f"not {config.context} → {config.future}")
    if config.name == "moving-digits":
        from cellgen.data.moving_digits import MovingDigits

        if config.frame_size < 8:
            raise CellgenError(f"--frame-size {config.frame_size} is too small for moving digits (at least 8)")
        common = dict(seed=config.seed, frames=config.frames, frame_size=config.frame_size)
        return Splits(MovingDigits(None, split="train", **common),
                      MovingDigits(config.test_sequences, split="test", **common),
                      (config.frame_size, config.frame_size), 1)
    if config.name == "moving-mnist":
        from cellgen.data.moving_mnist import MovingMNIST

        common = dict(test_sequences=config.test_sequences, frames=config.frames)
        train = MovingMNIST(config.path, split="train", **common)
        return Splits(train, MovingMNIST(config.path, split="test", **common), train.frame_size, 1)
    if config.name in ("npy", "frames"):
        from cellgen.data.arrays import ArraySequences
        from cellgen.data.frames import FrameFolders

        kind = ArraySequences if config.name == "npy" else FrameFolders
        common = dict(test_sequences=config.test_sequences, frames=config.frames)
        train = kind(config.path, split="train", **common)
        return Splits(train, kind(config.path, split="test", **common), train.frame_size, train.channels)
    if config.name == "python":
        raise CellgenError("this run was trained on datasets given in Python (cellgen.training.train), which "
                           "cannot be opened again from the command line",
                           hint="evaluate it in Python (cellgen.training.evaluate.evaluate), or export with --no-check")
    raise CellgenError(f"unknown data source `{config.name}`", hint=f"known data: {', '.join(SOURCES)}")
