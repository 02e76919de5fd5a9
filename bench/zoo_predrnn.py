"""A zoo-style PredRNN, written by hand: the baseline bench/train_step.py measures cellgen against.

Written from the ST-LSTM equations in /work/shared/design/cells.md (E3D-LSTM's appendix,
eq. 6, as the authors' predrnn-pytorch computes it) and laid out the way OpenSTL writes its
`SpatioTemporalLSTMCell` and `PredRNN_Model` (layer_norm off): one fused conv per operand,

    conv_x: x → [i, f, g, i', f', g', o]    (7·hidden)     conv_h: h → [i, f, g, o]   (4·hidden)
    conv_m: m → [i', f', g']                (3·hidden)     conv_o: [c', m'] → o       (k×k)
    conv_last: [c', m'] → hidden            (1×1)          all bias-free; +1.0 inside both forget gates

and the model's loop: patched frames, teacher forcing on the first `context` frames, the
model's own prediction after them, m zigzag (up the stack, top layer at t-1 into the bottom
at t), a bias-free 1×1 `conv_last` head, MSE over the T-1 predictions. Nothing here
imports cellgen; `load_from_cellgen` only maps a cellgen state dict's names onto these convs,
so that bench/train_step.py can check that both compute the same function.
"""
from __future__ import annotations

import torch
from torch import nn


class SpatioTemporalLSTMCell(nn.Module):
    def __init__(self, in_channel: int, num_hidden: int, filter_size: int):
        super().__init__()
        self.num_hidden = num_hidden
        padding = filter_size // 2
        self.conv_x = nn.Conv2d(in_channel, num_hidden * 7, filter_size, padding=padding, bias=False)
        self.conv_h = nn.Conv2d(num_hidden, num_hidden * 4, filter_size, padding=padding, bias=False)
        self.conv_m = nn.Conv2d(num_hidden, num_hidden * 3, filter_size, padding=padding, bias=False)
        self.conv_o = nn.Conv2d(num_hidden * 2, num_hidden, filter_size, padding=padding, bias=False)
        self.conv_last = nn.Conv2d(num_hidden * 2, num_hidden, 1, bias=False)

    def forward(self, x_t, h_t, c_t, m_t):
        x_concat, h_concat, m_concat = self.conv_x(x_t), self.conv_h(h_t), self.conv_m(m_t)
        i_x, f_x, g_x, i_x_prime, f_x_prime, g_x_prime, o_x = torch.split(x_concat, self.num_hidden, dim=1)
        i_h, f_h, g_h, o_h = torch.split(h_concat, self.num_hidden, dim=1)
        i_m, f_m, g_m = torch.split(m_concat, self.num_hidden, dim=1)

        i_t = torch.sigmoid(i_x + i_h)
        f_t = torch.sigmoid(f_x + f_h + 1.0)
        g_t = torch.tanh(g_x + g_h)
        c_new = f_t * c_t + i_t * g_t

        i_t_prime = torch.sigmoid(i_x_prime + i_m)
        f_t_prime = torch.sigmoid(f_x_prime + f_m + 1.0)
        g_t_prime = torch.tanh(g_x_prime + g_m)
        m_new = f_t_prime * m_t + i_t_prime * g_t_prime

        mem = torch.cat((c_new, m_new), 1)
        o_t = torch.sigmoid(o_x + o_h + self.conv_o(mem))
        h_new = o_t * torch.tanh(self.conv_last(mem))
        return h_new, c_new, m_new


def reshape_patch(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, T, C, H, W) → (B, T, p·p·C, H/p, W/p), predrnn-pytorch's channel order ((ph·p + pw)·C + c)."""
    b, t, c, h, w = frames.shape
    x = frames.reshape(b, t, c, h // patch, patch, w // patch, patch).permute(0, 1, 4, 6, 2, 3, 5)
    return x.reshape(b, t, patch * patch * c, h // patch, w // patch)


def reshape_patch_back(patches: torch.Tensor, patch: int) -> torch.Tensor:
    b, t, channels, hp, wp = patches.shape
    c = channels // (patch * patch)
    x = patches.reshape(b, t, patch, patch, c, hp, wp).permute(0, 1, 4, 5, 2, 6, 3)
    return x.reshape(b, t, c, hp * patch, wp * patch)


class ZooPredRNN(nn.Module):
    """OpenSTL's PredRNN_Model: frames (B, T, C, H, W) → predictions of frames 1 … T-1."""

    def __init__(self, layers: int, hidden: int, frame_channels: int, patch: int, filter_size: int):
        super().__init__()
        self.patch, self.hidden = patch, hidden
        patched = frame_channels * patch * patch
        self.cell_list = nn.ModuleList(
            [SpatioTemporalLSTMCell(patched if i == 0 else hidden, hidden, filter_size) for i in range(layers)])
        self.conv_last = nn.Conv2d(hidden, patched, 1, bias=False)

    def forward(self, frames: torch.Tensor, context: int, mask=None) -> torch.Tensor:
        if mask is not None:
            raise NotImplementedError("this baseline trains without scheduled sampling")
        patched = reshape_patch(frames, self.patch)
        batch, total, _, height, width = patched.shape
        zeros = patched.new_zeros(batch, self.hidden, height, width)
        h_t = [zeros] * len(self.cell_list)
        c_t = [zeros] * len(self.cell_list)
        memory = zeros
        next_frames, x_gen = [], None
        for t in range(total - 1):
            net = patched[:, t] if t < context else x_gen
            h_t[0], c_t[0], memory = self.cell_list[0](net, h_t[0], c_t[0], memory)
            for i in range(1, len(self.cell_list)):
                h_t[i], c_t[i], memory = self.cell_list[i](h_t[i - 1], h_t[i], c_t[i], memory)
            x_gen = self.conv_last(h_t[-1])
            next_frames.append(x_gen)
        return reshape_patch_back(torch.stack(next_frames, dim=1), self.patch)

    @torch.no_grad()
    def load_from_cellgen(self, state_dict: dict) -> None:
        """Copy a cellgen PredRNN SequenceModel's weights (names of specs/predrnn.cell) into these convs."""
        for index, cell in enumerate(self.cell_list):
            w = {name.split(".", 3)[3]: value for name, value in state_dict.items()
                 if name.startswith(f"stack.layers.{index}.")}
            cell.conv_x.weight.copy_(torch.cat([w[n] for n in ("W_xi", "W_xf", "W_xg", "W_xi_m", "W_xf_m",
                                                               "W_xg_m", "W_xo")]))
            cell.conv_h.weight.copy_(torch.cat([w[n] for n in ("W_hi", "W_hf", "W_hg", "W_ho")]))
            cell.conv_m.weight.copy_(torch.cat([w[n] for n in ("W_mi", "W_mf", "W_mg")]))
            cell.conv_o.weight.copy_(w["W_o"])
            cell.conv_last.weight.copy_(w["W_1x1"])
        self.conv_last.weight.copy_(state_dict["head.weight"])
