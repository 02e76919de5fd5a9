"""Unrolling cells over time and a stack of layers.

Within a step, each layer's output feeds the next layer's input. A zigzag state (PredRNN's
m) also goes up the stack within a step, and from the top layer at t-1 into the bottom
layer at t; every other state stays in its layer from step to step.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn


class CellStack(nn.Module):
    """L stacked cells run over T steps: `ys, states = stack(xs, states)`.

    xs is (B, T, C, *spatial); ys holds the top layer's output at every step, and `states`
    is one dict per layer of its last states (None: zeros). A zigzag state `m` of the bottom
    layer at the first step is read from `states[-1]["m"]`, the top layer's last value.
    """

    def __init__(self, cells: Sequence[nn.Module]):
        super().__init__()
        if not cells:
            raise ValueError("a stack needs at least one layer")
        self.layers = nn.ModuleList(cells)
        self.zigzag = list(cells[0].zigzag_states)

    def forward(self, xs: torch.Tensor, states: Optional[list[dict]] = None):
        if states is None:
            states = [cell.zero_state(xs[:, 0]) for cell in self.layers]
        else:
            states = [dict(s) for s in states]
        outputs = []
        for t in range(xs.shape[1]):
            x = xs[:, t]
            carried = {name: states[-1][name] for name in self.zigzag}
            for index, cell in enumerate(self.layers):
                layer_state = {**states[index], **carried}
                x, states[index] = cell(x, layer_state)
                carried = {name: states[index][name] for name in self.zigzag}
            outputs.append(x)
        return torch.stack(outputs, dim=1), states

