"""Hand-written PyTorch references of OpenSTL's recurrent cells, and of ConvGRU and SA-ConvLSTM.

Written from notes on what OpenSTL's modules compute (chengtan9907/OpenSTL, openstl/modules/
*_modules.py and openstl/models/*_model.py, read, not copied; the notes are docs/openstl.md),
and for ConvGRU / SA-ConvLSTM from their papers' equations. Nothing here imports `cellgen`.

Each OpenSTL cell is an `nn.Module` whose submodules have exactly OpenSTL's names and kinds
(`conv_x = Sequential(Conv2d, LayerNorm)` …), so its `state_dict()` has OpenSTL's keys and
shapes: `conv_x.0.weight` (out, in, k, k), `conv_x.1.weight` / `.bias` (out, height, width)
when layer_norm is on, the unused `conv_o.*` and `conv_last.weight` where OpenSTL declares
them. A checkpoint of the OpenSTL module therefore loads into the reference with
`load_state_dict(strict=True)`, and `reference.state_dict()` is a faithful stand-in for
one in the tests of `cellgen.load_openstl`.

Shared conventions of the OpenSTL cells (every one of them):
  * convs: stride 1, zero padding filter_size // 2 (= "same" for the odd kernels OpenSTL
    uses; an even kernel would grow the map by one and the cell would fail to add maps);
    no bias except in MAU;
  * one fused conv per operand, cut by `torch.split(…, num_hidden, dim=1)` in a chunk order
    that differs between cells (and within PredRNN++, between conv_x and conv_c2m);
  * layer_norm=1 puts `nn.LayerNorm([out, height, width])` (elementwise gain and bias, eps
    1e-5) after each fused conv, normalising all of its gates jointly;
  * `_forget_bias = 1.0` is added inside the forget gates of every cell but ConvLSTM,
    which declares it and never uses it.

`forward` has OpenSTL's signature and returns what OpenSTL returns; `step(inputs, state)`
is the same computation over a state dict, for the tests.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

Tensor = torch.Tensor
State = Dict[str, Tensor]
FORGET_BIAS = 1.0


def fused_conv(in_channels: int, out_channels: int, k: int, height: int, width: int,
               layer_norm: bool) -> nn.Sequential:
    """OpenSTL's `Sequential(Conv2d(bias=False, padding=k//2)[, LayerNorm([out, H, W])])`."""
    layers: List[nn.Module] = [nn.Conv2d(in_channels, out_channels, k, stride=1, padding=k // 2, bias=False)]
    if layer_norm:
        layers.append(nn.LayerNorm([out_channels, height, width]))
    return nn.Sequential(*layers)


def chunks(t: Tensor, n: int) -> Tuple[Tensor, ...]:
    """torch.split(t, C, dim=1) into n pieces of C = channels / n (OpenSTL's cut)."""
    assert t.shape[1] % n == 0
    return torch.split(t, t.shape[1] // n, dim=1)


class OpenSTLCell(nn.Module):
    """Common bits: the state names and a zero state."""

    STATES: Tuple[str, ...] = ("h", "c")

    def zero_state(self, x: Tensor) -> State:
        shape = (x.shape[0], self.num_hidden, *x.shape[2:])
        return {n: x.new_zeros(shape) for n in self.STATES}

    def run(self, steps: Sequence[Tuple[Tensor, ...]], state: Optional[State] = None):
        """Unroll `step` over per-step input tuples; returns (outputs, states after each step)."""
        state = dict(state) if state is not None else self.zero_state(steps[0][0])
        outs, states = [], []
        for inputs in steps:
            out, state = self.step(tuple(inputs), state)
            outs.append(out)
            states.append(state)
        return outs, states


# ---------------------------------------------------------------------------------------------
# ConvLSTM (openstl/modules/convlstm_modules.py: ConvLSTMCell)
# ---------------------------------------------------------------------------------------------

class ConvLSTMCell(OpenSTLCell):
    """conv_x: in -> 4C, chunks (i, f, g, o); conv_h: C -> 4C, chunks (i, f, g, o).

        i = σ(i_x + i_h);  f = σ(f_x + f_h)   (NO +1.0: _forget_bias is declared, unused)
        g = tanh(g_x + g_h);  c' = f ⊙ c + i ⊙ g
        o = σ(o_x + o_h);  h' = o ⊙ tanh(c')   (no peepholes, no biases)

    conv_o (2C -> C, k×k, with its LayerNorm) and conv_last (2C -> C, 1×1) are declared and
    never used by forward; they are in the state_dict all the same.
    """

    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride=1, layer_norm=False):
        super().__init__()
        self.num_hidden = num_hidden
        C, k = num_hidden, filter_size
        self.conv_x = fused_conv(in_channel, 4 * C, k, height, width, layer_norm)
        self.conv_h = fused_conv(C, 4 * C, k, height, width, layer_norm)
        self.conv_o = fused_conv(2 * C, C, k, height, width, layer_norm)       # unused
        self.conv_last = nn.Conv2d(2 * C, C, 1, bias=False)                     # unused

    def forward(self, x, h, c):
        i_x, f_x, g_x, o_x = chunks(self.conv_x(x), 4)
        i_h, f_h, g_h, o_h = chunks(self.conv_h(h), 4)
        i = torch.sigmoid(i_x + i_h)
        f = torch.sigmoid(f_x + f_h)
        g = torch.tanh(g_x + g_h)
        c_new = f * c + i * g
        o = torch.sigmoid(o_x + o_h)
        h_new = o * torch.tanh(c_new)
        return h_new, c_new

    def step(self, inputs, state):
        h, c = self(inputs[0], state["h"], state["c"])
        return h, {"h": h, "c": c}


# ---------------------------------------------------------------------------------------------
# PredRNN (predrnn_modules.py: SpatioTemporalLSTMCell) and PredRNN-V2 (predrnnv2_modules.py)
# ---------------------------------------------------------------------------------------------

class SpatioTemporalLSTMCell(OpenSTLCell):
    """conv_x: in -> 7C, chunks (i, f, g, i', f', g', o); conv_h: C -> 4C, (i, f, g, o);
    conv_m: C -> 3C, (i, f, g); conv_o: 2C -> C, k×k; conv_last: 2C -> C, 1×1.

        i = σ(i_x + i_h);  f = σ(f_x + f_h + 1);  g = tanh(g_x + g_h);  c' = f ⊙ c + i ⊙ g
        i' = σ(i'_x + i_m);  f' = σ(f'_x + f_m + 1);  g' = tanh(g'_x + g_m);  m' = f' ⊙ m + i' ⊙ g'
        o = σ(o_x + o_h + conv_o([c', m']));  h' = o ⊙ tanh(conv_last([c', m']))

    With layer_norm, conv_o is followed by its own LayerNorm([C, H, W]) too.
    """

    STATES = ("h", "c", "m")

    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride=1, layer_norm=False):
        super().__init__()
        self.num_hidden = num_hidden
        C, k = num_hidden, filter_size
        self.conv_x = fused_conv(in_channel, 7 * C, k, height, width, layer_norm)
        self.conv_h = fused_conv(C, 4 * C, k, height, width, layer_norm)
        self.conv_m = fused_conv(C, 3 * C, k, height, width, layer_norm)
        self.conv_o = fused_conv(2 * C, C, k, height, width, layer_norm)
        self.conv_last = nn.Conv2d(2 * C, C, 1, bias=False)

    def gates(self, x, h, c, m):
        i_x, f_x, g_x, i_xm, f_xm, g_xm, o_x = chunks(self.conv_x(x), 7)
        i_h, f_h, g_h, o_h = chunks(self.conv_h(h), 4)
        i_m, f_m, g_m = chunks(self.conv_m(m), 3)
        i = torch.sigmoid(i_x + i_h)
        f = torch.sigmoid(f_x + f_h + FORGET_BIAS)
        g = torch.tanh(g_x + g_h)
        delta_c = i * g
        c_new = f * c + delta_c
        i_p = torch.sigmoid(i_xm + i_m)
        f_p = torch.sigmoid(f_xm + f_m + FORGET_BIAS)
        g_p = torch.tanh(g_xm + g_m)
        delta_m = i_p * g_p
        m_new = f_p * m + delta_m
        mem = torch.cat([c_new, m_new], dim=1)
        o = torch.sigmoid(o_x + o_h + self.conv_o(mem))
        h_new = o * torch.tanh(self.conv_last(mem))
        return h_new, c_new, m_new, delta_c, delta_m

    def forward(self, x, h, c, m):
        return self.gates(x, h, c, m)[:3]

    def step(self, inputs, state):
        h, c, m = self.gates(inputs[0], state["h"], state["c"], state["m"])[:3]
        return h, {"h": h, "c": c, "m": m}


class SpatioTemporalLSTMCellv2(SpatioTemporalLSTMCell):
    """PredRNN-V2's cell: the same step as SpatioTemporalLSTMCell (same keys and shapes),
    and it also returns the memory increments delta_c = i ⊙ g and delta_m = i' ⊙ g', which
    the model's decoupling loss reads (through the model's shared 1×1 `adapter`)."""

    def forward(self, x, h, c, m):
        return self.gates(x, h, c, m)


# ---------------------------------------------------------------------------------------------
# PredRNN++ (predrnnpp_modules.py: CausalLSTMCell, GHU)
# ---------------------------------------------------------------------------------------------

class CausalLSTMCell(OpenSTLCell):
    """conv_x: in -> 7C, (i, f, g, i', f', g', o); conv_h: C -> 4C, (i, f, g, o);
    conv_c: C -> 3C, (i, f, g) of the OLD c; conv_m: C -> 3C, (i, f, m_m);
    conv_c2m: C -> 4C over the NEW c', chunks (i, g, f, o) — another order than conv_x's;
    conv_om: C -> C over m'; conv_last: 2C -> C 1×1; conv_o (2C -> C) declared, UNUSED.

        i = σ(i_x + i_h + i_c);  f = σ(f_x + f_h + f_c + 1);  g = tanh(g_x + g_h + g_c)
        c' = f ⊙ c + i ⊙ g
        i_cc, g_cc, f_cc, o_cc = conv_c2m(c')
        i' = σ(i'_x + i_m + i_cc);  f' = σ(f'_x + f_m + f_cc + 1);  g' = tanh(g'_x + g_cc)
        m' = f' ⊙ tanh(m_m) + i' ⊙ g'
        o = tanh(o_x + o_h + o_cc + conv_om(m'))           (tanh, not σ)
        h' = o ⊙ tanh(conv_last([c', m']))
    """

    STATES = ("h", "c", "m")

    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride=1, layer_norm=False):
        super().__init__()
        self.num_hidden = num_hidden
        C, k = num_hidden, filter_size
        self.conv_x = fused_conv(in_channel, 7 * C, k, height, width, layer_norm)
        self.conv_h = fused_conv(C, 4 * C, k, height, width, layer_norm)
        self.conv_c = fused_conv(C, 3 * C, k, height, width, layer_norm)
        self.conv_m = fused_conv(C, 3 * C, k, height, width, layer_norm)
        self.conv_o = fused_conv(2 * C, C, k, height, width, layer_norm)       # unused
        self.conv_c2m = fused_conv(C, 4 * C, k, height, width, layer_norm)
        self.conv_om = fused_conv(C, C, k, height, width, layer_norm)
        self.conv_last = nn.Conv2d(2 * C, C, 1, bias=False)

    def forward(self, x, h, c, m):
        i_x, f_x, g_x, i_xm, f_xm, g_xm, o_x = chunks(self.conv_x(x), 7)
        i_h, f_h, g_h, o_h = chunks(self.conv_h(h), 4)
        i_m, f_m, m_m = chunks(self.conv_m(m), 3)
        i_c, f_c, g_c = chunks(self.conv_c(c), 3)
        i = torch.sigmoid(i_x + i_h + i_c)
        f = torch.sigmoid(f_x + f_h + f_c + FORGET_BIAS)
        g = torch.tanh(g_x + g_h + g_c)
        c_new = f * c + i * g
        i_cc, g_cc, f_cc, o_cc = chunks(self.conv_c2m(c_new), 4)
        i_p = torch.sigmoid(i_xm + i_m + i_cc)
        f_p = torch.sigmoid(f_xm + f_m + f_cc + FORGET_BIAS)
        g_p = torch.tanh(g_xm + g_cc)
        m_new = f_p * torch.tanh(m_m) + i_p * g_p
        o = torch.tanh(o_x + o_h + o_cc + self.conv_om(m_new))
        h_new = o * torch.tanh(self.conv_last(torch.cat([c_new, m_new], dim=1)))
        return h_new, c_new, m_new

    def step(self, inputs, state):
        h, c, m = self(inputs[0], state["h"], state["c"], state["m"])
        return h, {"h": h, "c": c, "m": m}


