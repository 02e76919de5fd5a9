"""`predictions.png`: ground truth above prediction, frame by frame, for a few test sequences.

    TRUTH       f1 f2 … f10 | f11 … f20
    PREDICTION              | p11 … p20

For each sequence two rows; the observed frames have no prediction under them, a red line
marks where prediction starts, and frame numbers run along the top. Small frames are
enlarged (nearest neighbour) to at least 64 pixels so that a person can see them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cellgen.training.png import GLYPH_HEIGHT, text_mask, write_png

BACKGROUND = (32, 32, 40)
LABEL = (230, 230, 230)
MARK = (220, 40, 40)
GAP = 4
LABELS = ("truth", "prediction")


@dataclass(frozen=True)
class StripLayout:
    """Where each frame goes: `box(sequence, row, t)` is the top-left pixel (row 0 truth, 1 prediction)."""

    sequences: int
    frames: int
    frame_height: int
    frame_width: int

    @property
    def zoom(self) -> int:
        return max(1, -(-64 // self.frame_height))

    @property
    def label_scale(self) -> int:
        return 2 if self.frame_height * self.zoom >= 48 else 1

    @property
    def cell(self) -> tuple[int, int]:
        return self.frame_height * self.zoom, self.frame_width * self.zoom

    @property
    def left(self) -> int:
        return max(text_mask(label, self.label_scale).shape[1] for label in LABELS) + 3 * GAP

    @property
    def top(self) -> int:
        return GLYPH_HEIGHT * self.label_scale + 2 * GAP

    def box(self, sequence: int, row: int, t: int) -> tuple[int, int]:
        fh, fw = self.cell
        return (self.top + sequence * (2 * (fh + GAP) + 2 * GAP) + row * (fh + GAP), self.left + t * (fw + GAP))

    @property
    def shape(self) -> tuple[int, int, int]:
        fh, fw = self.cell
        return (self.top + self.sequences * (2 * (fh + GAP) + 2 * GAP), self.left + self.frames * (fw + GAP) + GAP, 3)


def frame_pixels(frame: torch.Tensor, zoom: int) -> torch.Tensor:
    """(C, H, W) in [0, 1] → (H·zoom, W·zoom, 3) uint8; one channel is grey, three are colour."""
    frame = frame.detach().float().cpu().clamp(0.0, 1.0)
    image = frame[0, ..., None].expand(*frame.shape[1:], 3) if frame.shape[0] != 3 else frame.permute(1, 2, 0)
    image = (image * 255 + 0.5).to(torch.uint8)
    return image.repeat_interleave(zoom, dim=0).repeat_interleave(zoom, dim=1)


def _paint(canvas: torch.Tensor, mask: torch.Tensor, top: int, left: int, color) -> None:
    region = canvas[top:top + mask.shape[0], left:left + mask.shape[1]]
    region[mask[:region.shape[0], :region.shape[1]]] = torch.tensor(color, dtype=torch.uint8)


def prediction_strip(truth: torch.Tensor, prediction: torch.Tensor, context: int) -> torch.Tensor:
    """truth (N, T, C, H, W) and prediction (N, T - context, C, H, W), values in [0, 1] → RGB pixels."""
    sequences, total, _, height, width = truth.shape
    layout = StripLayout(sequences, total, height, width)
    fh, fw = layout.cell
    canvas = torch.empty(layout.shape, dtype=torch.uint8)
    canvas[:] = torch.tensor(BACKGROUND, dtype=torch.uint8)
    for t in range(total):
        number = text_mask(str(t + 1), layout.label_scale)
        _paint(canvas, number, GAP, layout.box(0, 0, t)[1] + (fw - number.shape[1]) // 2, LABEL)
    for n in range(sequences):
        for row, label in enumerate(LABELS):
            mask = text_mask(label, layout.label_scale)
            _paint(canvas, mask, layout.box(n, row, 0)[0] + (fh - mask.shape[0]) // 2, GAP, LABEL)
        for t in range(total):
            y, x = layout.box(n, 0, t)
            canvas[y:y + fh, x:x + fw] = frame_pixels(truth[n, t], layout.zoom)
            if t >= context:
                y, x = layout.box(n, 1, t)
                canvas[y:y + fh, x:x + fw] = frame_pixels(prediction[n, t - context], layout.zoom)
    mark = layout.box(0, 0, context)[1] - GAP // 2 - 1
    canvas[layout.top - GAP // 2:, mark:mark + 2] = torch.tensor(MARK, dtype=torch.uint8)
    return canvas


def write_prediction_strip(path: Path, truth: torch.Tensor, prediction: torch.Tensor, context: int) -> None:
    write_png(path, prediction_strip(truth, prediction, context))
