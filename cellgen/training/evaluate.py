"""Evaluation: the model's predictions of the test split's future frames, measured per frame.

The model sees the first `context` frames of each test sequence and predicts the next
`future` autoregressively (no ground truth after the context). Two baselines are measured
on the same frames, so that a number can be judged: copy-last-frame (every future frame is
the last observed one) and blank-frame (all zeros: what a model that learned nothing but the
dark background would score).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
from torch.utils.data import Dataset

from cellgen.errors import CellgenError
from cellgen.training.batches import load_batch
from cellgen.training.metrics import MetricTotals

PREDICTORS = ("model", "copy_last_frame", "blank_frame")


@dataclass
class Evaluation:
    results: dict          # predictor → MetricTotals.result()
    truth: torch.Tensor    # the first few test sequences, whole (for the picture)
    prediction: torch.Tensor  # the model's future frames for them

    def summary_line(self) -> str:
        m, copy = self.results["model"], self.results["copy_last_frame"]
        return (f"test ({m['sequences']} sequences): MSE/frame {m['mse']:.2f} (copy last frame {copy['mse']:.2f}), "
                f"MAE/frame {m['mae']:.2f}, SSIM {m['ssim']:.4f}, PSNR {m['psnr']:.2f} dB")


class MadeOnce(Dataset):
    """A test split whose sequences are made once per run: an evaluation reads the same first
    N sequences every time, and generating them again (moving digits) cost more than running
    the model on them. Holds what was read: 256 sequences of 20 64×64 frames are 84 MB."""

    def __init__(self, dataset: Dataset):
        self.dataset, self.made = dataset, {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        if index not in self.made:
            self.made[index] = self.dataset[index]
        return self.made[index]


@torch.no_grad()
def evaluate(model, dataset: Dataset, *, context: int, future: int, sequences: int, batch_size: int,
             device: torch.device = torch.device("cpu"), keep: int = 3, ssim: str = "gaussian",
             baselines: Optional[dict] = None) -> Evaluation:
    """Metrics of the model and the baselines on the first `sequences` test sequences.

    `baselines`: a dict kept across the evaluations of one run on the same test split. The
    baselines' scores depend only on the test frames, so the first evaluation stores them there
    and later ones reuse them (their SSIMs cost as much as the model's)."""
    available = len(dataset)
    if sequences < 1:
        raise CellgenError(f"evaluation needs at least one test sequence, not {sequences}")
    sequences = min(sequences, available)
    key = (sequences, context, future, ssim)
    known = (baselines or {}).get(key)
    measured = PREDICTORS if known is None else ("model",)
    totals = {name: MetricTotals(ssim) for name in measured}
    kept_truth, kept_prediction = [], []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, sequences, batch_size):
            video = load_batch(dataset, list(range(start, min(start + batch_size, sequences)))).to(device)
            observed, truth = video[:, :context], video[:, context:context + future]
            predicted = model.predict(observed, future)
            totals["model"].add(predicted, truth)
            if known is None:
                totals["copy_last_frame"].add(observed[:, -1:].expand_as(truth), truth)
                totals["blank_frame"].add(torch.zeros_like(truth), truth)
            if sum(len(t) for t in kept_truth) < keep:
                kept_truth.append(video[:keep].cpu())
                kept_prediction.append(predicted[:keep].clamp(0, 1).cpu())
    finally:
        model.train(was_training)
    results = {name: total.result() for name, total in totals.items()}
    if known is None and baselines is not None:
        baselines[key] = {name: results[name] for name in PREDICTORS[1:]}
    results.update(copy.deepcopy(known or {}))  # each evaluation's record its own
    return Evaluation({name: results[name] for name in PREDICTORS},
                      torch.cat(kept_truth)[:keep], torch.cat(kept_prediction)[:keep])
