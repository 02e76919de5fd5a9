"""Hand-written PyTorch reference implementations of the shipped cells.

These are the ground truth for the equivalence tests. They are written directly from
the gate equations in specs/*.cell and docs of the design (/work/shared/design/cells.md),
one convolution per term, with no fusion or other cleverness, and do NOT use anything
from the `cellgen` package.

Notation: sigma = sigmoid, (*) = 2D convolution, stride 1, "same" padding (k odd),
(.) = Hadamard product, [a, b] = concat on channels. Tensors are NCHW.

Parameters are passed as a dict ``p`` keyed by the spec symbol (``"W_xi"``, ``"b_i"``...):
  conv weight  (out, in, k, k)      bias  (out,)      peephole  (hidden, height, width)
"""

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# primitives
# ---------------------------------------------------------------------------

def conv(w, x, bias=None):
    """Stride-1 "same" convolution: padding k // 2 for an odd kernel k."""
    k = w.shape[-1]
    assert k % 2 == 1, "same padding needs an odd kernel"
    return F.conv2d(x, w, bias=bias, stride=1, padding=k // 2)


# ---------------------------------------------------------------------------
# ConvLSTM (specs/convlstm.cell)
# ---------------------------------------------------------------------------

def convlstm_step(p, x, h, c):
    """One ConvLSTM step without peepholes. Returns (h', c')."""
    i = torch.sigmoid(conv(p["W_xi"], x) + conv(p["W_hi"], h) + p["b_i"].view(1, -1, 1, 1))
    f = torch.sigmoid(conv(p["W_xf"], x) + conv(p["W_hf"], h) + p["b_f"].view(1, -1, 1, 1))
    c_new = f * c + i * torch.tanh(conv(p["W_xc"], x) + conv(p["W_hc"], h) + p["b_c"].view(1, -1, 1, 1))
    o = torch.sigmoid(conv(p["W_xo"], x) + conv(p["W_ho"], h) + p["b_o"].view(1, -1, 1, 1))
    h_new = o * torch.tanh(c_new)
    return h_new, c_new


# ---------------------------------------------------------------------------
# ConvLSTM with Shi's peepholes (specs/convlstm_peephole.cell)
# ---------------------------------------------------------------------------

def convlstm_peephole_step(p, x, h, c):
    """One ConvLSTM step with elementwise peepholes W_c* of shape (hidden, height, width).

    i and f peek at the OLD c; o peeks at the NEW c'. Returns (h', c').
    """
    i = torch.sigmoid(conv(p["W_xi"], x) + conv(p["W_hi"], h) + p["W_ci"] * c + p["b_i"].view(1, -1, 1, 1))
    f = torch.sigmoid(conv(p["W_xf"], x) + conv(p["W_hf"], h) + p["W_cf"] * c + p["b_f"].view(1, -1, 1, 1))
    c_new = f * c + i * torch.tanh(conv(p["W_xc"], x) + conv(p["W_hc"], h) + p["b_c"].view(1, -1, 1, 1))
    o = torch.sigmoid(conv(p["W_xo"], x) + conv(p["W_ho"], h) + p["W_co"] * c_new + p["b_o"].view(1, -1, 1, 1))
    h_new = o * torch.tanh(c_new)
    return h_new, c_new


# ---------------------------------------------------------------------------
# ST-LSTM, the PredRNN cell (specs/predrnn.cell)
# ---------------------------------------------------------------------------

def stlstm_step(p, x, h, c, m):
    """One ST-LSTM step; every conv is bias-free, +1.0 inside both forget gates.

    Returns (h', c', m').
    """
    i = torch.sigmoid(conv(p["W_xi"], x) + conv(p["W_hi"], h))
    f = torch.sigmoid(conv(p["W_xf"], x) + conv(p["W_hf"], h) + 1.0)
    g = torch.tanh(conv(p["W_xg"], x) + conv(p["W_hg"], h))
    c_new = f * c + i * g

    i_m = torch.sigmoid(conv(p["W_xi_m"], x) + conv(p["W_mi"], m))
    f_m = torch.sigmoid(conv(p["W_xf_m"], x) + conv(p["W_mf"], m) + 1.0)
    g_m = torch.tanh(conv(p["W_xg_m"], x) + conv(p["W_mg"], m))
    m_new = f_m * m + i_m * g_m

    cm = torch.cat([c_new, m_new], dim=1)
    o = torch.sigmoid(conv(p["W_xo"], x) + conv(p["W_ho"], h) + conv(p["W_o"], cm))
    h_new = o * torch.tanh(conv(p["W_1x1"], cm))
    return h_new, c_new, m_new


# ---------------------------------------------------------------------------
# parameter shapes / random parameters
# ---------------------------------------------------------------------------

GATES_LSTM = ("i", "f", "c", "o")


def param_shapes(spec_name, in_channels, hidden, k, height=None, width=None):
    """{symbol: shape} of one cell, from the spec text (not from the compiler)."""
    shapes = {}
    if spec_name in ("convlstm", "convlstm_peephole"):
        for g in GATES_LSTM:
            shapes[f"W_x{g}"] = (hidden, in_channels, k, k)
            shapes[f"W_h{g}"] = (hidden, hidden, k, k)
            shapes[f"b_{g}"] = (hidden,)
        if spec_name == "convlstm_peephole":
            assert height is not None and width is not None
            for g in ("i", "f", "o"):
                shapes[f"W_c{g}"] = (hidden, height, width)
    elif spec_name == "predrnn":
        for name in ("W_xi", "W_xf", "W_xg", "W_xi_m", "W_xf_m", "W_xg_m", "W_xo"):
            shapes[name] = (hidden, in_channels, k, k)
        for name in ("W_hi", "W_hf", "W_hg", "W_ho"):
            shapes[name] = (hidden, hidden, k, k)
        for name in ("W_mi", "W_mf", "W_mg"):
            shapes[name] = (hidden, hidden, k, k)
        shapes["W_o"] = (hidden, 2 * hidden, k, k)
        shapes["W_1x1"] = (hidden, 2 * hidden, 1, 1)
    else:
        raise ValueError(f"unknown spec {spec_name!r}")
    return shapes


def make_params(spec_name, in_channels, hidden, k, height=None, width=None,
                scale=0.5, generator=None):
    """Random fp32 parameters {symbol: tensor} with the shapes of `param_shapes`.

    Conv weights are scaled by 1/sqrt(fan_in) so gates are neither saturated nor linear;
    biases and peepholes are drawn at `scale`.
    """
    params = {}
    for name, shape in param_shapes(spec_name, in_channels, hidden, k, height, width).items():
        t = torch.randn(shape, generator=generator, dtype=torch.float32)
        if len(shape) == 4:  # conv weight (out, in, kh, kw)
            fan_in = shape[1] * shape[2] * shape[3]
            t = t * (2.0 / fan_in ** 0.5)
        else:
            t = t * scale
        params[name] = t
    return params


def state_names(spec_name):
    return ("h", "c", "m") if spec_name == "predrnn" else ("h", "c")


def zero_state(spec_name, batch, hidden, height, width, dtype=torch.float32):
    return {n: torch.zeros(batch, hidden, height, width, dtype=dtype) for n in state_names(spec_name)}


def cell_step(spec_name, p, x, state):
    """Dispatch one step; `state` is a dict {name: tensor} (no None). Returns (h', state')."""
    if spec_name == "convlstm":
        h, c = convlstm_step(p, x, state["h"], state["c"])
        return h, {"h": h, "c": c}
    if spec_name == "convlstm_peephole":
        h, c = convlstm_peephole_step(p, x, state["h"], state["c"])
        return h, {"h": h, "c": c}
    if spec_name == "predrnn":
        h, c, m = stlstm_step(p, x, state["h"], state["c"], state["m"])
        return h, {"h": h, "c": c, "m": m}
    raise ValueError(f"unknown spec {spec_name!r}")


# ---------------------------------------------------------------------------
# stacks
# ---------------------------------------------------------------------------

def convlstm_stack_unroll(layer_params, xs):
    """Multi-layer ConvLSTM (no peepholes), each layer with its own h, c along time.

    xs: (B, T, C, H, W). Layer 0 reads x_t, layer l > 0 reads layer l-1's new h at step t.
    Returns (ys, states): ys (B, T, hidden, H, W) is the top layer's h at every step;
    states[l] = {"h", "c"} of layer l after the last step.
    """
    B, T, _, H, W = xs.shape
    hidden = layer_params[0]["W_hi"].shape[0]
    hs = [xs.new_zeros(B, hidden, H, W) for _ in layer_params]
    cs = [xs.new_zeros(B, hidden, H, W) for _ in layer_params]
    ys = []
    for t in range(T):
        inp = xs[:, t]
        for l, p in enumerate(layer_params):
            hs[l], cs[l] = convlstm_step(p, inp, hs[l], cs[l])
            inp = hs[l]
        ys.append(hs[-1])
    states = [{"h": hs[l], "c": cs[l]} for l in range(len(layer_params))]
    return torch.stack(ys, dim=1), states


def predrnn_unroll(layer_params, xs):
    """PredRNN: a stack of ST-LSTM layers with the zigzag spatiotemporal memory m.

    xs: (B, T, C, H, W). At step t:
      layer 0 reads x_t and the TOP layer's m from step t-1 (zeros at t = 0);
      layer l > 0 reads layer l-1's NEW h and NEW m of the same step t.
    h and c of each layer flow along time within that layer.
    Returns (ys, states): ys (B, T, hidden, H, W) = top layer's h per step;
    states[l] = {"h", "c", "m"} with m = the m that layer l produced at the last step.
    """
    B, T, _, H, W = xs.shape
    L = len(layer_params)
    hidden = layer_params[0]["W_hi"].shape[0]
    hs = [xs.new_zeros(B, hidden, H, W) for _ in range(L)]
    cs = [xs.new_zeros(B, hidden, H, W) for _ in range(L)]
    ms = [xs.new_zeros(B, hidden, H, W) for _ in range(L)]  # m produced by layer l, last step
    m_top_prev = xs.new_zeros(B, hidden, H, W)               # zigzag: top layer's m at t-1
    ys = []
    for t in range(T):
        inp = xs[:, t]
        m = m_top_prev
        for l in range(L):
            hs[l], cs[l], m = stlstm_step(layer_params[l], inp, hs[l], cs[l], m)
            ms[l] = m
            inp = hs[l]
        m_top_prev = m
        ys.append(hs[-1])
    states = [{"h": hs[l], "c": cs[l], "m": ms[l]} for l in range(L)]
    return torch.stack(ys, dim=1), states


def predrnn_unroll_2layer_explicit(p0, p1, xs):
    """The same 2-layer PredRNN written out with no loops over layers (cross-check)."""
    B, T, _, H, W = xs.shape
    hidden = p0["W_hi"].shape[0]
    z = lambda: xs.new_zeros(B, hidden, H, W)  # noqa: E731
    h0, c0, h1, c1 = z(), z(), z(), z()
    m0, m1 = z(), z()
    ys = []
    for t in range(T):
        h0, c0, m0 = stlstm_step(p0, xs[:, t], h0, c0, m1)  # bottom reads top's m from t-1
        h1, c1, m1 = stlstm_step(p1, h0, h1, c1, m0)         # top reads bottom's new h and m
        ys.append(h1)
    return torch.stack(ys, dim=1), [{"h": h0, "c": c0, "m": m0}, {"h": h1, "c": c1, "m": m1}]
