"""`curves.png`: a run's training loss and test MSE against the step, side by side.

    TRAINING LOSS (MSE PER PIXEL, LOG SCALE)        TEST MSE PER FRAME
    every step (light) and a moving average         the model at each evaluation, and the
    over 1/20 of the steps (bright)                 copy-last-frame and blank-frame baselines

Drawn with cellgen/training/raster.py and written with the project's PNG writer; it is
rewritten with metrics.csv at every checkpoint.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from cellgen.training.png import GLYPH_HEIGHT, write_png
from cellgen.training.raster import Canvas

BACKGROUND, PANEL, GRID, AXIS, TEXT = (250, 250, 252), (255, 255, 255), (225, 228, 235), (90, 90, 100), (30, 30, 40)
RAW, SMOOTH = (160, 190, 230), (20, 80, 200)
MODEL, COPY_LAST, BLANK = (20, 80, 200), (230, 110, 20), (120, 120, 120)
PANEL_WIDTH, PANEL_HEIGHT, MARGIN_LEFT, MARGIN_BOTTOM, MARGIN_TOP = 520, 330, 70, 44, 40
SCALE = 2 if PANEL_HEIGHT >= 300 else 1


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round numbers (1, 2 or 5 × 10^k apart) covering [low, high]."""
    if not high > low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}E{int(exponent)}"
    return f"{value:.6g}"


