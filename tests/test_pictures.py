"""The pictures' writers: GIF frames decode to exactly the palette colours written (Pillow as
the independent decoder, where installed), and the chart's round tick values."""
import io

import numpy as np
import pytest

from cellgen.training.curves import curves_picture, nice_ticks
from cellgen.training.gif import encode_gif


def test_gif_frames_decode_exactly():
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (256, 3)).astype(np.uint8)
    frames = [rng.integers(0, 256, (120, 90)).astype(np.uint8),          # random: the code table fills and resets
              np.zeros((120, 90), np.uint8),                               # one long run
              (np.arange(120 * 90) % 7).astype(np.uint8).reshape(120, 90)]
    image = Image.open(io.BytesIO(encode_gif(frames, palette, [10, 20, 30])))
    assert image.n_frames == 3 and image.info["loop"] == 0
    for number, frame in enumerate(frames):
        image.seek(number)
        assert np.array_equal(np.asarray(image.convert("RGB")), palette[frame]), f"frame {number}"
        assert image.info["duration"] == 10 * (number + 1) * 10


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0, 300) == [0, 100, 200, 300] and nice_ticks(0, 0.9) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    assert nice_ticks(0.03, 0.072) == pytest.approx([0.03, 0.04, 0.05, 0.06, 0.07])
    assert nice_ticks(5, 5) == [5, 6, 7, 8, 9, 10]


def test_curves_of_a_run_without_evaluations_still_draw():
    picture = curves_picture([[1, 0.5], [2, 0.25]], [])
    assert picture.shape[2] == 3 and picture.dtype == np.uint8
