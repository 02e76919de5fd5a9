"""PredRNN-V2's model written by hand from the paper's equations and OpenSTL's semantics
(openstl/models/predrnnv2_model.py and openstl/utils/predrnn_utils.py, read, not copied),
sharing no code with cellgen: the reference for tests/test_outputs.py.

    cells       OpenSTL's SpatioTemporalLSTMCellv2 (tests/reference_openstl.py), `cell_list.{l}`,
                layer 0 reads the frame, layer l > 0 the h of layer l-1; one memory m goes up
                the layers within a step and from the top layer at t-1 into layer 0 at t.
    head        `conv_last`, a bias-free 1×1 conv from the top h to the frame channels.
    adapter     one bias-free 1×1 conv C → C (C = layer 0's hidden), shared by every layer.
    decoupling  at each step t and layer l: a = adapter(Δc) and b = adapter(Δm) seen as
                (B, C, H·W), each row scaled to unit length; the term is the mean over (B, C)
                of |a·b| / (|a| |b|); the loss is the mean of the terms over all (t, l).
    inputs      step 0 reads frame 0; with reverse scheduled sampling step t ≥ 1 reads
                mask[t-1]·frame_t + (1 − mask[t-1])·x̂_t (mask over steps 1 … T-2); without, the
                first `context` steps read their frames and later ones mask[t-context] likewise.
    loss        mean squared error of x̂_1 … x̂_{T-1} against frames 1 … T-1, + β · decoupling.

Frames are patched already (B, T, C·p², H/p, W/p), as OpenSTL's model receives them.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

import reference_openstl as ref


def _unit_rows(v: Tensor) -> Tensor:
    """Each row of (B, C, N) divided by its Euclidean length (no row here is zero)."""
    return v / torch.sqrt((v * v).sum(dim=2, keepdim=True))


def decoupling_term(adapter: nn.Conv2d, delta_c: Tensor, delta_m: Tensor) -> Tensor:
    B, C = delta_c.shape[:2]
    a = _unit_rows(adapter(delta_c).reshape(B, C, -1))
    b = _unit_rows(adapter(delta_m).reshape(B, C, -1))
    cosine = (a * b).sum(dim=2) / torch.sqrt((a * a).sum(dim=2) * (b * b).sum(dim=2))
    return cosine.abs().mean()


class PredRNNv2Model(nn.Module):
    def __init__(self, frame_channel: int, num_hidden: Sequence[int], height: int, width: int, filter_size: int,
                 layer_norm: bool = False):
        super().__init__()
        self.num_hidden = list(num_hidden)
        cells = [ref.SpatioTemporalLSTMCellv2(frame_channel if i == 0 else num_hidden[i - 1], n, height, width,
                                              filter_size, 1, layer_norm) for i, n in enumerate(num_hidden)]
        self.cell_list = nn.ModuleList(cells)
        self.conv_last = nn.Conv2d(num_hidden[-1], frame_channel, 1, bias=False)
        self.adapter = nn.Conv2d(num_hidden[0], num_hidden[0], 1, bias=False)

    def forward(self, frames: Tensor, context: int, mask: Optional[Tensor] = None, reverse: bool = False,
                beta: float = 0.0):
        """(predictions x̂_1 … x̂_{T-1}, decoupling loss, total loss)."""
        B, T, _, H, W = frames.shape
        h = [frames.new_zeros(B, n, H, W) for n in self.num_hidden]
        c = [frames.new_zeros(B, n, H, W) for n in self.num_hidden]
        memory = frames.new_zeros(B, self.num_hidden[0], H, W)
        predictions, terms = [], []
        x_gen = None
        for t in range(T - 1):
            if reverse and mask is not None and t >= 1:
                keep = mask[:, t - 1].view(-1, 1, 1, 1)
                net = keep * frames[:, t] + (1 - keep) * x_gen
            elif not reverse and mask is not None and t >= context:
                keep = mask[:, t - context].view(-1, 1, 1, 1)
                net = keep * frames[:, t] + (1 - keep) * x_gen
            elif t < context or mask is not None:
                net = frames[:, t]
            else:
                net = x_gen
            below = net
            for i, cell in enumerate(self.cell_list):
                h[i], c[i], memory, delta_c, delta_m = cell(below, h[i], c[i], memory)
                terms.append(decoupling_term(self.adapter, delta_c, delta_m))
                below = h[i]
            x_gen = self.conv_last(h[-1])
            predictions.append(x_gen)
        predicted = torch.stack(predictions, dim=1)
        decoupling = torch.stack(terms).mean()
        mse = ((predicted - frames[:, 1:]) ** 2).mean()
        return predicted, decoupling, mse + beta * decoupling