class GHU(OpenSTLCell):
    """Gradient highway unit. z_concat: in -> 2C over z, x_concat: in -> 2C over x, chunks
    (p, u) of their SUM:

        p = tanh(p_x + p_z);  u = σ(u_x + u_z);  z' = u ⊙ p + (1 − u) ⊙ z

    z starts as zeros shaped like x (`z=None`), so in_channel must equal num_hidden (the
    model builds GHU(num_hidden[0], num_hidden[0], …)). Its convs are initialised
    uniform(±0.001). With layer_norm=1 OpenSTL declares LayerNorm([C, H, W]) after convs of
    2C channels: that module cannot run a step (shape mismatch), so no reference of it.
    """

    STATES = ("z",)

    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride=1, layer_norm=False):
        super().__init__()
        assert not layer_norm, "OpenSTL's GHU with layer_norm=1 fails at its first step"
        self.num_hidden = num_hidden
        self.z_concat = fused_conv(in_channel, 2 * num_hidden, filter_size, height, width, False)
        self.x_concat = fused_conv(in_channel, 2 * num_hidden, filter_size, height, width, False)

    def forward(self, x, z):
        if z is None:
            z = torch.zeros_like(x)
        p, u = chunks(self.x_concat(x) + self.z_concat(z), 2)
        p = torch.tanh(p)
        u = torch.sigmoid(u)
        return u * p + (1 - u) * z

    def step(self, inputs, state):
        z = self(inputs[0], state["z"])
        return z, {"z": z}


