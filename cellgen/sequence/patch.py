"""Frame patching: trade spatial size for channels, as the papers' code does.

PredRNN, E3D-LSTM and their descendants run their cells on 64×64×1 Moving MNIST frames cut
into 4×4 patches: a 16×16 map with 16 channels, so the convs cost 16× less while still
seeing every pixel. The channel order is the one of predrnn-pytorch's `reshape_patch`
(channels-last there): channel `(ph·p + pw)·C + c` holds pixel `(i·p + ph, j·p + pw)` of
image channel c. Weights trained by that code therefore line up with ours channel for
channel; `reshape_patch_back` is the exact inverse.

Both work on channels-first tensors of any number of leading dims: (…, C, H, W).
"""
from __future__ import annotations

import torch

from cellgen.errors import CellgenError


def check_patchable(height: int, width: int, patch: int) -> None:
    """A clear error when `patch` does not divide the frame size (the reshape would fail)."""
    if patch < 1:
        raise CellgenError(f"the patch size must be a positive whole number, not {patch}")
    if height % patch or width % patch:
        raise CellgenError(f"frames of {height}×{width} cannot be cut into {patch}×{patch} patches",
                           hint="choose a patch size that divides both the height and the width")


def reshape_patch(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """(…, C, H, W) → (…, C·p·p, H/p, W/p)."""
    if patch == 1:
        return frames
    *lead, channels, height, width = frames.shape
    check_patchable(height, width, patch)
    x = frames.reshape(*lead, channels, height // patch, patch, width // patch, patch)
    n = len(lead)
    # (…, C, i, ph, j, pw) → (…, ph, pw, C, i, j): channel (ph·p + pw)·C + c
    x = x.permute(*range(n), n + 2, n + 4, n, n + 1, n + 3)
    return x.reshape(*lead, patch * patch * channels, height // patch, width // patch)


def reshape_patch_back(patches: torch.Tensor, patch: int) -> torch.Tensor:
    """(…, C·p·p, H/p, W/p) → (…, C, H, W); the inverse of `reshape_patch`."""
    if patch == 1:
        return patches
    *lead, channels, rows, cols = patches.shape
    if channels % (patch * patch):
        raise ValueError(f"{channels} channels are not a multiple of patch² = {patch * patch}")
    image_channels = channels // (patch * patch)
    x = patches.reshape(*lead, patch, patch, image_channels, rows, cols)
    n = len(lead)
    # (…, ph, pw, C, i, j) → (…, C, i, ph, j, pw)
    x = x.permute(*range(n), n + 2, n + 3, n, n + 4, n + 1)
    return x.reshape(*lead, image_channels, rows * patch, cols * patch)
