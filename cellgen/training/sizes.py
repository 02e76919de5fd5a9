"""Sizes of generated training data, refused before anything is allocated.

`--frame-size 1000000` would make each moving-digits frame 10**12 pixels (4 TB in float32):
the allocator fails, or worse, succeeds and the machine swaps. MAX_FRAME_SIZE bounds the side
of a generated frame; the error says what one sequence would need.
"""
from __future__ import annotations

from cellgen.errors import CellgenError

MAX_FRAME_SIZE = 4096


def check_frame_size(frame_size: int, frames: int) -> None:
    if frame_size is None:
        return
    if frame_size < 1:
        raise CellgenError(f"--frame-size must be positive, not {frame_size}")
    if frame_size > MAX_FRAME_SIZE:
        needed = 4 * frame_size * frame_size * max(1, frames)
        raise CellgenError(f"--frame-size {frame_size}: one sequence of {frames} such frames needs "
                           f"{needed / 1e9:,.3g} GB in float32; cellgen generates frames up to "
                           f"{MAX_FRAME_SIZE}×{MAX_FRAME_SIZE}", hint="a moving-digits frame is 64×64 by default")
