"""`predictions.gif`: truth beside prediction, frame by frame, for a few test sequences.

    FRAME 14 / 20: PREDICTED
    TRUTH        PREDICTION
    [truth 14]   [prediction 14]      one row per test sequence
    …

While the model reads the observed frames, both columns show the frame it is given, framed
in grey ("OBSERVED"); from the first predicted frame on, the right column is the model's
prediction, framed in red ("PREDICTED"). Frames are enlarged (nearest neighbour) to at least
96 pixels; 5 frames a second, the last one held for 1.5 s, looping. Greys are quantised to
224 levels (the other palette entries are the label colours), which the eye does not see.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cellgen.training.gif import write_gif
from cellgen.training.png import GLYPH_HEIGHT, text_mask
from cellgen.training.raster import Canvas

GREYS = 224
BACKGROUND, LABEL, OBSERVED, PREDICTED = (32, 32, 40), (230, 230, 230), (120, 120, 130), (220, 40, 40)
COLOURS = (BACKGROUND, LABEL, OBSERVED, PREDICTED)
GAP, BORDER, SCALE = 8, 3, 2
FRAME_DELAY_CS, LAST_DELAY_CS = 20, 150


def palette() -> np.ndarray:
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:GREYS] = np.round(np.arange(GREYS) * 255 / (GREYS - 1)).astype(np.uint8)[:, None]
    for index, colour in enumerate(COLOURS):
        table[GREYS + index] = colour
    return table


def _indexed(rgb: np.ndarray) -> np.ndarray:
    """RGB pixels of this picture (greys and the label colours) → palette indices, through
    the few distinct colours it has (one lookup table instead of a comparison per colour)."""
    keys = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    distinct, inverse = np.unique(keys.reshape(-1), return_inverse=True)
    special = {(r << 16) | (g << 8) | b: GREYS + i for i, (r, g, b) in enumerate(COLOURS)}
    table = np.array([special.get(int(k), round((int(k) >> 16) * (GREYS - 1) / 255)) for k in distinct],
                     dtype=np.uint8)
    return table[inverse].reshape(rgb.shape[:2])


def _frame(frame: torch.Tensor, zoom: int) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H·zoom, W·zoom, 3) grey uint8 (colour frames become their mean)."""
    grey = frame.detach().float().cpu().clamp(0, 1).mean(0).numpy()
    pixels = np.round(grey * 255).astype(np.uint8).repeat(zoom, 0).repeat(zoom, 1)
    return np.repeat(pixels[..., None], 3, axis=-1)


def animation_frames(truth: torch.Tensor, prediction: torch.Tensor, context: int) -> list[np.ndarray]:
    """truth (N, T, C, H, W), prediction (N, T - context, C, H, W) → T RGB pictures."""
    sequences, total, _, height, width = truth.shape
    zoom = max(1, -(-96 // height))
    fh, fw = height * zoom, width * zoom
    caption_h, header_h = GLYPH_HEIGHT * SCALE + 2 * GAP, GLYPH_HEIGHT * SCALE + GAP
    cell_w = max(fw + 2 * BORDER, 10 * 6 * SCALE)        # wide enough for "PREDICTION"
    canvas_h = caption_h + header_h + sequences * (fh + 2 * BORDER + GAP) + GAP
    caption_w = text_mask(f"FRAME {total} / {total}: PREDICTED", SCALE).shape[1]
    canvas_w = max(2 * cell_w + 3 * GAP, caption_w + 2 * GAP)
    cell_w = (canvas_w - 3 * GAP) // 2
    pictures = []
    for t in range(total):
        future = t >= context
        canvas = Canvas(canvas_h, canvas_w, BACKGROUND)
        state = "PREDICTED" if future else "OBSERVED"
        canvas.text(f"FRAME {t + 1} / {total}: {state}", GAP, canvas_w // 2, PREDICTED if future else LABEL, SCALE,
                    align="center")
        for column, title in enumerate(("TRUTH", "PREDICTION")):
            centre = GAP + column * (cell_w + GAP) + cell_w // 2
            canvas.text(title, caption_h, centre, LABEL, SCALE, align="center")
        for n in range(sequences):
            top = caption_h + header_h + n * (fh + 2 * BORDER + GAP)
            shown = (truth[n, t], prediction[n, t - context] if future else truth[n, t])
            for column, frame in enumerate(shown):
                left = GAP + column * (cell_w + GAP) + (cell_w - fw - 2 * BORDER) // 2
                border = PREDICTED if future and column == 1 else OBSERVED
                canvas.rect(top, left, fh + 2 * BORDER, fw + 2 * BORDER, border)
                canvas.paste(top + BORDER, left + BORDER, _frame(frame, zoom))
        pictures.append(canvas.pixels)
    return pictures


def write_prediction_animation(path: Path, truth: torch.Tensor, prediction: torch.Tensor, context: int) -> None:
    pictures = animation_frames(truth, prediction, context)
    delays = [FRAME_DELAY_CS] * (len(pictures) - 1) + [LAST_DELAY_CS]
    write_gif(Path(path), [_indexed(p) for p in pictures], palette(), delays)
