"""`cellgen.training.train(...)`: the training loop of `cellgen train`, on any dataset.

    from cellgen.training import train
    run = train("convlstm", my_dataset, steps=500, out="runs/mine", params={"hidden": 32}, context=10,
                lr_schedule="cosine", clip_grad=1.0)
    run.model          # the trained SequenceModel (eval mode)
    run.metrics        # what metrics.json holds: losses, evaluations, configuration

`data` is any map-style `torch.utils.data.Dataset` (`len(data)`, `data[i]`) whose items are
sequences shaped (T, C, H, W) with values in [0, 1], tensors or NumPy arrays; every item
must have the same C, H, W and at least `context + future` frames (the first ones are used).
`test_data` is the held-out set; without it, the last `test_sequences` items of `data` (10 %,
at least 1) are held out. Everything else is the command's: the same run directory, files,
options (`**options` are TrainConfig's: batch_size, lr, lr_schedule, clip_grad, ssim, log,
seed, scheduled_sampling, eval_every, eval_sequences, …) and determinism. Because the
datasets live in Python, `cellgen eval` and `cellgen export` of such a run cannot reopen its
test data: evaluate it in Python, or export with `--no-check`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch.utils.data import Dataset

from cellgen.data.arrays import held_out
from cellgen.data.sources import DataConfig, Splits
from cellgen.errors import CellgenError


@dataclass
class TrainedRun:
    model: torch.nn.Module
    metrics: dict
    out: Path


class CheckedSequences(Dataset):
    """A user's dataset seen through the checks the trainer relies on: float32 (frames, C, H, W)
    in [0, 1], the first `frames` frames of each item; a clear error names the item that is not."""

    unbounded = False

    def __init__(self, dataset: Dataset, frames: int, indices: Optional[range] = None, what: str = "data"):
        try:
            length = len(dataset)
        except TypeError:
            raise CellgenError(f"{what} must be a map-style Dataset with a length (len(data), data[i])") from None
        self.dataset, self.frames, self.what = dataset, frames, what
        self.indices = range(length) if indices is None else indices
        if not len(self.indices):
            raise CellgenError(f"{what} holds no sequences")
        first = self[0]
        self.channels, self.frame_size = int(first.shape[1]), (int(first.shape[2]), int(first.shape[3]))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(index)
        where = f"{self.what}[{self.indices[index]}]"
        item = torch.as_tensor(self.dataset[self.indices[index]])
        if item.ndim != 4:
            raise CellgenError(f"{where} has shape {tuple(item.shape)}; a sequence is (frames, channels, height, "
                               "width)")
        if item.shape[0] < self.frames:
            raise CellgenError(f"{where} has {item.shape[0]} frames; context + future = {self.frames} are needed")
        item = item[: self.frames].to(torch.float32)
        if hasattr(self, "channels") and (item.shape[1], tuple(item.shape[2:])) != (self.channels, self.frame_size):
            raise CellgenError(f"{where} has frames of {tuple(item.shape[1:])}; the first item's are "
                               f"{(self.channels, *self.frame_size)}")
        low, high = float(item.min()), float(item.max())
        if low < 0 or high > 1:
            raise CellgenError(f"{where} has values in [{low:g}, {high:g}]; frames must be in [0, 1]",
                               hint="scale the pixels, e.g. uint8 frames / 255")
        return item.contiguous()


def train(spec: Union[str, Path], data: Dataset, *, steps: int, out: Union[str, Path],
          test_data: Optional[Dataset] = None, context: int = 10, future: Optional[int] = None,
          test_sequences: Optional[int] = None, params: Optional[dict] = None, layers: int = 2, patch: int = 4,
          embed: Optional[int] = None, opt_level: int = 2, device: Union[str, torch.device] = "cpu",
          resume: bool = False, force: bool = False, show_progress: bool = False, **options: Any) -> TrainedRun:
    """Train a sequence model of `spec` on `data`; see the module docstring."""
    from cellgen.sequence import SequenceConfig
    from cellgen.training.checkpoint import load_checkpoint, model_from_checkpoint
    from cellgen.training.commands import _check_fresh_out_dir, _clear_run_files, _never_checkpointed
    from cellgen.training.config import TrainConfig
    from cellgen.training.distributed import Distributed
    from cellgen.training.trainer import Run, train as run_training

    known = {f.name for f in fields(TrainConfig)} - {"steps"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"train() got unknown options {unknown}; the training options are {sorted(known)}")
    out = Path(out)
    if future is None:
        future = _length(data) - context
    if context < 1 or future < 1:
        raise CellgenError(f"need at least one observed and one predicted frame, not {context} → {future}")
    frames = context + future
    if test_data is None:
        total = len(data)
        held = test_sequences if test_sequences is not None else max(1, total // 10)
        train_set = CheckedSequences(data, frames, held_out(total, held, "train", "data"))
        test_set = CheckedSequences(data, frames, held_out(total, held, "test", "data"), what="data")
    else:
        train_set = CheckedSequences(data, frames)
        test_set = CheckedSequences(test_data, frames, what="test_data")
    if (train_set.channels, train_set.frame_size) != (test_set.channels, test_set.frame_size):
        raise CellgenError(f"data has frames of {(train_set.channels, *train_set.frame_size)}, test_data of "
                           f"{(test_set.channels, *test_set.frame_size)}")
    splits = Splits(train_set, test_set, train_set.frame_size, train_set.channels)
    data_config = DataConfig("python", None, frame_size=train_set.frame_size[0], context=context, future=future,
                             test_sequences=len(test_set))
    payload = None
    if resume and (out / "checkpoint.pt").is_file():
        payload = load_checkpoint(out)
        model_config = SequenceConfig.from_dict(payload["model_config"])
        stored = payload["train_config"]
        for key in TrainConfig.LOCKED_ON_RESUME:
            if key in options and options[key] != stored.get(key):
                raise CellgenError(f"{key}={options[key]!r} differs from the run's {stored.get(key)!r}",
                                   hint="a resumed run keeps its training settings")
        train_config = TrainConfig.from_dict({**stored, **options, "steps": steps})
    else:
        _check_fresh_out_dir(out, force)
        if force or _never_checkpointed(out):
            _clear_run_files(out)
        model_config = SequenceConfig.for_spec(str(spec), params=dict(params or {}), layers=layers, patch=patch,
                                               frame_channels=train_set.channels, frame_size=train_set.frame_size,
                                               embed=embed, opt_level=opt_level)
        train_config = TrainConfig(steps=steps, **options)
    dist = Distributed(device=torch.device(device))
    metrics = run_training(Run(out, model_config, data_config, train_config, dist, payload,
                               show_progress=show_progress, splits=splits))
    return TrainedRun(model_from_checkpoint(load_checkpoint(out)), metrics, out)


def _length(data: Dataset) -> int:
    first = torch.as_tensor(data[0])
    if first.ndim != 4:
        raise CellgenError(f"data[0] has shape {tuple(first.shape)}; a sequence is (frames, channels, height, width)")
    return int(first.shape[0])
