"""`predictions.png`: ground truth above prediction, frame by frame, for a few test sequences.

    TRUTH       f1 f2 … f10 | f11 … f20
    PREDICTION              | p11 … p20

For each sequence two rows; the observed frames have no prediction under them, a red line
marks where prediction starts, and frame numbers run along the top. Small frames are
enlarged (nearest neighbour) to at least 64 pixels so that a person can see them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cellgen.training.png import GLYPH_HEIGHT, text_mask, write_png

BACKGROUND = (32, 32, 40)
LABEL = (230, 230, 230)
MARK = (220, 40, 40)
GAP = 4


def _to_rgb(frame: np.ndarray, zoom: int) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H·zoom, W·zoom, 3) uint8; one channel is grey, three are colour."""
    frame = np.clip(frame, 0.0, 1.0)
    image = frame[0] if frame.shape[0] != 3 else frame.transpose(1, 2, 0)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = (image * 255 + 0.5).astype(np.uint8)
    return image.repeat(zoom, axis=0).repeat(zoom, axis=1)


def _paint(canvas: np.ndarray, mask: np.ndarray, top: int, left: int, color) -> None:
    region = canvas[top:top + mask.shape[0], left:left + mask.shape[1]]
    region[mask[:region.shape[0], :region.shape[1]]] = color


def prediction_strip(truth: torch.Tensor, prediction: torch.Tensor, context: int) -> np.ndarray:
    """truth (N, T, C, H, W) and prediction (N, T - context, C, H, W), values in [0, 1] → RGB pixels."""
    truth = truth.detach().float().cpu().numpy()
    prediction = prediction.detach().float().cpu().numpy()
    sequences, total, _, height, width = truth.shape
    zoom = max(1, -(-64 // height))
    fh, fw = height * zoom, width * zoom
    label_scale = 2 if fh >= 48 else 1
    labels = [text_mask("truth", label_scale), text_mask("prediction", label_scale)]
    left = max(m.shape[1] for m in labels) + 3 * GAP
    top = GLYPH_HEIGHT * label_scale + 2 * GAP
    row_height = fh + GAP
    canvas = np.empty((top + sequences * (2 * row_height + 2 * GAP), left + total * (fw + GAP) + GAP, 3), np.uint8)
    canvas[:] = BACKGROUND
    for t in range(total):
        number = text_mask(str(t + 1), label_scale)
        _paint(canvas, number, GAP, left + t * (fw + GAP) + (fw - number.shape[1]) // 2, LABEL)
    for n in range(sequences):
        y0 = top + n * (2 * row_height + 2 * GAP)
        for row, mask in enumerate(labels):
            _paint(canvas, mask, y0 + row * row_height + (fh - mask.shape[0]) // 2, GAP, LABEL)
        for t in range(total):
            x0 = left + t * (fw + GAP)
            canvas[y0:y0 + fh, x0:x0 + fw] = _to_rgb(truth[n, t], zoom)
            if t >= context:
                canvas[y0 + row_height:y0 + row_height + fh, x0:x0 + fw] = _to_rgb(prediction[n, t - context], zoom)
    mark = left + context * (fw + GAP) - GAP // 2 - 1
    canvas[top - GAP // 2:, mark:mark + 2] = MARK
    return canvas


def write_prediction_strip(path: Path, truth: torch.Tensor, prediction: torch.Tensor, context: int) -> None:
    write_png(path, prediction_strip(truth, prediction, context))