# ---------------------------------------------------------------------------------------------
# MIM (mim_modules.py: MIMBlock, MIMN)
# ---------------------------------------------------------------------------------------------

class MIMN(OpenSTLCell):
    """MIM-N: a ConvLSTM with peepholes. conv_x_concat: in -> 4C over x, conv_h_concat:
    in -> 4C over h (so in_channel must equal num_hidden), chunks (i, g, f, o) for both;
    ct_weight (2C, H, W): c.repeat(1, 2, 1, 1) ⊙ ct_weight cut into (i_c, f_c);
    oc_weight (C, H, W) on the NEW c'. conv_last (2C -> C, 1×1) declared, unused.

        i = σ(i_h + i_c + i_x);  f = σ(f_h + f_c + f_x + 1);  c' = f ⊙ c + i ⊙ tanh(g_h + g_x)
        h' = σ(o_h + o_x + oc_weight ⊙ c') ⊙ tanh(c')
    """

    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride=1, layer_norm=False):
        super().__init__()
        self.num_hidden = num_hidden
        C, k = num_hidden, filter_size
        self.ct_weight = nn.Parameter(torch.zeros(2 * C, height, width))
        self.oc_weight = nn.Parameter(torch.zeros(C, height, width))
        self.conv_h_concat = fused_conv(in_channel, 4 * C, k, height, width, layer_norm)
        self.conv_x_concat = fused_conv(in_channel, 4 * C, k, height, width, layer_norm)
        self.conv_last = nn.Conv2d(2 * C, C, 1, bias=False)                     # unused

    def forward(self, x, h, c):
        h = torch.zeros_like(x) if h is None else h
        c = torch.zeros_like(x) if c is None else c
        i_h, g_h, f_h, o_h = chunks(self.conv_h_concat(h), 4)
        i_c, f_c = chunks(c.repeat(1, 2, 1, 1) * self.ct_weight, 2)
        i_x, g_x, f_x, o_x = chunks(self.conv_x_concat(x), 4)
        i = torch.sigmoid(i_h + i_c + i_x)
        f = torch.sigmoid(f_h + f_c + f_x + FORGET_BIAS)
        c_new = f * c + i * torch.tanh(g_h + g_x)
        h_new = torch.sigmoid(o_h + o_x + c_new * self.oc_weight) * torch.tanh(c_new)
        return h_new, c_new

    def step(self, inputs, state):
        h, c = self(inputs[0], state["h"], state["c"])
        return h, {"h": h, "c": c}


