"""Which sequences each step reads: a pure function of (seed, step), for any number of processes.

A run is reproducible, resumable and distributable only if step s reads the same sequences
whatever happened before it. A dataset of N sequences is read in epochs, each in its own
random order (a permutation seeded by (seed, epoch)); an unbounded generated stream reads
sequences s·B … s·B + B − 1, each one new. With W processes, process r takes the r-th
contiguous slice of the global batch, so that W processes together read exactly the batch
one process would.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.utils.data import Dataset

from cellgen.errors import CellgenError
from cellgen.data.seeding import seeded_generator


@dataclass
class BatchSchedule:
    batch_size: int                 # the global batch
    seed: int
    length: Optional[int]           # sequences in the dataset; None: unbounded
    _orders: dict = field(default_factory=dict, repr=False)

    def indices(self, step: int) -> list[int]:
        start = step * self.batch_size
        if self.length is None:
            return list(range(start, start + self.batch_size))
        return [self._order(epoch)[offset] for epoch, offset in
                (divmod(position, self.length) for position in range(start, start + self.batch_size))]

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = torch.randperm(self.length, generator=seeded_generator("batch-order", self.seed, epoch))
            self._orders = {epoch: order.tolist()}
        return self._orders[epoch]

    def shard(self, step: int, rank: int, world: int) -> list[int]:
        """The slice of step `step`'s batch that process `rank` of `world` reads."""
        per = self.batch_size // world
        return self.indices(step)[rank * per:(rank + 1) * per]


def check_batch_size(batch_size: int, world: int) -> None:
    if batch_size < 1:
        raise CellgenError(f"--batch-size must be positive, not {batch_size}")
    if batch_size % world:
        raise CellgenError(f"--batch-size {batch_size} (the global batch) cannot be split evenly over {world} "
                           "processes", hint=f"use a multiple of {world}")


def load_batch(dataset: Dataset, indices: list[int]) -> torch.Tensor:
    """(B, T, C, H, W) of the dataset's sequences at `indices`."""
    return torch.stack([dataset[i] for i in indices])


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on the training device: through pinned memory to a GPU (an asynchronous copy that
    overlaps the step already queued), as is on the CPU."""
    if device.type != "cuda":
        return batch
    return batch.pin_memory().to(device, non_blocking=True)


def dataset_length(dataset: Dataset) -> Optional[int]:
    return None if getattr(dataset, "unbounded", False) else len(dataset)
