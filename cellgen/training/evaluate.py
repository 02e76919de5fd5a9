"""Evaluation: the model's predictions of the test split's future frames, measured per frame.

The model sees the first `context` frames of each test sequence and predicts the next
`future` autoregressively (no ground truth after the context). Two baselines are measured
on the same frames, so that a number can be judged: copy-last-frame (every future frame is
the last observed one) and blank-frame (all zeros: what a model that learned nothing but the
dark background would score).
"""
from __future__ import annotations

from dataclasses import dataclass

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


@torch.no_grad()
def evaluate(model, dataset: Dataset, *, context: int, future: int, sequences: int, batch_size: int,
             device: torch.device = torch.device("cpu"), keep: int = 3, ssim: str = "gaussian") -> Evaluation:
    """Metrics of the model and the baselines on the first `sequences` test sequences."""
    available = len(dataset)
    if sequences < 1:
        raise CellgenError(f"evaluation needs at least one test sequence, not {sequences}")
    sequences = min(sequences, available)
    totals = {name: MetricTotals(ssim) for name in PREDICTORS}
    kept_truth, kept_prediction = [], []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, sequences, batch_size):
            video = load_batch(dataset, list(range(start, min(start + batch_size, sequences)))).to(device)
            observed, truth = video[:, :context], video[:, context:context + future]
            predicted = model.predict(observed, future)
            totals["model"].add(predicted, truth)
            totals["copy_last_frame"].add(observed[:, -1:].expand_as(truth), truth)
            totals["blank_frame"].add(torch.zeros_like(truth), truth)
            if sum(len(t) for t in kept_truth) < keep:
                kept_truth.append(video[:keep].cpu())
                kept_prediction.append(predicted[:keep].clamp(0, 1).cpu())
    finally:
        model.train(was_training)
    return Evaluation({name: total.result() for name, total in totals.items()},
                      torch.cat(kept_truth)[:keep], torch.cat(kept_prediction)[:keep])
