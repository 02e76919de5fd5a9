"""Drawing on an RGB pixel array: rectangles, lines, dashes and 5×7 text, for the pictures a
run writes (curves.png, predictions.gif). Enough to draw a readable chart without matplotlib."""
from __future__ import annotations

import numpy as np

from cellgen.training.png import text_mask


class Canvas:
    def __init__(self, height: int, width: int, background: tuple[int, int, int]):
        self.pixels = np.empty((height, width, 3), dtype=np.uint8)
        self.pixels[:] = background

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    def rect(self, top: int, left: int, height: int, width: int, color) -> None:
        top, left = max(0, top), max(0, left)
        self.pixels[top:top + max(0, height), left:left + max(0, width)] = color

    def paste(self, top: int, left: int, image: np.ndarray) -> None:
        self.pixels[top:top + image.shape[0], left:left + image.shape[1]] = image

    def text(self, text: str, top: int, left: int, color, scale: int = 1, align: str = "left") -> int:
        """Draw `text` (upper-cased) with its top-left (or top-right, top-centre) at (top, left);
        returns its width in pixels."""
        mask = text_mask(text, scale).numpy()
        width = mask.shape[1]
        if align == "right":
            left -= width
        elif align == "center":
            left -= width // 2
        region = self.pixels[max(0, top):top + mask.shape[0], max(0, left):left + width]
        cut = mask[max(0, -top):max(0, -top) + region.shape[0], max(0, -left):max(0, -left) + region.shape[1]]
        region[cut] = color
        return width

    def line(self, points: list[tuple[float, float]], color, thickness: int = 2, dash: int = 0) -> None:
        """A polyline through (x, y) points; `dash` > 0 draws dashes and gaps of that length."""
        travelled = 0.0
        half = thickness // 2
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            length = max(abs(x1 - x0), abs(y1 - y0), 1e-9)
            count = int(np.ceil(length)) + 1
            for i in range(count):
                f = i / max(count - 1, 1)
                if dash and int((travelled + f * length) // dash) % 2:
                    continue
                x, y = int(round(x0 + f * (x1 - x0))), int(round(y0 + f * (y1 - y0)))
                self.rect(y - half, x - half, thickness, thickness, color)
            travelled += length
