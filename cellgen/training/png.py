"""PNG with zlib alone: a writer (8-bit grayscale or RGB), a reader, and a 5×7 pixel font for labels.

Writing a strip of frames needs neither Pillow nor matplotlib: a PNG is a signature, an
IHDR chunk, zlib-compressed scanlines (each prefixed with filter type 0) in IDAT, and IEND,
each chunk followed by its CRC-32 (PNG spec, ISO/IEC 15948).

Reading (`decode_png`, for `--data frames:DIR`) covers what video frames are saved as:
8- and 16-bit grey, grey + alpha, RGB, RGBA, and 8-bit palette images, not interlaced; the
scanline filters are undone row by row (Sub and Up with NumPy, Average and Paeth, which
depend on the pixel just decoded, in a loop). Alpha is dropped, 16-bit samples keep their
high byte. A file outside that is a clear error, not a wrong picture.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import torch

from cellgen.files import write_bytes_atomically


def encode_png(image: torch.Tensor) -> bytes:
    """(H, W) or (H, W, 3) uint8 → the bytes of a PNG file."""
    if image.dtype != torch.uint8:
        raise ValueError(f"PNG pixels must be uint8, not {image.dtype}")
    if image.ndim == 2:
        color_type, channels = 0, 1
    elif image.ndim == 3 and image.shape[2] == 3:
        color_type, channels = 2, 3
    else:
        raise ValueError(f"expected (H, W) or (H, W, 3) pixels, not {tuple(image.shape)}")
    height, width = image.shape[:2]
    rows = image.contiguous().reshape(height, width * channels)
    raw = bytes(torch.cat([torch.zeros((height, 1), dtype=torch.uint8), rows], dim=1).flatten().tolist())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


class PNGError(ValueError):
    """A file that is not a PNG this reader understands (the message says what it is)."""


def decode_png(data: bytes) -> "numpy.ndarray":  # noqa: F821
    """The bytes of a PNG file → (H, W) grey or (H, W, 3) RGB uint8 pixels."""
    import numpy as np

    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise PNGError("not a PNG file (no PNG signature)")
    position, header, palette, idat = 8, None, None, []
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if len(body) != length or zlib.crc32(kind + body) & 0xFFFFFFFF != \
                struct.unpack(">I", data[position + 8 + length:position + 12 + length] or b"\0\0\0\0")[0]:
            raise PNGError(f"the {kind.decode('latin-1')} chunk is truncated or corrupt")
        position += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None or not idat:
        raise PNGError("no image data (IHDR or IDAT missing)")
    width, height, depth, color, _, _, interlace = header
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color)
    if channels is None or depth not in ((8, 16) if color != 3 else (8,)):
        raise PNGError(f"{depth}-bit PNG of color type {color} is not supported (8-bit or 16-bit grey, grey+alpha, "
                       "RGB, RGBA, or 8-bit palette)")
    if interlace:
        raise PNGError("interlaced PNG is not supported")
    step = channels * depth // 8          # bytes per pixel, the filters' distance
    stride = width * step
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as error:
        raise PNGError(f"corrupt image data ({error})") from None
    if len(raw) != height * (stride + 1):
        raise PNGError(f"image data has {len(raw)} bytes; {height} rows of {stride + 1} were expected")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        if kind == 0:
            current = line.copy()
        elif kind == 1:  # Sub: each byte adds the byte one pixel left, a running sum per byte lane
            padded = np.concatenate([line, np.zeros((-stride) % step, dtype=np.uint8)]).reshape(-1, step)
            current = np.cumsum(padded, axis=0, dtype=np.uint8).reshape(-1)[:stride]
        elif kind == 2:  # Up
            current = line + previous
        elif kind in (3, 4):
            current, up = bytearray(line.tobytes()), previous.tobytes()
            for i in range(stride):
                left = current[i - step] if i >= step else 0
                if kind == 3:
                    current[i] = (current[i] + ((left + up[i]) >> 1)) & 0xFF
                else:
                    corner = up[i - step] if i >= step else 0
                    estimate = left + up[i] - corner
                    pa, pb, pc = abs(estimate - left), abs(estimate - up[i]), abs(estimate - corner)
                    guess = left if pa <= pb and pa <= pc else up[i] if pb <= pc else corner
                    current[i] = (current[i] + guess) & 0xFF
            current = np.frombuffer(bytes(current), dtype=np.uint8)
        else:
            raise PNGError(f"unknown scanline filter {kind} in row {y}")
        out[y] = current
        previous = out[y]
    pixels = out.reshape(height, width, channels, depth // 8)[..., 0]   # 16-bit: the high byte
    if color == 3:
        if palette is None:
            raise PNGError("a palette image without a palette (PLTE)")
        indices = pixels[..., 0]
        if indices.max(initial=0) >= len(palette):
            raise PNGError("a pixel names a colour beyond the palette")
        return palette[indices]
    if color in (0, 4):
        return pixels[..., 0]
    return pixels[..., :3]


def write_png(path: Path, image: torch.Tensor) -> None:
    """Write `image` as a PNG file atomically (temp file + rename)."""
    write_bytes_atomically(Path(path), encode_png(image))


# --- a 5×7 font for labels ---------------------------------------------------------------------

_FONT_ROWS = {
    "A": "01110 10001 10001 11111 10001 10001 10001", "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01111 10000 10000 10000 10000 10000 01111", "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111", "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01111 10000 10000 10011 10001 10001 01111", "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "11111 00100 00100 00100 00100 00100 11111", "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111", "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 11001 10101 10011 10001 10001 10001", "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000", "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110", "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110", "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010", "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100",
    "0": "01110 10001 10011 10101 11001 10001 01110", "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111", "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010", "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110", "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110", "9": "01110 10001 10001 01111 00001 00010 01100",
    "=": "00000 00000 11111 00000 11111 00000 00000", "+": "00000 00100 00100 11111 00100 00100 00000",
    "-": "00000 00000 00000 11111 00000 00000 00000", ".": "00000 00000 00000 00000 00000 01100 01100",
    ":": "00000 01100 01100 00000 01100 01100 00000", " ": "00000 00000 00000 00000 00000 00000 00000",
    "J": "00111 00010 00010 00010 00010 10010 01100", "Q": "01110 10001 10001 10001 10101 10010 01101",
    "Z": "11111 00001 00010 00100 01000 10000 11111", "/": "00001 00010 00010 00100 01000 01000 10000",
    "(": "00010 00100 01000 01000 01000 00100 00010", ")": "01000 00100 00010 00010 00010 00100 01000",
    ",": "00000 00000 00000 00000 01100 00100 01000", "%": "11001 11010 00010 00100 01000 01011 10011",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    "×": "00000 10001 01010 00100 01010 10001 00000", "→": "00000 00100 00010 11111 00010 00100 00000",
}
FONT = {char: torch.tensor([[bit == "1" for bit in row] for row in rows.split()], dtype=torch.bool)
        for char, rows in _FONT_ROWS.items()}
GLYPH_WIDTH, GLYPH_HEIGHT = 5, 7


def text_mask(text: str, scale: int = 1) -> torch.Tensor:
    """A (7·scale, 6·len·scale) boolean mask of `text` (upper-cased; unknown characters blank)."""
    columns = []
    for char in text.upper():
        columns += [FONT.get(char, FONT[" "]), torch.zeros((GLYPH_HEIGHT, 1), dtype=torch.bool)]
    mask = torch.cat(columns, dim=1) if columns else torch.zeros((GLYPH_HEIGHT, 0), dtype=torch.bool)
    return mask.repeat_interleave(scale, dim=0).repeat_interleave(scale, dim=1)
