"""The hand-rolled PNG writer, decoded back with zlib, and the predictions strip's layout."""
import struct
import zlib

import numpy as np
import torch

from cellgen.training.png import encode_png, text_mask, write_png
from cellgen.training.strip import BACKGROUND, MARK, StripLayout, frame_pixels, prediction_strip


def decode_png(data: bytes) -> np.ndarray:
    """A minimal PNG reader for what encode_png writes (8-bit, filter 0), checking every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        length, = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        crc, = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks.setdefault(kind, b"")
        chunks[kind] += body
        pos += 12 + length
    width, height, depth, color, *_ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and b"IEND" in chunks
    channels = {0: 1, 2: 3}[color]
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(height, 1 + width * channels)
    assert (raw[:, 0] == 0).all()
    pixels = raw[:, 1:].reshape(height, width, channels)
    return pixels[..., 0] if channels == 1 else pixels


def test_png_round_trip_grey_and_rgb(tmp_path):
    generator = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (5, 7), dtype=torch.uint8, generator=generator)
    rgb = torch.randint(0, 256, (4, 3, 3), dtype=torch.uint8, generator=generator)
    assert np.array_equal(decode_png(encode_png(grey)), grey.numpy())
    assert np.array_equal(decode_png(encode_png(rgb)), rgb.numpy())
    write_png(tmp_path / "x.png", rgb)
    assert np.array_equal(decode_png((tmp_path / "x.png").read_bytes()), rgb.numpy())
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temp file left behind


def test_strip_puts_truth_above_prediction_and_marks_the_start():
    truth = torch.rand(2, 6, 1, 16, 16)
    prediction = torch.rand(2, 2, 1, 16, 16)
    image = prediction_strip(truth, prediction, context=4)
    layout = StripLayout(2, 6, 16, 16)
    assert tuple(image.shape) == layout.shape and image.dtype == torch.uint8
    image = decode_png(encode_png(image))   # what the file holds
    assert layout.zoom == 4 and layout.cell == (64, 64)
    for n in range(2):
        for t in range(6):
            y, x = layout.box(n, 0, t)
            assert np.array_equal(image[y:y + 64, x:x + 64], frame_pixels(truth[n, t], 4).numpy())
            y, x = layout.box(n, 1, t)
            below = image[y:y + 64, x:x + 64]
            if t < 4:   # observed frames: nothing predicted under them
                assert (below == np.array(BACKGROUND, dtype=np.uint8)).all()
            else:
                assert np.array_equal(below, frame_pixels(prediction[n, t - 4], 4).numpy())
    mark_x = layout.box(0, 0, 4)[1] - 3
    assert (image[layout.top:, mark_x] == np.array(MARK, dtype=np.uint8)).all()


def test_text_mask_draws_labels():
    mask = text_mask("truth", 2)
    assert tuple(mask.shape) == (14, 5 * 6 * 2) and mask.any()
