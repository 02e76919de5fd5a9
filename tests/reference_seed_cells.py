"""Hand-written PyTorch references of the seed cells that are not ConvLSTM/PredRNN.

Written from the equations of /work/shared/design/cells.md and the papers in
/work/shared/papers/, independently of the `cellgen` package (nothing here imports it).
The spec files in specs/ were used only for the PARAMETER NAMES, the `param` defaults and
the variant choices their header comments document. Where a spec and cells.md disagree,
the reference follows cells.md (see the notes on `E3DLSTMOfficial`).

Conventions (the contract the compiled modules must match):
  * sigma = sigmoid, (*) = stride-1 "same" convolution, (.) = Hadamard product,
    [a, b] = concat on channels. 2D tensors are NCHW, 3D ones NCTHW.
  * "same" padding for an even kernel length k pads (k-1)//2 before and the rest after,
    as TF's SAME and torch's padding="same" do.
  * Parameters are named by the spec symbols: conv weight (out, in, *kernel), bias (C,).
    A multi-kernel conv `W : conv {3×3: a, 5×5: b}` is two parameters `W.3x3`, `W.5x5`, its
    result the channel concat of the kernels' convs in the declared order. A LayerNorm `LN`
    is `LN.weight`, `LN.bias`. Block weights are prefixed by the block name (`CE.W_H`,
    `SE.Q_1`). `ref.load_state_dict(compiled.state_dict())` works.
  * One module = one cell; `run(steps, state0)` unrolls it over time and keeps the memory
    history itself: at the step computing c_t the history is the most recent <= tau of
    [c_0, c_1, ..., c_{t-1}] (c_0 = the initial state), as a Python list of distinct tensors.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

Tensor = torch.Tensor
State = Dict[str, Tensor]


# ---------------------------------------------------------------------------------------------
# primitives
# ---------------------------------------------------------------------------------------------

def conv(x: Tensor, w: Tensor, b: Optional[Tensor] = None) -> Tensor:
    """Stride-1 "same" convolution, 2D or 3D by the rank of `w` (out, in, *kernel).

    Each kernel length k gets k-1 zero padding: (k-1)//2 before, the rest after (for an even
    k such as E3D's temporal 2 this is one frame AFTER, like TF's SAME / torch "same").
    """
    pad: List[int] = []
    for k in reversed(w.shape[2:]):            # F.pad lists the last dim first
        before = (k - 1) // 2
        pad += [before, k - 1 - before]
    x = F.pad(x, pad)
    if w.dim() == 4:
        return F.conv2d(x, w, b)
    if w.dim() == 5:
        return F.conv3d(x, w, b)
    raise ValueError(f"conv weight of rank {w.dim()}")


def bias(b: Tensor, like: Tensor) -> Tensor:
    """A per-channel bias (C,) shaped to broadcast over `like` (B, C, ...)."""
    return b.view(1, -1, *([1] * (like.dim() - 2)))


def layernorm(x: Tensor, weight: Tensor, shift: Tensor, eps: float = 1e-5) -> Tensor:
    """cellgen's plain `layernorm`: each sample normalised over ALL its non-batch axes
    (C, [T,] H, W) jointly, biased variance, then a gain and a bias PER CHANNEL (C,).
    (tf.contrib.layers.layer_norm with its defaults, as the E3D code uses it, with eps 1e-12.)"""
    dims = tuple(range(1, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * bias(weight, x) + bias(shift, x)


def layernorm_trailing(x: Tensor, weight: Tensor, shift: Tensor, eps: float = 1e-5) -> Tensor:
    """cellgen's `layernorm [d1, d2, d3]` = torch.nn.LayerNorm([d1, d2, d3]): normalise over
    the trailing dims of `weight`'s shape, elementwise gain and bias of that shape."""
    dims = tuple(range(x.dim() - weight.dim(), x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + shift


def multi_kernel_conv(inputs: Sequence[Tensor], weights: Sequence[Tensor]) -> Tensor:
    """A multi-kernel conv: kernel j reads inputs[j] with weights[j]; the kernels' outputs are
    CONCATENATED on channels in the declared kernel order (not summed)."""
    return torch.cat([conv(x, w) for x, w in zip(inputs, weights)], dim=1)


def positions(t: Tensor) -> Tensor:
    """(B, C, *space) -> (B, N, C) with N = prod(space): one row per position."""
    return t.flatten(2).transpose(1, 2)


def recall(r: Tensor, history: Sequence[Tensor]) -> Tensor:
    """E3D's RECALL(R, C_{t-tau:t-1}) = softmax(R · Cᵀ) · C.

    R is reshaped to (B, T·H·W, C) queries; the n history entries concatenated to
    (B, n·T·H·W, C) keys = values; the softmax runs over all n·T·H·W key positions; no 1/√d
    scaling and no projections. The result is reshaped back to r's shape.
    """
    q = positions(r)                                          # (B, N, C)
    kv = torch.cat([positions(c) for c in history], dim=1)    # (B, n·N, C)
    attn = torch.softmax(q @ kv.transpose(1, 2), dim=-1)      # (B, N, n·N), rows sum to 1
    out = attn @ kv                                           # (B, N, C)
    return out.transpose(1, 2).reshape(r.shape)


def recall_loop(r: Tensor, history: Sequence[Tensor]) -> Tensor:
    """RECALL written as an explicit per-position loop in Python floats (tiny sizes only):
    for every query position p, e_j = <r_p, k_j> over every position j of every history
    entry, w_j = exp(e_j) / sum_j exp(e_j), out_p = sum_j w_j k_j."""
    B, C = r.shape[:2]
    q = positions(r).tolist()
    keys = torch.cat([positions(c) for c in history], dim=1).tolist()
    out = torch.zeros(B, len(q[0]), C, dtype=torch.float64)
    for b in range(B):
        for p, qp in enumerate(q[b]):
            scores = [sum(qc * kc for qc, kc in zip(qp, kj)) for kj in keys[b]]
            top = max(scores)
            e = [math.exp(s - top) for s in scores]
            z = sum(e)
            for ch in range(C):
                out[b, p, ch] = sum(ej / z * kj[ch] for ej, kj in zip(e, keys[b]))
    return out.transpose(1, 2).reshape(r.shape).to(r.dtype)


def eifag(f: Tensor, history: Sequence[Tensor]) -> Tensor:
    """ASTM's EIFAG (astm.txt eqs. 7-8): T = sum_n softmax_n(C_n ⊙ F) ⊙ C_n, the softmax over
    the HISTORY axis n, separately at every element (channel, [time,] pixel)."""
    S = torch.stack(list(history), dim=1)                     # (B, n, C, ...)
    weights = torch.softmax(S * f.unsqueeze(1), dim=1)        # sums to 1 over n
    return (weights * S).sum(dim=1)


def eifag_loop(f: Tensor, history: Sequence[Tensor]) -> Tensor:
    """EIFAG elementwise in Python floats (tiny sizes only)."""
    flat_f = f.reshape(-1).tolist()
    flat_c = [c.reshape(-1).tolist() for c in history]
    out = []
    for e, fe in enumerate(flat_f):
        logits = [c[e] * fe for c in flat_c]
        top = max(logits)
        w = [math.exp(v - top) for v in logits]
        z = sum(w)
        out.append(sum(wn / z * c[e] for wn, c in zip(w, flat_c)))
    return torch.tensor(out, dtype=torch.float64).reshape(f.shape).to(f.dtype)


def patch_attention(q: Tuple[Tensor, Tensor], k: Tuple[Tensor, Tensor], v: Tuple[Tensor, Tensor],
                    s: int) -> Tuple[Tensor, Tensor]:
    """CMS-LSTM's attention at scale s on Z = (h, c) (each of q, k, v is an (h-part, c-part)
    pair of (B, C, H, W) maps): the map is cut into s×s patches of (H/s)×(W/s) pixels; inside
    each patch the tokens are the patch's pixels of BOTH h and c (2·(H/s)(W/s) tokens);
    A = softmax(Qᵀ K) over the keys (no scaling), out = V Aᵀ. Returns the (h-part, c-part)."""
    B, C, H, W = q[0].shape
    ph, pw = H // s, W // s
    L = ph * pw
    rows_h, rows_c = [], []
    for a in range(s):
        cols_h, cols_c = [], []
        for b in range(s):
            ys, xs = slice(a * ph, (a + 1) * ph), slice(b * pw, (b + 1) * pw)

            def tokens(pair):                 # (B, C, 2L): h's pixels of the patch, then c's
                return torch.cat([pair[0][:, :, ys, xs].flatten(2), pair[1][:, :, ys, xs].flatten(2)], dim=2)

            qt, kt, vt = tokens(q), tokens(k), tokens(v)
            attn = torch.softmax(qt.transpose(1, 2) @ kt, dim=-1)     # (B, 2L query, 2L key)
            out = vt @ attn.transpose(1, 2)                          # (B, C, 2L)
            cols_h.append(out[:, :, :L].reshape(B, C, ph, pw))
            cols_c.append(out[:, :, L:].reshape(B, C, ph, pw))
        rows_h.append(torch.cat(cols_h, dim=3))
        rows_c.append(torch.cat(cols_c, dim=3))
    return torch.cat(rows_h, dim=2), torch.cat(rows_c, dim=2)


def patch_attention_loop(q, k, v, s):
    """`patch_attention` pixel by pixel in Python floats (tiny sizes only): the output at
    pixel (y, x) of part z in {h, c} attends over every pixel (y', x') of BOTH parts that lies
    in the same patch (y // ph == y' // ph and x // pw == x' // pw)."""
    B, C, H, W = q[0].shape
    ph, pw = H // s, W // s
    Q = [t.tolist() for t in q]
    K = [t.tolist() for t in k]
    V = [t.tolist() for t in v]
    out = [torch.zeros(B, C, H, W, dtype=torch.float64) for _ in range(2)]
    for bi in range(B):
        for z in range(2):
            for y in range(H):
                for x in range(W):
                    keys = [(z2, y2, x2) for z2 in range(2) for y2 in range(H) for x2 in range(W)
                            if y2 // ph == y // ph and x2 // pw == x // pw]
                    scores = [sum(Q[z][bi][ch][y][x] * K[z2][bi][ch][y2][x2] for ch in range(C))
                              for z2, y2, x2 in keys]
                    top = max(scores)
                    e = [math.exp(sc - top) for sc in scores]
                    tot = sum(e)
                    for ch in range(C):
                        out[z][bi, ch, y, x] = sum(ej / tot * V[z2][bi][ch][y2][x2]
                                                   for ej, (z2, y2, x2) in zip(e, keys))
    return out[0].to(q[0].dtype), out[1].to(q[0].dtype)


# ---------------------------------------------------------------------------------------------
# base class: named parameters, zero state, unrolling with a history
# ---------------------------------------------------------------------------------------------

class RefCell(nn.Module):
    """A reference cell. Subclasses declare parameters with `self.param(name, *shape)` and
    implement `step(inputs, state, history) -> (output, next_state)`."""

    STATES: Tuple[str, ...] = ("h", "c")
    HISTORY: Optional[str] = None       # the state whose past values `step` reads, if any

    def __init__(self, hidden: int, tau: Optional[int] = None):
        super().__init__()
        self.hidden = hidden
        self.tau = tau

    # -- parameters ----------------------------------------------------------------------
    def param(self, name: str, *shape: int) -> None:
        """Declare the parameter `name` (dots make nested containers: `SE.LN_A.weight`)."""
        *path, leaf = name.split(".")
        owner: nn.Module = self
        for part in path:
            if part not in owner._modules:
                owner.add_module(part, nn.Module())
            owner = owner._modules[part]
        owner.register_parameter(leaf, nn.Parameter(torch.zeros(*shape)))

    def P(self) -> Dict[str, Tensor]:
        return dict(self.named_parameters())

    def shapes(self) -> Dict[str, Tuple[int, ...]]:
        return {n: tuple(t.shape) for n, t in self.named_parameters()}

    # -- states ----------------------------------------------------------------------------
    def zero_state(self, x: Tensor) -> State:
        shape = (x.shape[0], self.hidden, *x.shape[2:])
        return {n: x.new_zeros(shape) for n in self.STATES}

    def step(self, inputs: Tuple[Tensor, ...], state: State,
             history: Optional[List[Tensor]]) -> Tuple[Tensor, State]:
        raise NotImplementedError

    def forward(self, *inputs: Tensor, state: Optional[State] = None,
                history: Optional[List[Tensor]] = None) -> Tuple[Tensor, State]:
        """One step. With no `history`, the history is [state[HISTORY]] (a first step)."""
        state = dict(state) if state is not None else self.zero_state(inputs[0])
        if self.HISTORY is not None and history is None:
            history = [state[self.HISTORY]]
        return self.step(tuple(inputs), state, history)

    def run(self, steps: Sequence[Tuple[Tensor, ...]], state0: Optional[State] = None
            ) -> Tuple[List[Tensor], List[State], List[List[Tensor]]]:
        """Unroll over `steps` (a list of per-step input tuples). Returns the outputs, the
        states after every step and, per step, the history list that step READ."""
        state = dict(state0) if state0 is not None else self.zero_state(steps[0][0])
        history = [state[self.HISTORY]] if self.HISTORY is not None else None
        outs, states, read = [], [], []
        for inputs in steps:
            read.append(list(history) if history is not None else [])
            out, state = self.step(tuple(inputs), state, list(history) if history is not None else None)
            outs.append(out)
            states.append(state)
            if history is not None:
                history = history + [state[self.HISTORY]]       # a new list: entries stay distinct
                if self.tau is not None:
                    history = history[-self.tau:]
        return outs, states, read


# ---------------------------------------------------------------------------------------------
# E3D-LSTM (paper), w/o attention, 2D
# ---------------------------------------------------------------------------------------------

class E3DLSTM(RefCell):
    """E3D-LSTM as the paper writes it (e3d-lstm.txt eqs. 1-2; specs/e3d_lstm.cell):

        r   = σ(W_xr ⋆ x + W_hr ⋆ h + b_r)
        i   = σ(W_xi ⋆ x + W_hi ⋆ h + b_i)
        g   = tanh(W_xg ⋆ x + W_hg ⋆ h + b_g)
        R   = RECALL(r, c[t-τ:t-1]) = softmax(r · Cᵀ) · C      (no scaling, no projections)
        c'  = i ⊙ g + LayerNorm(c + R)                          (no forget gate on c)
        i_m = σ(W_xi_m ⋆ x + W_mi ⋆ m + b_i_m)
        g_m = tanh(W_xg_m ⋆ x + W_mg ⋆ m + b_g_m)
        f_m = σ(W_xf_m ⋆ x + W_mf ⋆ m + b_f_m)
        m'  = i_m ⊙ g_m + f_m ⊙ m
        o   = σ(W_xo ⋆ x + W_ho ⋆ h + W_co ⋆ c' + W_mo ⋆ m' + b_o)
        h'  = o ⊙ tanh(W_1x1 ⋆ [c', m'])                        (W_1x1 1×1×1, no bias)

    3D convs kt×k×k ("same"), x is a (B, C, T, H, W) window, states (B, hidden, T, H, W).
    LayerNorm LN_c: over (C, T, H, W) jointly, per-channel gain/bias, eps 1e-5.
    The history is the last τ distinct c's (all of them when tau is None), c_0 included.
    """

    STATES = ("h", "c", "m")
    HISTORY = "c"
    ATTENTION = True

    def __init__(self, in_channels: int, hidden: int = 64, kt: int = 2, k: int = 5,
                 tau: Optional[int] = None, conv_dims: int = 3):
        super().__init__(hidden, tau)
        ker = (kt, k, k) if conv_dims == 3 else (k, k)
        one = (1,) * conv_dims
        C = hidden
        x_gates = (["r"] if self.ATTENTION else []) + ["i", "g"]
        for gname in x_gates:
            self.param(f"W_x{gname}", C, in_channels, *ker)
            self.param(f"W_h{gname}", C, C, *ker)
            self.param(f"b_{gname}", C)
        for gname in ("i", "g", "f"):
            self.param(f"W_x{gname}_m", C, in_channels, *ker)
            self.param(f"W_m{gname}", C, C, *ker)
            self.param(f"b_{gname}_m", C)
        self.param("W_xo", C, in_channels, *ker)
        self.param("W_ho", C, C, *ker)
        self.param("W_co", C, C, *ker)
        self.param("W_mo", C, C, *ker)
        self.param("b_o", C)
        self.param("W_1x1", C, 2 * C, *one)
        self.param("LN_c.weight", C)
        self.param("LN_c.bias", C)

    def memory(self, P, x, h, c, history):
        """c' (eq. 1)."""
        i = torch.sigmoid(conv(x, P["W_xi"]) + conv(h, P["W_hi"]) + bias(P["b_i"], x))
        g = torch.tanh(conv(x, P["W_xg"]) + conv(h, P["W_hg"]) + bias(P["b_g"], x))
        r = torch.sigmoid(conv(x, P["W_xr"]) + conv(h, P["W_hr"]) + bias(P["b_r"], x))
        R = recall(r, history)
        return i * g + layernorm(c + R, P["LN_c.weight"], P["LN_c.bias"])

    def step(self, inputs, state, history):
        (x,) = inputs
        P = self.P()
        h, c, m = state["h"], state["c"], state["m"]
        c_new = self.memory(P, x, h, c, history)

        i_m = torch.sigmoid(conv(x, P["W_xi_m"]) + conv(m, P["W_mi"]) + bias(P["b_i_m"], x))
        g_m = torch.tanh(conv(x, P["W_xg_m"]) + conv(m, P["W_mg"]) + bias(P["b_g_m"], x))
        f_m = torch.sigmoid(conv(x, P["W_xf_m"]) + conv(m, P["W_mf"]) + bias(P["b_f_m"], x))
        m_new = i_m * g_m + f_m * m

        o = torch.sigmoid(conv(x, P["W_xo"]) + conv(h, P["W_ho"]) + conv(c_new, P["W_co"])
                          + conv(m_new, P["W_mo"]) + bias(P["b_o"], x))
        h_new = o * torch.tanh(conv(torch.cat([c_new, m_new], dim=1), P["W_1x1"]))
        return h_new, {"h": h_new, "c": c_new, "m": m_new}


class E3DLSTMNoAttention(E3DLSTM):
    """E3D-LSTM w/o memory attention (e3d-lstm.txt Table 2, baseline 4;
    specs/e3d_lstm_no_attention.cell): RECALL is removed and with it r and W_xr, W_hr, b_r:

        c' = i ⊙ g + LayerNorm(c)

    everything else as `E3DLSTM`. No history is read.
    """

    HISTORY = None
    ATTENTION = False

    def memory(self, P, x, h, c, history):
        i = torch.sigmoid(conv(x, P["W_xi"]) + conv(h, P["W_hi"]) + bias(P["b_i"], x))
        g = torch.tanh(conv(x, P["W_xg"]) + conv(h, P["W_hg"]) + bias(P["b_g"], x))
        return i * g + layernorm(c, P["LN_c.weight"], P["LN_c.bias"])


class E3DLSTM2D(E3DLSTM):
    """E3D-LSTM w/o 3D convolutions (e3d-lstm.txt Table 2, baseline 3; specs/e3d_lstm_2d.cell):
    the equations of `E3DLSTM` with every filter 2D (k×k, W_1x1 1×1), x one frame (B, C, H, W),
    NCHW states; RECALL attends over the H·W positions of each past memory; LN_c over (C, H, W).
    """

    def __init__(self, in_channels: int, hidden: int = 64, k: int = 5, tau: Optional[int] = None):
        super().__init__(in_channels, hidden, kt=1, k=k, tau=tau, conv_dims=2)


# ---------------------------------------------------------------------------------------------
# E3D-LSTM as google/e3d_lstm computes it
# ---------------------------------------------------------------------------------------------

class E3DLSTMOfficial(RefCell):
    """E3D-LSTM as the authors' released code computes it (cells.md "Official code";
    google/e3d_lstm src/layers/rnn_cell.py), chunk order and names of
    specs/e3d_lstm_official.cell:

        i_x, g_x, r_x, o_x, i_xm, g_xm, f_xm = LN_x(W_x ⋆ x + b_x)     (one conv, 7C outputs)
        i_h, g_h, r_h, o_h                   = LN_h(W_h ⋆ h + b_h)     (4C)
        i_mm, f_mm, g_mm, m_m                = LN_m(W_m ⋆ m + b_m)     (4C)
        r = σ(r_x + r_h);   i = σ(i_x + i_h);   g = tanh(g_x + g_h)
        c' = i ⊙ g + LN_c(c + RECALL(r, c[t-τ:t-1]))
        i_m = σ(i_xm + i_mm);   f_m = σ(f_xm + f_mm + 1.0);   g_m = tanh(g_xm + g_mm)
        m_new = f_m ⊙ tanh(m_m) + i_m ⊙ g_m
        o  = σ(tanh(o_x + o_h + W_co ⋆ c' + b_co + W_mo ⋆ m_new + b_mo))
        h' = tanh(W_1x1 ⋆ [c', m_new] + b_1x1) ⊙ o                      (1×1×1 conv with bias)
        m' = m                                     (it returns the OLD global memory: a bug)

    Every LN is tf.contrib.layers.layer_norm: over all of its input's non-batch axes jointly
    (all gate channels, T, H, W), per-channel gain/bias, eps 1e-12 -- including LN_c (the
    code's "self_attn" norm).

    `output_gate_norm`: cells.md says the output gate is "tanh(...) then σ" and the released
    code has no norm there; specs/e3d_lstm_official.cell writes σ(LN_o(tanh(...))). The
    default (False) follows cells.md/the code; True adds LN_o (C,) as the spec has it.
    """

    STATES = ("h", "c", "m")
    HISTORY = "c"
    EPS = 1e-12

    def __init__(self, in_channels: int, hidden: int = 64, kt: int = 2, k: int = 5,
                 tau: Optional[int] = None, output_gate_norm: bool = False):
        super().__init__(hidden, tau)
        self.output_gate_norm = output_gate_norm
        C = hidden
        ker = (kt, k, k)
        self.param("W_x", 7 * C, in_channels, *ker)
        self.param("W_h", 4 * C, C, *ker)
        self.param("W_m", 4 * C, C, *ker)
        self.param("W_co", C, C, *ker)
        self.param("W_mo", C, C, *ker)
        self.param("W_1x1", C, 2 * C, 1, 1, 1)
        for name, n in (("x", 7), ("h", 4), ("m", 4)):
            self.param(f"b_{name}", n * C)
        for name in ("co", "mo", "1x1"):
            self.param(f"b_{name}", C)
        norms = [("x", 7), ("h", 4), ("m", 4), ("c", 1)] + ([("o", 1)] if output_gate_norm else [])
        for name, n in norms:
            self.param(f"LN_{name}.weight", n * C)
            self.param(f"LN_{name}.bias", n * C)

    def ln(self, P, name, t):
        return layernorm(t, P[f"LN_{name}.weight"], P[f"LN_{name}.bias"], eps=self.EPS)

    def step(self, inputs, state, history):
        (x,) = inputs
        P = self.P()
        h, c, m = state["h"], state["c"], state["m"]
        i_x, g_x, r_x, o_x, i_xm, g_xm, f_xm = torch.chunk(
            self.ln(P, "x", conv(x, P["W_x"], P["b_x"])), 7, dim=1)
        i_h, g_h, r_h, o_h = torch.chunk(self.ln(P, "h", conv(h, P["W_h"], P["b_h"])), 4, dim=1)
        i_mm, f_mm, g_mm, m_m = torch.chunk(self.ln(P, "m", conv(m, P["W_m"], P["b_m"])), 4, dim=1)

        r = torch.sigmoid(r_x + r_h)
        i = torch.sigmoid(i_x + i_h)
        g = torch.tanh(g_x + g_h)
        c_new = i * g + self.ln(P, "c", c + recall(r, history))

        i_m = torch.sigmoid(i_xm + i_mm)
        f_m = torch.sigmoid(f_xm + f_mm + 1.0)
        g_m = torch.tanh(g_xm + g_mm)
        m_new = f_m * torch.tanh(m_m) + i_m * g_m

        o = torch.tanh(o_x + o_h + conv(c_new, P["W_co"], P["b_co"]) + conv(m_new, P["W_mo"], P["b_mo"]))
        if self.output_gate_norm:
            o = self.ln(P, "o", o)
        o = torch.sigmoid(o)
        h_new = torch.tanh(conv(torch.cat([c_new, m_new], dim=1), P["W_1x1"], P["b_1x1"])) * o
        return h_new, {"h": h_new, "c": c_new, "m": m}


# ---------------------------------------------------------------------------------------------
# ASTM
# ---------------------------------------------------------------------------------------------

class ASTM(RefCell):
    """ASTM (astm.txt eqs. 1-8; specs/astm.cell), 3D convs kt×k×k (3×5×5), T = 2 windows:

        I = σ(W_xi ⋆ x + W_hi ⋆ h + b_i)
        G = tanh(W_xg ⋆ x + W_hg ⋆ h + b_g)
        F = σ(W_xf ⋆ x + W_hf ⋆ h + b_f)
        T_t = Σ_n softmax_n(C_{t-n} ⊙ F) ⊙ C_{t-n}      over the τ DISTINCT past c (EIFAG)
        c'  = I ⊙ G + F ⊙ T_t
        i_m = σ(W_xi_m ⋆ x + W_mi ⋆ m + b_i_m)
        g_m = tanh(W_xg_m ⋆ x + W_mg ⋆ m + b_g_m)
        f_m = σ(W_xf_m ⋆ x + W_mf ⋆ m + b_f_m)
        m'  = m ⊙ f_m + i_m ⊙ g_m
        o   = σ(W_xo ⋆ x + W_ho ⋆ h + W_mo ⋆ m' + W_co ⋆ c' + b_o)
        h'  = o ⊙ tanh(W_1x1 ⋆ [c', m'])               (1×1×1, no bias)
    """

    STATES = ("h", "c", "m")
    HISTORY = "c"

    def __init__(self, in_channels: int, hidden: int = 64, kt: int = 3, k: int = 5, tau: Optional[int] = 5):
        super().__init__(hidden, tau)
        C, ker = hidden, (kt, k, k)
        for gname in ("i", "g", "f"):
            self.param(f"W_x{gname}", C, in_channels, *ker)
            self.param(f"W_h{gname}", C, C, *ker)
            self.param(f"b_{gname}", C)
        for gname in ("i", "g", "f"):
            self.param(f"W_x{gname}_m", C, in_channels, *ker)
            self.param(f"W_m{gname}", C, C, *ker)
            self.param(f"b_{gname}_m", C)
        self.param("W_xo", C, in_channels, *ker)
        self.param("W_ho", C, C, *ker)
        self.param("W_mo", C, C, *ker)
        self.param("W_co", C, C, *ker)
        self.param("b_o", C)
        self.param("W_1x1", C, 2 * C, 1, 1, 1)

    def step(self, inputs, state, history):
        (x,) = inputs
        P = self.P()
        h, c, m = state["h"], state["c"], state["m"]
        i = torch.sigmoid(conv(x, P["W_xi"]) + conv(h, P["W_hi"]) + bias(P["b_i"], x))
        g = torch.tanh(conv(x, P["W_xg"]) + conv(h, P["W_hg"]) + bias(P["b_g"], x))
        f = torch.sigmoid(conv(x, P["W_xf"]) + conv(h, P["W_hf"]) + bias(P["b_f"], x))
        c_new = i * g + f * eifag(f, history)

        i_m = torch.sigmoid(conv(x, P["W_xi_m"]) + conv(m, P["W_mi"]) + bias(P["b_i_m"], x))
        g_m = torch.tanh(conv(x, P["W_xg_m"]) + conv(m, P["W_mg"]) + bias(P["b_g_m"], x))
        f_m = torch.sigmoid(conv(x, P["W_xf_m"]) + conv(m, P["W_mf"]) + bias(P["b_f_m"], x))
        m_new = m * f_m + i_m * g_m

        o = torch.sigmoid(conv(x, P["W_xo"]) + conv(h, P["W_ho"]) + conv(m_new, P["W_mo"])
                          + conv(c_new, P["W_co"]) + bias(P["b_o"], x))
        h_new = o * torch.tanh(conv(torch.cat([c_new, m_new], dim=1), P["W_1x1"]))
        return h_new, {"h": h_new, "c": c_new, "m": m_new}


# ---------------------------------------------------------------------------------------------
# CMS-LSTM's CE and SE blocks, CMS-LSTM, PredRNN + CE + SE
# ---------------------------------------------------------------------------------------------

SCALES = (1, 2, 4)


def declare_ce(cell: RefCell, in_channels: int, hidden: int, k: int) -> None:
    cell.param("CE.W_H", in_channels, hidden, k, k)      # gates x from h
    cell.param("CE.b_H", in_channels)
    cell.param("CE.W_X", hidden, in_channels, k, k)      # gates h from x
    cell.param("CE.b_X", hidden)


def ce_block(P, x, h):
    """CE (cms-lstm.txt eq. 1, stacked 5 half-steps with ONE shared pair of convs):
        x_1 = 2σ(W_H ⋆ h + b_H) ⊙ x
        h_1 = 2σ(W_X ⋆ x_1 + b_X) ⊙ h
        x_2 = 2σ(W_H ⋆ h_1 + b_H) ⊙ x_1
        h_2 = 2σ(W_X ⋆ x_2 + b_X) ⊙ h_1
        x_3 = 2σ(W_H ⋆ h_2 + b_H) ⊙ x_2          -> returns (x_3, h_2)
    """
    for half_step in range(5):
        if half_step % 2 == 0:
            x = 2 * torch.sigmoid(conv(h, P["CE.W_H"], P["CE.b_H"])) * x
        else:
            h = 2 * torch.sigmoid(conv(x, P["CE.W_X"], P["CE.b_X"])) * h
    return x, h


def declare_se(cell: RefCell, hidden: int, height: int, width: int) -> None:
    C = hidden
    for s in SCALES:
        for name in ("Q", "K", "V"):
            cell.param(f"SE.{name}_{s}", C, C, 1, 1)
            cell.param(f"SE.b_{name}_{s}", C)
    cell.param("SE.W_A", C, len(SCALES) * C, 5, 5)
    cell.param("SE.b_A", C)
    cell.param("SE.LN_A.weight", C, height, 2 * width)
    cell.param("SE.LN_A.bias", C, height, 2 * width)
    cell.param("SE.W_z", C, 2 * C, 1, 1)
    cell.param("SE.b_z", C)
    for gname in ("i", "g", "o"):
        cell.param(f"SE.W_A{gname}", C, C, 5, 5)
        cell.param(f"SE.W_h{gname}", C, C, 5, 5)
        cell.param(f"SE.b_{gname}", C)


def se_scale(P, s, h, c):
    """One scale of SE: Q, K, V 1×1 convs with bias on h and on c; attention inside each
    s×s patch over the tokens of both h and c; plus the input (residual). -> (Y_h, Y_c)."""
    def proj(name, t):
        return conv(t, P[f"SE.{name}_{s}"], P[f"SE.b_{name}_{s}"])
    q = (proj("Q", h), proj("Q", c))
    k = (proj("K", h), proj("K", c))
    v = (proj("V", h), proj("V", c))
    y_h, y_c = patch_attention(q, k, v, s)
    return y_h + h, y_c + c


def se_block(P, h, c):
    """SE (cms-lstm.txt eqs. 2-4, cells.md, czh-98/CMS-LSTM models/basic_blocks.py):
        Y_s = attention_s(Q_s, K_s, V_s on Z = (h, c)) + Z                 s in (1, 2, 4)
        Ẑ   = [Y_1, Y_2, Y_4] (channels), h-part | c-part side by side along WIDTH
        A_H | A_C = LN_A(W_A ⋆ Ẑ + b_A)          LN_A = nn.LayerNorm([C, H, 2W])
        A   = W_z ⋆ [A_H, A_C] + b_z             (1×1)
        i = σ(W_Ai ⋆ A + W_hi ⋆ h + b_i);  g = tanh(W_Ag ⋆ A + W_hg ⋆ h + b_g)
        o = σ(W_Ao ⋆ A + W_ho ⋆ h + b_o)         (5×5 convs)
        ĉ = (1 − i) ⊙ c + i ⊙ g;   ĥ = o ⊙ ĉ     (no tanh)          -> (ĥ, ĉ)
    """
    W = h.shape[-1]
    ys = [se_scale(P, s, h, c) for s in SCALES]
    Y_h = torch.cat([y[0] for y in ys], dim=1)
    Y_c = torch.cat([y[1] for y in ys], dim=1)
    Z_hat = torch.cat([Y_h, Y_c], dim=3)                                  # (B, 3C, H, 2W)
    A_HC = layernorm_trailing(conv(Z_hat, P["SE.W_A"], P["SE.b_A"]), P["SE.LN_A.weight"], P["SE.LN_A.bias"])
    A_H, A_C = A_HC[..., :W], A_HC[..., W:]
    A = conv(torch.cat([A_H, A_C], dim=1), P["SE.W_z"], P["SE.b_z"])
    i = torch.sigmoid(conv(A, P["SE.W_Ai"]) + conv(h, P["SE.W_hi"]) + bias(P["SE.b_i"], h))
    g = torch.tanh(conv(A, P["SE.W_Ag"]) + conv(h, P["SE.W_hg"]) + bias(P["SE.b_g"], h))
    o = torch.sigmoid(conv(A, P["SE.W_Ao"]) + conv(h, P["SE.W_ho"]) + bias(P["SE.b_o"], h))
    c_hat = (1 - i) * c + i * g
    h_hat = o * c_hat
    return h_hat, c_hat


class CMSLSTM(RefCell):
    """CMS-LSTM (cms-lstm.txt eq. 5; specs/cms_lstm.cell), k×k 2D convs:

        x̂, ĥ = CE(x, h)
        i = σ(W_xi ⋆ x̂ + W_hi ⋆ ĥ + b_i);   f = σ(W_xf ⋆ x̂ + W_hf ⋆ ĥ + b_f)
        g = tanh(W_xg ⋆ x̂ + W_hg ⋆ ĥ + b_g)
        c_1 = f ⊙ c + i ⊙ g
        o = σ(W_xo ⋆ x̂ + W_ho ⋆ ĥ + b_o);   h_1 = o ⊙ tanh(c_1)
        h', c' = SE(h_1, c_1)
    (see `ce_block`, `se_block`).
    """

    def __init__(self, in_channels: int, hidden: int = 64, k: int = 5, height: int = 16, width: int = 16):
        super().__init__(hidden)
        C = hidden
        for gname in ("i", "f", "g", "o"):
            self.param(f"W_x{gname}", C, in_channels, k, k)
            self.param(f"W_h{gname}", C, C, k, k)
            self.param(f"b_{gname}", C)
        declare_ce(self, in_channels, hidden, k)
        declare_se(self, hidden, height, width)

    def step(self, inputs, state, history):
        (x,) = inputs
        P = self.P()
        h, c = state["h"], state["c"]
        x_hat, h_hat = ce_block(P, x, h)
        i = torch.sigmoid(conv(x_hat, P["W_xi"]) + conv(h_hat, P["W_hi"]) + bias(P["b_i"], h))
        f = torch.sigmoid(conv(x_hat, P["W_xf"]) + conv(h_hat, P["W_hf"]) + bias(P["b_f"], h))
        g = torch.tanh(conv(x_hat, P["W_xg"]) + conv(h_hat, P["W_hg"]) + bias(P["b_g"], h))
        c_1 = f * c + i * g
        o = torch.sigmoid(conv(x_hat, P["W_xo"]) + conv(h_hat, P["W_ho"]) + bias(P["b_o"], h))
        h_1 = o * torch.tanh(c_1)
        h_new, c_new = se_block(P, h_1, c_1)
        return h_new, {"h": h_new, "c": c_new}


class PredRNNCESE(RefCell):
    """PredRNN's ST-LSTM with CMS-LSTM's CE and SE (cms-lstm.txt Table 3;
    specs/predrnn_ce_se.cell). ST-LSTM as predrnn-pytorch: convs without bias, +1.0 in both
    forget gates, W_o k×k over [c_1, m'], bias-free 1×1 W_1x1:

        x̂, ĥ = CE(x, h)
        i = σ(W_xi ⋆ x̂ + W_hi ⋆ ĥ);   f = σ(W_xf ⋆ x̂ + W_hf ⋆ ĥ + 1.0);   g = tanh(W_xg ⋆ x̂ + W_hg ⋆ ĥ)
        c_1 = f ⊙ c + i ⊙ g
        i_m = σ(W_xi_m ⋆ x̂ + W_mi ⋆ m);   f_m = σ(W_xf_m ⋆ x̂ + W_mf ⋆ m + 1.0)
        g_m = tanh(W_xg_m ⋆ x̂ + W_mg ⋆ m);   m' = f_m ⊙ m + i_m ⊙ g_m
        o = σ(W_xo ⋆ x̂ + W_ho ⋆ ĥ + W_o ⋆ [c_1, m']);   h_1 = o ⊙ tanh(W_1x1 ⋆ [c_1, m'])
        h', c' = SE(h_1, c_1)          (m' is left as it is)
    """

    STATES = ("h", "c", "m")

    def __init__(self, in_channels: int, hidden: int = 64, k: int = 5, height: int = 16, width: int = 16):
        super().__init__(hidden)
        C = hidden
        for name in ("W_xi", "W_xf", "W_xg", "W_xi_m", "W_xf_m", "W_xg_m", "W_xo"):
            self.param(name, C, in_channels, k, k)
        for name in ("W_hi", "W_hf", "W_hg", "W_ho", "W_mi", "W_mf", "W_mg"):
            self.param(name, C, C, k, k)
        self.param("W_o", C, 2 * C, k, k)
        self.param("W_1x1", C, 2 * C, 1, 1)
        declare_ce(self, in_channels, hidden, k)
        declare_se(self, hidden, height, width)

    def step(self, inputs, state, history):
        (x,) = inputs
        P = self.P()
        h, c, m = state["h"], state["c"], state["m"]
        x_hat, h_hat = ce_block(P, x, h)
        i = torch.sigmoid(conv(x_hat, P["W_xi"]) + conv(h_hat, P["W_hi"]))
        f = torch.sigmoid(conv(x_hat, P["W_xf"]) + conv(h_hat, P["W_hf"]) + 1.0)
        g = torch.tanh(conv(x_hat, P["W_xg"]) + conv(h_hat, P["W_hg"]))
        c_1 = f * c + i * g
        i_m = torch.sigmoid(conv(x_hat, P["W_xi_m"]) + conv(m, P["W_mi"]))
        f_m = torch.sigmoid(conv(x_hat, P["W_xf_m"]) + conv(m, P["W_mf"]) + 1.0)
        g_m = torch.tanh(conv(x_hat, P["W_xg_m"]) + conv(m, P["W_mg"]))
        m_new = f_m * m + i_m * g_m
        cm = torch.cat([c_1, m_new], dim=1)
        o = torch.sigmoid(conv(x_hat, P["W_xo"]) + conv(h_hat, P["W_ho"]) + conv(cm, P["W_o"]))
        h_1 = o * torch.tanh(conv(cm, P["W_1x1"]))
        h_new, c_new = se_block(P, h_1, c_1)
        return h_new, {"h": h_new, "c": c_new, "m": m_new}


# ---------------------------------------------------------------------------------------------
# multi-kernel ConvLSTM and its variants
# ---------------------------------------------------------------------------------------------

GATES = ("i", "f", "c", "o")


class MKConvLSTM(RefCell):
    """Multi-kernel ConvLSTM (multi-kernel-convlstm.txt III-C, Fig. 9a; specs/mk_convlstm.cell).
    Every W_x·, W_h· is `conv {3×3: C/2, 5×5: C/2}`: a gate's C channels are the
    CONCATENATION [3×3 conv (C/2 channels), 5×5 conv (C/2 channels)] -- channels 0..C/2-1 of
    every gate come from its 3×3 kernel, C/2..C-1 from its 5×5 kernel (gate-major, Fig. 4b):

        i  = σ(W_xi ⋆ x + W_hi ⋆ h + b_i)
        f  = σ(W_xf ⋆ x + W_hf ⋆ h + b_f)
        c' = f ⊙ c + i ⊙ tanh(W_xc ⋆ x + W_hc ⋆ h + b_c)
        o  = σ(W_xo ⋆ x + W_ho ⋆ h + b_o)
        h' = o ⊙ tanh(c')
    """

    KERNELS: Tuple[Tuple[str, int, int], ...] = (("3x3", 3, 2), ("5x5", 5, 2))   # (name, k, C / share)

    def __init__(self, in_channels: int, hidden: int = 64):
        super().__init__(hidden)
        self.in_channels = in_channels
        for g in GATES:
            for operand, cin in (("x", self.kernel_in(in_channels)), ("h", self.kernel_in(hidden))):
                for name, k, share in self.KERNELS:
                    self.param(f"W_{operand}{g}.{name}", hidden // share, cin[name], k, k)
        self.declare_extra(in_channels, hidden)
        for g in GATES:
            self.param(f"b_{g}", hidden)

    def kernel_in(self, channels):
        """Input channels each kernel of a conv of an operand with `channels` channels reads."""
        return {name: channels for name, _, _ in self.KERNELS}

    def declare_extra(self, in_channels, hidden):
        pass

    def mk(self, P, symbol, operand_per_kernel):
        """The multi-kernel conv `symbol` ⋆ operand: [conv(in_k, symbol.k) for k] on channels."""
        return multi_kernel_conv([operand_per_kernel[name] for name, _, _ in self.KERNELS],
                                 [P[f"{symbol}.{name}"] for name, _, _ in self.KERNELS])

    def x_term(self, P, g, X):
        return self.mk(P, f"W_x{g}", X)

    def operands(self, P, x, h, extra):
        """What each kernel reads: {kernel name: tensor} for x and for h."""
        return ({name: x for name, _, _ in self.KERNELS}, {name: h for name, _, _ in self.KERNELS})

    def step(self, inputs, state, history):
        x, *extra = inputs
        P = self.P()
        h, c = state["h"], state["c"]
        X, Hs = self.operands(P, x, h, extra)
        pre = {g: self.x_term(P, g, X) + self.mk(P, f"W_h{g}", Hs) + bias(P[f"b_{g}"], h) for g in GATES}
        i = torch.sigmoid(pre["i"])
        f = torch.sigmoid(pre["f"])
        c_new = f * c + i * torch.tanh(pre["c"])
        o = torch.sigmoid(pre["o"])
        h_new = o * torch.tanh(c_new)
        return h_new, {"h": h_new, "c": c_new}


class MKConvLSTM1x1(MKConvLSTM):
    """Multi-kernel ConvLSTM with a stacked 1×1 (Fig. 4c; specs/mk_convlstm_1x1.cell): each
    gate's concatenated 3×3|5×5 INPUT-to-hidden output goes through its own bias-free 1×1
    conv W_1· (C -> C) before the sum:

        i  = σ(W_1i ⋆ (W_xi ⋆ x) + W_hi ⋆ h + b_i)      (and f, c, o alike)
        c' = f ⊙ c + i ⊙ tanh(W_1c ⋆ (W_xc ⋆ x) + W_hc ⋆ h + b_c)
        h' = o ⊙ tanh(c')
    """

    def declare_extra(self, in_channels, hidden):
        for g in GATES:
            self.param(f"W_1{g}", hidden, hidden, 1, 1)

    def x_term(self, P, g, X):
        return conv(self.mk(P, f"W_x{g}", X), P[f"W_1{g}"])


class MKConvLSTMInception(MKConvLSTM):
    """Inception-like multi-kernel ConvLSTM (Fig. 9b; specs/mk_convlstm_inception.cell):
    `conv {1×1: C/4, 3×3: C/2, 5×5: C/4}`; the 1×1 kernel reads the operand itself, the 3×3
    and 5×5 kernels read a bias-free linear 1×1 bottleneck of it (B_x3, B_x5, B_h3, B_h5, each
    shared by all four gates):

        X = {1×1: x, 3×3: B_x3 ⋆ x, 5×5: B_x5 ⋆ x};   H = {1×1: h, 3×3: B_h3 ⋆ h, 5×5: B_h5 ⋆ h}
        i = σ(W_xi ⋆ X + W_hi ⋆ H + b_i) ...   (ConvLSTM equations as `MKConvLSTM`)
    """

    KERNELS = (("1x1", 1, 4), ("3x3", 3, 2), ("5x5", 5, 4))

    def __init__(self, in_channels: int, hidden: int = 64, bottleneck: int = 32):
        self.bottleneck = bottleneck
        super().__init__(in_channels, hidden)

    def kernel_in(self, channels):
        return {"1x1": channels, "3x3": self.bottleneck, "5x5": self.bottleneck}

    def declare_extra(self, in_channels, hidden):
        self.param("B_x3", self.bottleneck, in_channels, 1, 1)
        self.param("B_x5", self.bottleneck, in_channels, 1, 1)
        self.param("B_h3", self.bottleneck, hidden, 1, 1)
        self.param("B_h5", self.bottleneck, hidden, 1, 1)

    def operands(self, P, x, h, extra):
        X = {"1x1": x, "3x3": conv(x, P["B_x3"]), "5x5": conv(x, P["B_x5"])}
        H = {"1x1": h, "3x3": conv(h, P["B_h3"]), "5x5": conv(h, P["B_h5"])}
        return X, H


class MKConvLSTMFlow(MKConvLSTM):
    """Multi-kernel ConvLSTM with flow-based attention masks (III-D, Fig. 5;
    specs/mk_convlstm_flow.cell). Step: `(x, flow)`. One mask per kernel from one conv of
    the flow features, as many channels as x; kernel k of every W_x· reads m_k ⊙ x
    (input-to-hidden only; W_h· read h):

        m_3 = σ(W_m3 ⋆ flow + b_m3);   m_5 = σ(W_m5 ⋆ flow + b_m5)
        X   = {3×3: m_3 ⊙ x, 5×5: m_5 ⊙ x}
        i = σ(W_xi ⋆ X + W_hi ⋆ h + b_i) ...   (ConvLSTM equations as `MKConvLSTM`)
    """

    def __init__(self, in_channels: int, hidden: int = 64, flow_channels: int = 2, k_mask: int = 3):
        self.flow_channels, self.k_mask = flow_channels, k_mask
        super().__init__(in_channels, hidden)

    def declare_extra(self, in_channels, hidden):
        for kname in ("m3", "m5"):
            self.param(f"W_{kname}", in_channels, self.flow_channels, self.k_mask, self.k_mask)
            self.param(f"b_{kname}", in_channels)

    def operands(self, P, x, h, extra):
        (flow,) = extra
        m_3 = torch.sigmoid(conv(flow, P["W_m3"], P["b_m3"]))
        m_5 = torch.sigmoid(conv(flow, P["W_m5"], P["b_m5"]))
        return {"3x3": m_3 * x, "5x5": m_5 * x}, {"3x3": h, "5x5": h}
