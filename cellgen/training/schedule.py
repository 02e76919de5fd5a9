"""Learning-rate schedules and gradient clipping for `cellgen train`.

A schedule is a pure function of (step, total steps): the learning rate of step s is set on
the optimizer just before that step, so a checkpoint needs no scheduler state and a resumed
run takes exactly the learning rates the uninterrupted one would have.

    constant   --lr throughout (predrnn-pytorch's Adam)
    cosine     --lr annealed to 0 along half a cosine over --steps (torch's CosineAnnealingLR
               with T_max = steps, eta_min = 0)
    onecycle   Smith's one-cycle policy as torch's OneCycleLR with its defaults: from
               --lr / 25 up to --lr over the first 30 % of the steps, then down to
               --lr / (25 · 10⁴), both along cosines. Adam's β1 is not cycled (OneCycleLR's
               cycle_momentum=False)

Because both non-constant schedules are laid over --steps, a resumed run keeps its --steps
(commands.py checks it). tests/test_train_schedule.py compares every step's rate with torch's
schedulers.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

SCHEDULES = ("constant", "cosine", "onecycle")
ONECYCLE_PCT_START, ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 0.3, 25.0, 1e4


def learning_rate(schedule: str, base: float, step: int, steps: int) -> float:
    """The rate of step `step` (0-based) of `steps`."""
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * (1 + math.cos(math.pi * step / steps)) / 2
    if schedule == "onecycle":
        initial, final = base / ONECYCLE_DIV, base / ONECYCLE_DIV / ONECYCLE_FINAL_DIV
        # OneCycleLR's phase ends: the peak at step pct·steps − 1, the floor at steps − 1
        peak = float(ONECYCLE_PCT_START * steps) - 1
        last = float(steps) - 1
        if step <= peak:
            return _cosine_between(initial, base, step / peak if peak > 0 else 1.0)
        return _cosine_between(base, final, (step - peak) / (last - peak) if last > peak else 1.0)
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def _cosine_between(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2


def set_learning_rate(optimizer: torch.optim.Optimizer, rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = rate


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> float:
    """Scale the gradients down to a total 2-norm of `max_norm` (0: leave them); returns the
    norm before clipping, which metrics.csv records either way."""
    grads = [p for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(grads, max_norm if max_norm > 0 else math.inf)
    return float(norm)
