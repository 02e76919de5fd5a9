"""Scheduled sampling: during training, sometimes read the true future frame instead of the
model's own prediction, less and less often (Bengio et al. 2015; PredRNN's training).

predrnn-pytorch starts with probability η = 1 of reading the truth and lowers it by a fixed
amount per iteration until it reaches 0 at `sampling_stop_iter`. `ScheduledSampling(stop)`
is that linear schedule: η(step) = max(0, 1 − step / stop). Each (sequence, future step)
draws its own coin.

The coins come from a generator seeded by (seed, step) alone, and are drawn for the whole
global batch: an interrupted and resumed run, and every process of a distributed run (each
taking its own rows), see exactly the masks of one uninterrupted single-process run.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cellgen.data.seeding import seeded_generator


@dataclass(frozen=True)
class ScheduledSampling:
    """Linear decay of the probability of reading the true frame, from 1 at step 0 to 0 at `stop`."""

    stop: int

    def probability(self, step: int) -> float:
        if self.stop <= 0:
            return 0.0
        return max(0.0, 1.0 - step / self.stop)

    def mask(self, step: int, batch: int, length: int, seed: int) -> torch.Tensor | None:
        """(batch, length) of 0./1. (1: read the true frame), or None once η is 0."""
        eta = self.probability(step)
        if eta <= 0.0:
            return None
        coins = torch.rand(batch, length, generator=seeded_generator("scheduled-sampling", seed, step))
        return (coins < eta).float()
