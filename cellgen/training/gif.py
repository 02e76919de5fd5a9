"""A minimal animated-GIF writer (GIF89a, one global 256-colour palette, LZW by hand).

An animation of truth vs prediction needs no image library: a GIF is a header, a logical
screen with a global colour table, the NETSCAPE2.0 extension (loop forever), and per frame a
graphic control extension (its delay) and an image whose palette indices are LZW-compressed
with variable-width codes of 9 to 12 bits, packed least significant bit first into sub-blocks
of at most 255 bytes (GIF89a specification, W3C/CompuServe 1990).
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from cellgen.files import write_bytes_atomically


def lzw_compress(indices: bytes, min_code_size: int = 8) -> bytes:
    """GIF's LZW of a byte string of palette indices (min code size 8: clear 256, end 257)."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    out, buffer, bits = bytearray(), 0, 0
    size, next_code, table = min_code_size + 1, end + 1, {}

    def emit(code: int) -> None:
        nonlocal buffer, bits
        buffer |= code << bits
        bits += size
        while bits >= 8:
            out.append(buffer & 0xFF)
            buffer >>= 8
            bits -= 8

    emit(clear)
    if indices:
        prefix = indices[0]
        for byte in indices[1:]:
            key = (prefix << 8) | byte
            code = table.get(key)
            if code is not None:
                prefix = code
                continue
            emit(prefix)
            if next_code < 4096:
                table[key] = next_code
                next_code += 1
                # the decoder, one entry behind, widens when its table reaches 2**size
                if next_code > (1 << size) and size < 12:
                    size += 1
            else:
                emit(clear)
                size, next_code, table = min_code_size + 1, end + 1, {}
            prefix = byte
        emit(prefix)
    emit(end)
    if bits:
        out.append(buffer & 0xFF)
    return bytes(out)


def encode_gif(frames: list[np.ndarray], palette: np.ndarray, delays_cs: list[int]) -> bytes:
    """(H, W) uint8 palette-index frames, a (256, 3) uint8 palette and each frame's delay in
    hundredths of a second → the bytes of a looping animated GIF."""
    height, width = frames[0].shape
    if palette.shape != (256, 3) or palette.dtype != np.uint8:
        raise ValueError(f"the palette must be (256, 3) uint8, not {palette.shape} {palette.dtype}")
    data = bytearray(b"GIF89a")
    data += struct.pack("<HHBBB", width, height, 0xF7, 0, 0)        # global table of 2**(7+1) colours
    data += palette.tobytes()
    data += b"\x21\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", 0) + b"\x00"   # loop forever
    for frame, delay in zip(frames, delays_cs):
        if frame.shape != (height, width) or frame.dtype != np.uint8:
            raise ValueError("every frame must be (H, W) uint8 of the first frame's size")
        data += b"\x21\xf9\x04\x04" + struct.pack("<H", delay) + b"\x00\x00"      # keep the frame; no transparency
        data += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
        compressed = lzw_compress(frame.tobytes())
        data.append(8)
        for start in range(0, len(compressed), 255):
            block = compressed[start:start + 255]
            data.append(len(block))
            data += block
        data.append(0)
    data.append(0x3B)
    return bytes(data)


def write_gif(path: Path, frames: list[np.ndarray], palette: np.ndarray, delays_cs: list[int]) -> None:
    write_bytes_atomically(Path(path), encode_gif(frames, palette, delays_cs))