class MIMBlock(OpenSTLCell):
    """MIM block. Inputs x (the layer below's h) and diff_h (MIM-N's output); states h, c,
    m (zigzag) and n, the cell of the inner MIM-S (OpenSTL keeps it on the module as
    `self.convlstm_c`, see below).

    conv_t_cc: in -> 3C over h (in_channel must equal num_hidden), chunks (i, g, o);
    conv_s_cc: C -> 4C over m, (i, g, f, o); conv_x_cc: C -> 4C over x, (i, g, f, o);
    MIM-S: conv_h_concat: C -> 4C over c, conv_x_concat: C -> 4C over diff_h, both (i, g, f, o),
    ct_weight (2C, H, W) on n for (i, f), oc_weight (C, H, W) on n'; conv_last 2C -> C 1×1.

        i = σ(i_x + i_t);  g = tanh(g_x + g_t)            (x's i and g chunks serve both
        i' = σ(i_x + i_s); g' = tanh(g_x + g_s)            memories: the paper has W'_x·)
        f' = σ(f_x + f_s + 1);  o = σ(o_x + o_t + o_s);  m' = f' ⊙ m + i' ⊙ g'
        MIM-S(diff_h, c, n):  i_n = σ(i_hc + ct_i ⊙ n + i_d);  f_n = σ(f_hc + ct_f ⊙ n + f_d + 1)
                              n' = f_n ⊙ n + i_n ⊙ tanh(g_hc + g_d)
                              T  = σ(o_hc + o_d + oc ⊙ n') ⊙ tanh(n')
        c' = T + i ⊙ g;  h' = o ⊙ tanh(conv_last([c', m']))

    OpenSTL's n: None at the module's first call (zeros), afterwards the previous call's
    value DETACHED — so no gradient flows through n across steps — and never reset, not
    even between sequences or batches. `detach_n=True` (OpenSTL) detaches the incoming n;
    `detach_n=False` is the same forward with gradients through n (what a state gives).
    """

    STATES = ("h", "c", "m", "n")

    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride=1, layer_norm=False,
                 detach_n=True):
        super().__init__()
        self.num_hidden = num_hidden
        self.detach_n = detach_n
        C, k = num_hidden, filter_size
        self.ct_weight = nn.Parameter(torch.zeros(2 * C, height, width))
        self.oc_weight = nn.Parameter(torch.zeros(C, height, width))
        self.conv_t_cc = fused_conv(in_channel, 3 * C, k, height, width, layer_norm)
        self.conv_s_cc = fused_conv(C, 4 * C, k, height, width, layer_norm)
        self.conv_x_cc = fused_conv(C, 4 * C, k, height, width, layer_norm)
        self.conv_h_concat = fused_conv(C, 4 * C, k, height, width, layer_norm)
        self.conv_x_concat = fused_conv(C, 4 * C, k, height, width, layer_norm)
        self.conv_last = nn.Conv2d(2 * C, C, 1, bias=False)

    def mims(self, d, c, n):
        i_h, g_h, f_h, o_h = chunks(self.conv_h_concat(c), 4)
        i_c, f_c = chunks(n.repeat(1, 2, 1, 1) * self.ct_weight, 2)
        i_x, g_x, f_x, o_x = chunks(self.conv_x_concat(d), 4)
        i = torch.sigmoid(i_h + i_c + i_x)
        f = torch.sigmoid(f_h + f_c + f_x + FORGET_BIAS)
        n_new = f * n + i * torch.tanh(g_h + g_x)
        t = torch.sigmoid(o_h + o_x + n_new * self.oc_weight) * torch.tanh(n_new)
        return t, n_new

    def forward(self, x, diff_h, h, c, m, n):
        diff_h = torch.zeros_like(x) if diff_h is None else diff_h
        i_t, g_t, o_t = chunks(self.conv_t_cc(h), 3)
        i_s, g_s, f_s, o_s = chunks(self.conv_s_cc(m), 4)
        i_x, g_x, f_x, o_x = chunks(self.conv_x_cc(x), 4)
        i = torch.sigmoid(i_x + i_t)
        i_p = torch.sigmoid(i_x + i_s)
        g = torch.tanh(g_x + g_t)
        g_p = torch.tanh(g_x + g_s)
        f_p = torch.sigmoid(f_x + f_s + FORGET_BIAS)
        o = torch.sigmoid(o_x + o_t + o_s)
        m_new = f_p * m + i_p * g_p
        t, n_new = self.mims(diff_h, c, n.detach() if self.detach_n else n)
        c_new = t + i * g
        h_new = o * torch.tanh(self.conv_last(torch.cat([c_new, m_new], dim=1)))
        return h_new, c_new, m_new, n_new

    def step(self, inputs, state):
        x, diff_h = inputs
        h, c, m, n = self(x, diff_h, state["h"], state["c"], state["m"], state["n"])
        return h, {"h": h, "c": c, "m": m, "n": n}


# ---------------------------------------------------------------------------------------------
# E3D-LSTM (e3dlstm_modules.py: Eidetic3DLSTMCell) — specs/e3d_lstm_openstl*.cell (tests/test_openstl_e3d.py)
# ---------------------------------------------------------------------------------------------

class TfConv3d(nn.Module):
    """OpenSTL's tf_Conv3d: Conv3d (padding 0 in time, k//2 in space, no bias), then a
    NEAREST resize of the result back to the input's (T, H, W)."""

    def __init__(self, in_channels, out_channels, kernel_size, padding):
        super().__init__()
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel_size, stride=1, padding=padding, bias=False)

    def forward(self, x):
        return F.interpolate(self.conv3d(x), size=x.shape[-3:], mode="nearest")


