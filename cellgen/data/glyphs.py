"""Handwriting-like digit glyphs drawn from strokes, so that no MNIST download is needed.

Each digit 0-9 is a few polylines and elliptic arcs in a unit box (x right, y down). A glyph
is rendered anti-aliased at `size`×`size` pixels (28, MNIST's size, for 64×64 frames) with a
random pen width, slant and scale, so that two glyphs of the same digit differ the way two
handwritten ones do. Intensity falls off linearly over one pixel at the stroke's edge.
"""
from __future__ import annotations

import math

import torch

Stroke = list[tuple[float, float]]


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, points: int = 14) -> Stroke:
    """Points along an ellipse, angles in degrees (0: right, 90: down, y pointing down)."""
    angles = [math.radians(start + (end - start) * i / (points - 1)) for i in range(points)]
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


STROKES: dict[int, list[Stroke]] = {
    0: [_arc(0.5, 0.5, 0.27, 0.4, 0, 360, 24)],
    1: [[(0.36, 0.26), (0.54, 0.1), (0.54, 0.9)]],
    2: [_arc(0.5, 0.31, 0.26, 0.21, 190, 390) + [(0.22, 0.9), (0.8, 0.9)]],
    3: [_arc(0.48, 0.3, 0.25, 0.2, 200, 450), _arc(0.48, 0.7, 0.28, 0.2, 270, 510)],
    4: [[(0.64, 0.9), (0.64, 0.1), (0.2, 0.64), (0.82, 0.64)]],
    5: [[(0.76, 0.1), (0.32, 0.1), (0.3, 0.45)] + _arc(0.49, 0.65, 0.28, 0.25, 230, 500)],
    6: [[(0.7, 0.12), (0.5, 0.22), (0.34, 0.4), (0.25, 0.64)], _arc(0.5, 0.67, 0.25, 0.23, 0, 360, 20)],
    7: [[(0.2, 0.1), (0.8, 0.1), (0.42, 0.9)]],
    8: [_arc(0.5, 0.3, 0.21, 0.2, 0, 360, 18), _arc(0.5, 0.7, 0.26, 0.2, 0, 360, 20)],
    9: [_arc(0.5, 0.33, 0.25, 0.23, 0, 360, 20), [(0.75, 0.34), (0.7, 0.6), (0.56, 0.9)]],
}

_SEGMENTS = {digit: torch.tensor([(a, b) for stroke in strokes for a, b in zip(stroke, stroke[1:])],
                                 dtype=torch.float32) for digit, strokes in STROKES.items()}  # (N, 2, 2)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def render_digit(digit: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """One glyph of `digit` as a (size, size) float32 tensor in [0, 1]."""
    slant = _uniform(generator, -0.25, 0.25)
    scale = _uniform(generator, 0.85, 1.05)
    pen = _uniform(generator, 0.09, 0.14) * size
    segments = _SEGMENTS[digit]
    x, y = segments[..., 0], segments[..., 1]
    x = x + slant * (0.5 - y)                        # lean right for positive slant
    x, y = 0.5 + (x - 0.5) * scale, 0.5 + (y - 0.5) * scale
    points = torch.stack([x, y], dim=-1) * (size - 1)
    start, end = points[:, 0], points[:, 1]          # (N, 2)
    coords = torch.arange(size, dtype=torch.float32)
    grid = torch.stack(torch.meshgrid(coords, coords, indexing="xy"), dim=-1).reshape(-1, 1, 2)   # (P, 1, 2): x, y
    direction = end - start
    length2 = (direction ** 2).sum(-1).clamp_min(1e-12)
    t = (((grid - start) * direction).sum(-1) / length2).clamp(0.0, 1.0)                           # (P, N)
    nearest = start + t[..., None] * direction
    distance = ((grid - nearest) ** 2).sum(-1).sqrt().min(dim=1).values                           # (P,)
    intensity = (pen / 2 + 0.5 - distance).clamp(0.0, 1.0)
    return intensity.reshape(size, size)
