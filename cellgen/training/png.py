"""A minimal PNG writer (8-bit grayscale or RGB) with zlib, and a 5×7 pixel font for labels.

Writing a strip of frames needs neither Pillow nor matplotlib: a PNG is a signature, an
IHDR chunk, zlib-compressed scanlines (each prefixed with filter type 0) in IDAT, and IEND,
each chunk followed by its CRC-32 (PNG spec, ISO/IEC 15948).
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