class Eidetic3DLSTMCell(OpenSTLCell):
    """conv_x: in -> 7C, (i, g, r, o, i', g', f'); conv_h: C -> 4C, (i, g, r, o);
    conv_gm: C -> 4C over m, (i, f, g, m_m); conv_new_cell, conv_new_gm: C -> C; all
    tf_Conv3d with kernel (kt, k, k), then LayerNorm([out, T, H, W]) with layer_norm;
    _norm_c_t = LayerNorm([C, T, H, W]) always; conv_last: tf_Conv3d 2C -> C, 1×1×1.

        i = σ(i_x + i_h);  r = σ(r_x + r_h);  g = tanh(g_x + g_h)
        c' = _norm_c_t(c + ATTN(r, hist, hist)) + i ⊙ g
        i' = σ(i'_x + i_m);  f' = σ(f'_x + f_m + 1);  g' = tanh(g'_x + g_m)
        m_new = f' ⊙ tanh(m_m) + i' ⊙ g'
        o = tanh(o_x + o_h + conv_new_cell(c') + conv_new_gm(m_new))
        h' = tanh(conv_last([c', m_new])) ⊙ σ(o)
        returns (h', c', m)  — the OLD m: the global memory never changes (as google/e3d_lstm)

    ATTN(q, k, v): q (B, C, T, H, W) and k = v = the history, the past c's CONCATENATED ON
    CHANNELS (B, n·C, T, H, W), each RESHAPED (no permute) to (B, -1, C); softmax(q kᵀ) over
    keys, no scaling; the (B, T·H·W, C) result reshaped back to (B, C, T, H, W). The
    reshape without a permute mixes channels and positions into the "tokens".
    """

    STATES = ("h", "c", "m")

    def __init__(self, in_channel, num_hidden, window_length, height, width, filter_size=(2, 5, 5),
                 stride=1, layer_norm=False):
        super().__init__()
        self.num_hidden = num_hidden
        C = num_hidden
        pad = (0, filter_size[1] // 2, filter_size[2] // 2)
        shape = (window_length, height, width)

        def conv(cin, cout):
            layers: List[nn.Module] = [TfConv3d(cin, cout, filter_size, pad)]
            if layer_norm:
                layers.append(nn.LayerNorm([cout, *shape]))
            return nn.Sequential(*layers)

        self._norm_c_t = nn.LayerNorm([C, *shape])
        self.conv_x = conv(in_channel, 7 * C)
        self.conv_h = conv(C, 4 * C)
        self.conv_gm = conv(C, 4 * C)
        self.conv_new_cell = conv(C, C)
        self.conv_new_gm = conv(C, C)
        self.conv_last = TfConv3d(2 * C, C, 1, 0)

    @staticmethod
    def attn(q, k, v):
        b, ch = q.shape[:2]
        query = q.reshape(b, -1, ch)
        keys = k.reshape(b, -1, ch)
        values = v.reshape(b, -1, ch)
        weights = torch.softmax(query @ keys.transpose(1, 2), dim=2)
        return (weights @ values).reshape(b, ch, *q.shape[2:])

    def forward(self, x, h, c, m, eidetic_cell):
        i_h, g_h, r_h, o_h = chunks(self.conv_h(h), 4)
        i_x, g_x, r_x, o_x, i_xm, g_xm, f_xm = chunks(self.conv_x(x), 7)
        i = torch.sigmoid(i_x + i_h)
        r = torch.sigmoid(r_x + r_h)
        g = torch.tanh(g_x + g_h)
        c_new = self._norm_c_t(c + self.attn(r, eidetic_cell, eidetic_cell)) + i * g
        i_m, f_m, g_m, m_m = chunks(self.conv_gm(m), 4)
        i_p = torch.sigmoid(i_xm + i_m)
        f_p = torch.sigmoid(f_xm + f_m + FORGET_BIAS)
        g_p = torch.tanh(g_xm + g_m)
        m_new = f_p * torch.tanh(m_m) + i_p * g_p
        o = torch.tanh(o_x + o_h + self.conv_new_cell(c_new) + self.conv_new_gm(m_new))
        h_new = torch.tanh(self.conv_last(torch.cat([c_new, m_new], dim=1))) * torch.sigmoid(o)
        return h_new, c_new, m

    def step(self, inputs, state):
        """The model's bookkeeping: the history is every c so far (c_0 included), concatenated
        on channels; kept in the state as `c.history`."""
        hist = state.get("c.history", state["c"])
        h, c, m = self(inputs[0], state["h"], state["c"], state["m"], hist)
        return h, {"h": h, "c": c, "m": m, "c.history": torch.cat([hist, c], dim=1)}


# ---------------------------------------------------------------------------------------------
# MAU (mau_modules.py: MAUCell; the τ-step bookkeeping of mau_model.py: MAU_Model)
# ---------------------------------------------------------------------------------------------

class MAUCell(OpenSTLCell):
    """Inputs T_t (temporal state, C), S_t (spatial input, C); t_att, s_att: stacks of the
    last τ T's and S's (τ zero maps at the start, the model keeps them). All convs WITH a
    bias and ALWAYS followed by LayerNorm([out, H, W]) (no layer_norm switch):
    conv_t: in -> 3C over T_fusion, (t_g, t_t, t_s); conv_s: C -> 3C over S, (s_g, s_t, s_s);
    conv_t_next: in -> C over T; conv_s_next: C -> C over S.

        s_next = conv_s_next(S);  t_next = conv_t_next(T)
        w_j = Σ_{C,H,W}(s_att_j ⊙ s_next) / √(C·H·W);  α = softmax_j(w)   (one scalar per sample)
        T_trend = Σ_j α_j t_att_j;  a = σ(t_next);  T_fusion = T ⊙ a + (1 − a) ⊙ T_trend
        T' = σ(t_g) ⊙ t_t + (1 − σ(t_g)) ⊙ s_t;  S' = σ(s_g) ⊙ s_s + (1 − σ(s_g)) ⊙ t_s
        (+ S in cell_mode 'residual')
    """

    STATES = ("T",)

    def __init__(self, in_channel, num_hidden, height, width, filter_size, stride=1, tau=5, cell_mode="normal"):
        super().__init__()
        self.num_hidden = num_hidden
        self.tau = tau
        self.cell_mode = cell_mode
        self.d = num_hidden * height * width
        C, k = num_hidden, filter_size

        def conv(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, k, stride=1, padding=k // 2),
                                 nn.LayerNorm([cout, height, width]))

        self.conv_t = conv(in_channel, 3 * C)
        self.conv_t_next = conv(in_channel, C)
        self.conv_s = conv(C, 3 * C)
        self.conv_s_next = conv(C, C)

    def forward(self, T_t, S_t, t_att, s_att):
        s_next = self.conv_s_next(S_t)
        t_next = self.conv_t_next(T_t)
        scores = torch.stack([(s_att[j] * s_next).sum(dim=(1, 2, 3)) / math.sqrt(self.d)
                              for j in range(self.tau)], dim=0)              # (tau, B)
        alpha = torch.softmax(scores, dim=0).view(self.tau, -1, 1, 1, 1)
        T_trend = (t_att * alpha).sum(dim=0)
        gate = torch.sigmoid(t_next)
        T_fusion = T_t * gate + (1 - gate) * T_trend
        t_g, t_t, t_s = chunks(self.conv_t(T_fusion), 3)
        s_g, s_t, s_s = chunks(self.conv_s(S_t), 3)
        T_gate = torch.sigmoid(t_g)
        S_gate = torch.sigmoid(s_g)
        T_new = T_gate * t_t + (1 - T_gate) * s_t
        S_new = S_gate * s_s + (1 - S_gate) * t_s
        if self.cell_mode == "residual":
            S_new = S_new + S_t
        return T_new, S_new

    def step(self, inputs, state):
        """MAU_Model's bookkeeping for one layer: s_att is the last τ inputs S before this one,
        t_att the last τ T's up to the current one, both τ zero maps at the start (T_pre and
        S_pre). Kept in the state as lists `T.history` / `S.history`; a state without them
        (a given T) starts t_att as τ − 1 zero maps and T (cellgen's `init zeros`,
        docs/histories.md), which is MAU_Model's start when T is zero."""
        (S_t,) = inputs
        T_t = state["T"]
        zeros = torch.zeros_like(T_t)
        t_hist = list(state.get("T.history", [zeros] * (self.tau - 1) + [T_t]))
        s_hist = list(state.get("S.history", [torch.zeros_like(S_t)] * self.tau))
        T_new, S_new = self(T_t, S_t, torch.stack(t_hist[-self.tau:], 0), torch.stack(s_hist[-self.tau:], 0))
        return S_new, {"T": T_new, "T.history": t_hist[1:] + [T_new], "S.history": s_hist[1:] + [S_t]}


# ---------------------------------------------------------------------------------------------
# ConvGRU and SA-ConvLSTM: from their papers (no OpenSTL module); parameters by spec symbol
# ---------------------------------------------------------------------------------------------

class SymbolCell(OpenSTLCell):
    """A reference whose parameters are named by spec symbols (`W_xz`, `SAM.W_q`)."""

    def param(self, name: str, *shape: int) -> None:
        self.register_parameter(name, nn.Parameter(torch.zeros(*shape)))


def same_conv(x, w, b=None):
    return F.conv2d(x, w, b, padding=w.shape[-1] // 2)


def bias(b, like):
    return b.view(1, -1, *([1] * (like.dim() - 2)))


class ConvGRU(SymbolCell):
    """ConvGRU as Ballas et al., ICLR 2016, write it (no biases; ⋆ "same" k×k convs):

        z = σ(W_xz ⋆ x + W_hz ⋆ h);  r = σ(W_xr ⋆ x + W_hr ⋆ h)
        h̃ = tanh(W_xh ⋆ x + W_hh ⋆ (r ⊙ h));  h' = (1 − z) ⊙ h + z ⊙ h̃
    """

    STATES = ("h",)

    def __init__(self, in_channels, hidden, k):
        super().__init__()
        self.num_hidden = hidden
        for g in ("z", "r", "h"):
            self.param(f"W_x{g}", hidden, in_channels, k, k)
            self.param(f"W_h{g}", hidden, hidden, k, k)

    def step(self, inputs, state):
        (x,) = inputs
        P = dict(self.named_parameters())
        h = state["h"]
        z = torch.sigmoid(same_conv(x, P["W_xz"]) + same_conv(h, P["W_hz"]))
        r = torch.sigmoid(same_conv(x, P["W_xr"]) + same_conv(h, P["W_hr"]))
        h_tilde = torch.tanh(same_conv(x, P["W_xh"]) + same_conv(r * h, P["W_hh"]))
        h_new = (1 - z) * h + z * h_tilde
        return h_new, {"h": h_new}


def position_attention(q, k, v):
    """softmax(Qᵀ K) over the keys, one token per pixel, no scaling: Z_i = Σ_j A_ij V_j."""
    b, ch = v.shape[:2]
    Q, K, V = (t.flatten(2) for t in (q, k, v))                      # (B, C·, N)
    A = torch.softmax(Q.transpose(1, 2) @ K, dim=-1)                  # (B, N query, N key)
    return (V @ A.transpose(1, 2)).reshape(v.shape)


class SAConvLSTM(SymbolCell):
    """SA-ConvLSTM (Lin et al., AAAI 2020): a ConvLSTM whose output goes through the
    self-attention memory (SAM); states h (= Ĥ, SAM's output), c, m.

        ConvLSTM (eqs. of Shi, with biases, k×k): i, f, g, o from x and h;  c' = f ⊙ c + i ⊙ g
        H = o ⊙ tanh(c')
        SAM:  Q = W_q ⋆ H, K_h = W_kh ⋆ H, V_h = W_vh ⋆ H, K_m = W_km ⋆ m, V_m = W_vm ⋆ m  (1×1)
              Z_h = softmax(Qᵀ K_h) V_h;  Z_m = softmax(Qᵀ K_m) V_m;  Z = W_z ⋆ [Z_h, Z_m]  (1×1)
              i_m = σ(W_zi ⋆ Z + W_Hi ⋆ H + b_mi);  g_m = tanh(W_zg ⋆ Z + W_Hg ⋆ H + b_mg)
              m' = (1 − i_m) ⊙ m + i_m ⊙ g_m
              o_m = σ(W_zo ⋆ Z + W_Ho ⋆ H + b_mo);  h' = o_m ⊙ m'
    The paper's W_q, W_k may be narrower (Ĉ) than V (C); this reference takes `qk` channels
    for them (any width; the spec's are hidden, tests/test_openstl.py extends it with hidden/2).
    """

    STATES = ("h", "c", "m")

    def __init__(self, in_channels, hidden, k, qk=None):
        super().__init__()
        self.num_hidden = hidden
        qk = hidden if qk is None else qk
        C = hidden
        for g in ("i", "f", "g", "o"):
            self.param(f"W_x{g}", C, in_channels, k, k)
            self.param(f"W_h{g}", C, C, k, k)
            self.param(f"b_{g}", C)
        self.param("W_q", qk, C, 1, 1)
        self.param("W_kh", qk, C, 1, 1)
        self.param("W_km", qk, C, 1, 1)
        self.param("W_vh", C, C, 1, 1)
        self.param("W_vm", C, C, 1, 1)
        self.param("W_z", C, 2 * C, 1, 1)
        for g in ("i", "g", "o"):
            self.param(f"W_z{g}", C, C, k, k)
            self.param(f"W_H{g}", C, C, k, k)
            self.param(f"b_m{g}", C)

    def step(self, inputs, state):
        (x,) = inputs
        P = dict(self.named_parameters())
        h, c, m = state["h"], state["c"], state["m"]

        def pre(g):
            return same_conv(x, P[f"W_x{g}"]) + same_conv(h, P[f"W_h{g}"]) + bias(P[f"b_{g}"], h)

        i, f, o = torch.sigmoid(pre("i")), torch.sigmoid(pre("f")), torch.sigmoid(pre("o"))
        c_new = f * c + i * torch.tanh(pre("g"))
        H = o * torch.tanh(c_new)
        q = same_conv(H, P["W_q"])
        z_h = position_attention(q, same_conv(H, P["W_kh"]), same_conv(H, P["W_vh"]))
        z_m = position_attention(q, same_conv(m, P["W_km"]), same_conv(m, P["W_vm"]))
        Z = same_conv(torch.cat([z_h, z_m], dim=1), P["W_z"])

        def sam(g):
            return same_conv(Z, P[f"W_z{g}"]) + same_conv(H, P[f"W_H{g}"]) + bias(P[f"b_m{g}"], H)

        i_m, g_m, o_m = torch.sigmoid(sam("i")), torch.tanh(sam("g")), torch.sigmoid(sam("o"))
        m_new = (1 - i_m) * m + i_m * g_m
        h_new = o_m * m_new
        return h_new, {"h": h_new, "c": c_new, "m": m_new}


# ---------------------------------------------------------------------------------------------
# OpenSTL models (model level): PredRNN_Model / ConvLSTM_Model without the loss
# ---------------------------------------------------------------------------------------------

class StackModel(nn.Module):
    """OpenSTL's ConvLSTM_Model / PredRNN_Model as far as their state_dict and their rollout
    over given (already patched, NCHW) frames go: `cell_list.{l}` of cells (layer 0 reads
    the frame, layer l > 0 the h of layer l-1 at the same step), PredRNN's m zigzags (one m,
    up the layers within a step, from the top at t-1 into the bottom at t), and a bias-free
    1×1 `conv_last` from the top h to the frame channels. `forward(frames)` feeds every
    frame (teacher forcing) and returns the predictions x_gen for frames 1..T."""

    def __init__(self, cell_class, frame_channel, num_hidden: Sequence[int], height, width, filter_size,
                 layer_norm=False):
        super().__init__()
        self.zigzag = "m" in cell_class.STATES
        self.num_hidden = list(num_hidden)
        cells = []
        for i, hidden in enumerate(num_hidden):
            cin = frame_channel if i == 0 else num_hidden[i - 1]
            cells.append(cell_class(cin, hidden, height, width, filter_size, 1, layer_norm))
        self.cell_list = nn.ModuleList(cells)
        self.conv_last = nn.Conv2d(num_hidden[-1], frame_channel, 1, bias=False)

    def forward(self, frames: Tensor) -> Tensor:
        B, T, _, H, W = frames.shape
        h = [frames.new_zeros(B, n, H, W) for n in self.num_hidden]
        c = [frames.new_zeros(B, n, H, W) for n in self.num_hidden]
        memory = frames.new_zeros(B, self.num_hidden[0], H, W)
        preds = []
        for t in range(T - 1):
            net = frames[:, t]
            for i, cell in enumerate(self.cell_list):
                inp = net if i == 0 else h[i - 1]
                if self.zigzag:
                    h[i], c[i], memory = cell(inp, h[i], c[i], memory)[:3]   # V2 also returns its increments
                else:
                    h[i], c[i] = cell(inp, h[i], c[i])
            preds.append(self.conv_last(h[-1]))
        return torch.stack(preds, dim=1)


def reshape_patch(frames: Tensor, patch: int) -> Tensor:
    """OpenSTL's reshape_patch (openstl/utils/predrnn_utils.py), which works channels-last on
    (B, T, H, W, C): cut H and W into p×p patches and move each patch's pixels to channels,
    channel (ph·p + pw)·C + c. Here for channels-first frames (B, T, C, H, W) in and out."""
    x = frames.permute(0, 1, 3, 4, 2)                                   # (B, T, H, W, C)
    B, T, H, W, C = x.shape
    x = x.reshape(B, T, H // patch, patch, W // patch, patch, C)
    x = x.transpose(3, 4)                                               # (B, T, H/p, W/p, p, p, C)
    x = x.reshape(B, T, H // patch, W // patch, patch * patch * C)
    return x.permute(0, 1, 4, 2, 3)


def reshape_patch_back(patches: Tensor, patch: int) -> Tensor:
    """The inverse of `reshape_patch` (OpenSTL's reshape_patch_back), channels-first."""
    x = patches.permute(0, 1, 3, 4, 2)                                  # (B, T, H/p, W/p, p·p·C)
    B, T, h, w, PC = x.shape
    C = PC // (patch * patch)
    x = x.reshape(B, T, h, w, patch, patch, C).transpose(3, 4)
    x = x.reshape(B, T, h * patch, w * patch, C)
    return x.permute(0, 1, 4, 2, 3)


# ---------------------------------------------------------------------------------------------
# the models a stack of one spec cannot express yet: PredRNN++ (a GHU between layers 0 and 1)
# and MIM (an ST-LSTM, then MIM blocks, with MIM-N cells between the layers)
# ---------------------------------------------------------------------------------------------

class PredRNNppModel(nn.Module):
    """OpenSTL's PredRNNpp_Model rollout over patched NCHW frames (teacher forcing):
    `cell_list.{l}` CausalLSTMCells, `gradient_highway` a GHU(C0, C0), `conv_last` 1×1.
    Per step: layer 0 reads the frame; z = GHU(h⁰, z) (z = None, i.e. zeros, at t = 0);
    layer 1 reads z; layers ≥ 2 read the layer below; one m zigzags through all layers."""

    def __init__(self, frame_channel, num_hidden: Sequence[int], height, width, filter_size, layer_norm=False):
        super().__init__()
        self.num_hidden = list(num_hidden)
        self.gradient_highway = GHU(num_hidden[0], num_hidden[0], height, width, filter_size, 1, False)
        self.cell_list = nn.ModuleList(
            CausalLSTMCell(frame_channel if i == 0 else num_hidden[i - 1], n, height, width, filter_size, 1, layer_norm)
            for i, n in enumerate(num_hidden))
        self.conv_last = nn.Conv2d(num_hidden[-1], frame_channel, 1, bias=False)

    def forward(self, frames: Tensor) -> Tensor:
        B, T, _, H, W = frames.shape
        h = [frames.new_zeros(B, n, H, W) for n in self.num_hidden]
        c = [frames.new_zeros(B, n, H, W) for n in self.num_hidden]
        memory = frames.new_zeros(B, self.num_hidden[0], H, W)
        z = None
        preds = []
        for t in range(T - 1):
            h[0], c[0], memory = self.cell_list[0](frames[:, t], h[0], c[0], memory)
            z = self.gradient_highway(h[0], z)
            h[1], c[1], memory = self.cell_list[1](z, h[1], c[1], memory)
            for i in range(2, len(self.cell_list)):
                h[i], c[i], memory = self.cell_list[i](h[i - 1], h[i], c[i], memory)
            preds.append(self.conv_last(h[-1]))
        return torch.stack(preds, dim=1)


class MIMModel(nn.Module):
    """OpenSTL's MIM_Model rollout over patched NCHW frames (teacher forcing):
    `stlstm_layer.0` a SpatioTemporalLSTMCell, `stlstm_layer.{l ≥ 1}` MIMBlocks,
    `stlstm_layer_diff.{l-1}` MIMNs between layers l-1 and l, `conv_last` 1×1. Per step t:
    layer 0 as PredRNN (remembering its previous h as preh); for l ≥ 1, if t > 0 the MIM-N
    below layer l steps on h⁰_t − h⁰_{t−1} (l = 1) or on the MIM-N output below (l > 1), its
    own state starting at zeros at t = 1; at t = 0 its output is thrown away and the block
    gets diff_h = None (zeros). Each MIMBlock's n starts at zeros and is detached every step
    (`detach_n`), as OpenSTL's `convlstm_c` of a fresh module."""

    def __init__(self, frame_channel, num_hidden: Sequence[int], height, width, filter_size, layer_norm=False,
                 detach_n=True):
        super().__init__()
        self.num_hidden = list(num_hidden)
        layers: List[nn.Module] = [SpatioTemporalLSTMCell(frame_channel, num_hidden[0], height, width, filter_size,
                                                          1, layer_norm)]
        layers += [MIMBlock(num_hidden[i - 1], num_hidden[i], height, width, filter_size, 1, layer_norm, detach_n)
                   for i in range(1, len(num_hidden))]
        self.stlstm_layer = nn.ModuleList(layers)
        self.stlstm_layer_diff = nn.ModuleList(
            MIMN(num_hidden[i], num_hidden[i + 1], height, width, filter_size, 1, layer_norm)
            for i in range(len(num_hidden) - 1))
        self.conv_last = nn.Conv2d(num_hidden[-1], frame_channel, 1, bias=False)

    def forward(self, frames: Tensor) -> Tensor:
        B, T, _, H, W = frames.shape
        L = len(self.num_hidden)
        zeros = [frames.new_zeros(B, n, H, W) for n in self.num_hidden]
        h, c, n = list(zeros), list(zeros), list(zeros)
        diff_h: List[Optional[Tensor]] = [None] * L
        diff_c: List[Optional[Tensor]] = [None] * L
        memory = frames.new_zeros(B, self.num_hidden[0], H, W)
        preds = []
        for t in range(T - 1):
            preh = h[0]
            h[0], c[0], memory = self.stlstm_layer[0](frames[:, t], h[0], c[0], memory)
            for i in range(1, L):
                if t > 0:
                    below = h[i - 1] - preh if i == 1 else diff_h[i - 2]
                    diff_h[i - 1], diff_c[i - 1] = self.stlstm_layer_diff[i - 1](below, diff_h[i - 1], diff_c[i - 1])
                h[i], c[i], memory, n[i] = self.stlstm_layer[i](h[i - 1], diff_h[i - 1], h[i], c[i], memory, n[i])
            preds.append(self.conv_last(h[-1]))
        return torch.stack(preds, dim=1)
