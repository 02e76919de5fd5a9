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

import math
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


@dataclass(frozen=True)
class ReverseScheduledSampling:
    """PredRNN-V2's reverse scheduled sampling (OpenSTL's `reserve_schedule_sampling_exp`).

    Besides the future steps, the context steps 1 … context-1 are masked too, the other way
    round: early in training the model often reads its own predictions of context frames,
    later always the truth, so that it learns long-term dynamics from the context before it
    leans on the observed frames. Over training step s, with s₁ < s₂ and α:

        context steps: η_r = 0.5 before s₁, 1 − 0.5·exp(−(s − s₁)/α) until s₂, then 1
        future steps:  η   = 0.5 before s₁, 0.5 − 0.5·(s − s₁)/(s₂ − s₁) until s₂, then 0

    η is the probability of reading the true frame. The mask (B, T-2) covers steps 1 … T-2
    (`SequenceModel.forward(…, mask_start=1)`): its first context-1 columns draw against η_r,
    the other future-1 against η. Step 0 always reads frame 0. Coins as ScheduledSampling's.
    """

    step_1: int = 25000
    step_2: int = 50000
    alpha: float = 5000.0

    def probabilities(self, step: int) -> tuple[float, float]:
        """(η_r of the context steps, η of the future steps) at training step `step`."""
        if step < self.step_1:
            return 0.5, 0.5
        if step < self.step_2:
            passed = step - self.step_1
            return (1.0 - 0.5 * math.exp(-float(passed) / self.alpha),
                    0.5 - (0.5 / (self.step_2 - self.step_1)) * passed)
        return 1.0, 0.0

    def mask(self, step: int, batch: int, context: int, future: int, seed: int) -> torch.Tensor:
        """(batch, context + future - 2) of 0./1. (1: read the true frame) over steps 1 … T-2."""
        reverse_eta, eta = self.probabilities(step)
        generator = seeded_generator("reverse-scheduled-sampling", seed, step)
        coins = torch.rand(batch, context + future - 2, generator=generator)
        thresholds = torch.tensor([reverse_eta] * (context - 1) + [eta] * (future - 1))
        return (coins < thresholds).float()