class _Panel:
    """A plot area inside the canvas, mapping data (x, y) to pixels."""

    def __init__(self, canvas: Canvas, left: int, title: str, x_range, y_range, log_y: bool = False):
        self.canvas, self.log_y = canvas, log_y
        self.left, self.top = left + MARGIN_LEFT, MARGIN_TOP
        self.width, self.height = PANEL_WIDTH - MARGIN_LEFT - 20, PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
        self.x0, self.x1 = x_range
        self.y0, self.y1 = (math.log10(y_range[0]), math.log10(y_range[1])) if log_y else y_range
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1
        canvas.rect(self.top, self.left, self.height, self.width, PANEL)
        canvas.text(title, 12, left + PANEL_WIDTH // 2, TEXT, align="center")
        self._grid()

    def xy(self, x: float, y: float) -> tuple[float, float]:
        y = math.log10(max(y, 1e-30)) if self.log_y else y
        return (self.left + (x - self.x0) / (self.x1 - self.x0) * (self.width - 1),
                self.top + (1 - (y - self.y0) / (self.y1 - self.y0)) * (self.height - 1))

    def _grid(self) -> None:
        c = self.canvas
        for x in nice_ticks(self.x0, self.x1):
            px, _ = self.xy(x, 10 ** self.y0 if self.log_y else self.y0)
            c.rect(self.top, int(px), self.height, 1, GRID)
            c.text(_label(x), self.top + self.height + 6, int(px), TEXT, align="center")
        if self.log_y:
            ticks = [10.0 ** e for e in range(math.floor(self.y0), math.ceil(self.y1) + 1)
                     if self.y0 - 1e-9 <= e <= self.y1 + 1e-9]
            if len(ticks) < 3:  # less than two decades: round numbers in between
                ticks = [m * 10.0 ** e for e in range(math.floor(self.y0) - 1, math.ceil(self.y1) + 1)
                         for m in (1, 2, 5) if self.y0 - 1e-9 <= math.log10(m * 10.0 ** e) <= self.y1 + 1e-9]
            if len(ticks) < 3:  # less than a factor of 5: evenly spaced round numbers
                ticks = [y for y in nice_ticks(10 ** self.y0, 10 ** self.y1) if y > 0]
        else:
            ticks = nice_ticks(self.y0, self.y1)
        for y in ticks:
            _, py = self.xy(0 if not self.log_y else self.x0, y)
            if self.top - 1 <= py <= self.top + self.height:
                c.rect(int(py), self.left, 1, self.width, GRID)
                c.text(_label(y), int(py) - GLYPH_HEIGHT // 2, self.left - 6, TEXT, align="right")
        c.rect(self.top, self.left, self.height, 1, AXIS)
        c.rect(self.top + self.height - 1, self.left, 1, self.width, AXIS)
        c.text("STEP", self.top + self.height + 22, self.left + self.width // 2, TEXT, align="center")

    def plot(self, xs, ys, color, thickness: int = 2, dash: int = 0, dots: bool = False) -> None:
        points = [self.xy(x, y) for x, y in zip(xs, ys)]
        if len(points) == 1:
            points = points * 2
        self.canvas.line(points, color, thickness, dash)
        if dots:
            for x, y in points:
                self.canvas.rect(int(y) - 3, int(x) - 3, 7, 7, color)

    def legend(self, entries: list[tuple[str, tuple]]) -> None:
        """Labelled swatches in a boxed corner (top right), drawn over the lines."""
        from cellgen.training.png import text_mask

        width = max(text_mask(label).shape[1] for label, _ in entries) + 40
        height = len(entries) * (GLYPH_HEIGHT + 8) + 8
        right = self.left + self.width
        self.canvas.rect(self.top + 1, right - width - 1, height + 2, width + 2, AXIS)
        self.canvas.rect(self.top + 2, right - width, height, width, PANEL)
        top = self.top + 8
        for label, color in entries:
            right = self.left + self.width - 8
            width = self.canvas.text(label, top, right, TEXT, align="right")
            self.canvas.rect(top + 2, right - width - 22, 3, 16, color)
            top += GLYPH_HEIGHT + 8


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def curves_picture(loss_history: list, evaluations: list) -> np.ndarray:
    """The (H, W, 3) uint8 picture of a run's curves."""
    canvas = Canvas(PANEL_HEIGHT, 2 * PANEL_WIDTH, BACKGROUND)
    steps = np.array([s for s, _ in loss_history], dtype=float)
    losses = np.array([v for _, v in loss_history], dtype=float)
    last = float(steps[-1]) if len(steps) else 1.0
    if len(steps):
        positive = losses[losses > 0]
        low, high = (positive.min(), positive.max()) if len(positive) else (1e-3, 1.0)
        panel = _Panel(canvas, 0, "TRAINING LOSS (MSE PER PIXEL, LOG SCALE)", (0, last), (low * 0.8, high * 1.25),
                       log_y=True)
        panel.plot(steps, losses, RAW, thickness=1)
        smooth = _moving_average(losses, max(1, len(losses) // 20))
        panel.plot(steps, smooth, SMOOTH, thickness=2)
        panel.legend([("EVERY STEP", RAW), (f"MEAN OF {max(1, len(losses) // 20)} STEPS", SMOOTH)])
    else:
        _Panel(canvas, 0, "TRAINING LOSS: NO STEPS YET", (0, 1), (0, 1))
    if evaluations:
        xs = [e["step"] for e in evaluations]
        series = {"model": [e["model"]["mse"] for e in evaluations],
                  "copy": [e["copy_last_frame"]["mse"] for e in evaluations],
                  "blank": [e["blank_frame"]["mse"] for e in evaluations]}
        top = max(max(v) for v in series.values())
        panel = _Panel(canvas, PANEL_WIDTH, "TEST MSE PER FRAME", (0, last), (0, top * 1.1))
        panel.plot([0, last], [series["copy"][-1]] * 2, COPY_LAST, dash=8)
        panel.plot([0, last], [series["blank"][-1]] * 2, BLANK, dash=8)
        panel.plot(xs, series["model"], MODEL, dots=True)
        panel.legend([("MODEL", MODEL), ("COPY LAST FRAME", COPY_LAST), ("BLANK FRAME", BLANK)])
    else:
        _Panel(canvas, PANEL_WIDTH, "TEST MSE PER FRAME: NO EVALUATION YET", (0, 1), (0, 1))
    return canvas.pixels


def write_curves(path: Path, loss_history: list, evaluations: list) -> None:
    write_png(Path(path), torch.from_numpy(curves_picture(loss_history, evaluations)))
