"""Conv geometry (`pad same|valid|N|(…)`, `stride`, `resize nearest`) and attention's token
layouts against hand-written PyTorch, at -O0 and -O2, gradients included; the optimizer fuses
only convs of equal geometry (docs/conv_modes.md, docs/attention_tokens.md).

The misuse errors are corpus files of tests/bad_specs (tests/test_errors.py); the E3D cell
that needs all of this, against OpenSTL's Eidetic3DLSTMCell, is tests/test_openstl_e3d.py.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cellgen
from cellgen.ir.ops import conv_operands
from cellgen.passes.rules import weight_symbols

DT = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")

SPEC_2D = """cell Geometry2D
  param in_channels
  param hidden = 4
  input x[in_channels]
  state h[hidden]

  weights
    W_xa, W_ha : conv 3×3 pad valid resize nearest
    W_xb, W_hb : conv 3×3
    W_xc       : conv 5×5 pad 1 resize nearest
    W_s        : conv 3×3 stride 2 resize nearest
    W_e        : conv 2×4 pad (valid, same) resize nearest

  a  = W_xa ⋆ x + W_ha ⋆ h
  b  = W_xb ⋆ x + W_hb ⋆ h
  h' = tanh(a) ⊙ σ(b) + W_xc ⋆ x + W_s ⋆ h + W_e ⋆ h
"""

# the declared geometry of every weight: (pads, strides, resize), None the default
GEOMETRY_2D = {"W_xa": (("valid", "valid"), (1, 1), "nearest"), "W_ha": (("valid", "valid"), (1, 1), "nearest"),
               "W_xb": None, "W_hb": None, "W_xc": ((1, 1), (1, 1), "nearest"),
               "W_s": (("same", "same"), (2, 2), "nearest"), "W_e": (("valid", "same"), (1, 1), "nearest")}


def _resized(y, like):
    return F.interpolate(y, size=like.shape[2:], mode="nearest")


def reference_2d(p, x, h):
    def valid(w, t):
        return _resized(F.conv2d(t, w), t)

    a = valid(p["W_xa"], x) + valid(p["W_ha"], h)
    b = F.conv2d(x, p["W_xb"], padding=1) + F.conv2d(h, p["W_hb"], padding=1)
    c = _resized(F.conv2d(x, p["W_xc"], padding=1), x)
    s = _resized(F.conv2d(h, p["W_s"], stride=2, padding=1), h)
    e = _resized(F.conv2d(F.pad(h, (1, 2, 0, 0)), p["W_e"]), h)   # W: "same" for 4 pads 1 before, 2 after
    return torch.tanh(a) * torch.sigmoid(b) + c + s + e


SPEC_3D = """cell Geometry3D
  param in_channels
  param hidden = 4
  input x[in_channels] window 2
  state h[hidden], c[hidden]

  weights
    W_x, W_h : conv 2×3×3 pad (valid, same, same) resize nearest
    W_v      : conv 2×3×3 pad (valid, 1, 1) stride (1, 2, 1) resize nearest

  R  = sum(W_v ⋆ c[t-2:t-1], over=stack)       # a conv of a stack: map by map
  c' = tanh(W_x ⋆ x + W_h ⋆ h) + R
  h' = σ(c') ⊙ c
"""


def reference_3d_step(p, x, h, c, history):
    def tf3d(w, t, **kw):
        return F.interpolate(F.conv3d(t, w, **kw), size=t.shape[2:], mode="nearest")

    history = (history + [c])[-2:]
    r = sum(tf3d(p["W_v"], e, padding=(0, 1, 1), stride=(1, 2, 1)) for e in history)
    c_new = torch.tanh(tf3d(p["W_x"], x, padding=(0, 1, 1)) + tf3d(p["W_h"], h, padding=(0, 1, 1))) + r
    return torch.sigmoid(c_new) * c, c_new, history


def _compiled(spec, level, seed=0):
    cell = cellgen.compile(spec, opt_level=level, in_channels=3).to(DT)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(cell.named_parameters()):
            param.copy_(torch.randn(param.shape, generator=gen, dtype=DT) * 0.3)
    return cell


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors, allow_unused=True)


@pytest.mark.parametrize("level", (0, 1, 2))
def test_2d_geometries_match_hand_written_torch_with_gradients(level):
    cell = _compiled(SPEC_2D, level)
    params = dict(cell.named_parameters())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 8, generator=gen, dtype=DT, requires_grad=True)
    h = torch.randn(2, 4, 7, 8, generator=gen, dtype=DT, requires_grad=True)
    out, _ = cell(x, {"h": h})
    expected = reference_2d(params, x, h)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    weights = torch.randn(out.shape, generator=gen, dtype=DT)
    wrt = [x, h, *params.values()]
    for got, want, name in zip(_grads((weights * out).sum(), wrt), _grads((weights * expected).sum(), wrt),
                               ["x", "h", *params]):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10, msg=f"grad of {name}")


@pytest.mark.parametrize("level", (0, 2))
def test_3d_valid_in_time_resized_and_a_strided_conv_of_a_history(level):
    cell = _compiled(SPEC_3D, level)
    params = dict(cell.named_parameters())
    gen = torch.Generator().manual_seed(2)
    h0 = torch.randn(2, 4, 2, 5, 6, generator=gen, dtype=DT, requires_grad=True)
    c0 = torch.randn(2, 4, 2, 5, 6, generator=gen, dtype=DT, requires_grad=True)
    xs = [torch.randn(2, 3, 2, 5, 6, generator=gen, dtype=DT, requires_grad=True) for _ in range(3)]
    state, h, c, history, outs, refs = {"h": h0, "c": c0}, h0, c0, [], [], []
    for x in xs:
        out, state = cell(x, state)
        h, c, history = reference_3d_step(params, x, h, c, history)
        outs.append(out), refs.append(h)
        torch.testing.assert_close(out, h, rtol=0, atol=1e-10)
        torch.testing.assert_close(state["c"], c, rtol=0, atol=1e-10)
    loss_a, loss_e = sum(o.square().sum() for o in outs), sum(r.square().sum() for r in refs)
    wrt = [*xs, h0, c0, *params.values()]
    for got, want in zip(_grads(loss_a, wrt), _grads(loss_e, wrt)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_o2_fuses_only_convs_of_equal_geometry():
    o0, o2 = (cellgen.compile(SPEC_2D, opt_level=level, in_channels=3) for level in (0, 2))
    assert o0.cell_graph.count("conv") == 7
    graph = o2.cell_graph
    convs = graph.ops("conv")
    seen = set()
    for conv in convs:
        symbols = weight_symbols(graph, conv_operands(graph, conv)[1])
        geometries = {GEOMETRY_2D[s] for s in symbols}
        assert geometries == {graph[conv].get("geometry")}, (symbols, graph[conv].get("geometry"))
        seen.update(symbols)
    assert seen == set(GEOMETRY_2D)
    # a's two convs are one (valid, resized), b's two are one: 7 convs become 5
    assert len(convs) == 5


def test_check_records_conv_output_extents():
    """The analysis writes each conv's output size on its node: valid in T and W, strided in H
    and W, and resized back (every size relative to the first input's, T − 1 and W − 4 `Size`s)."""
    from fractions import Fraction

    from cellgen.ir.ops import Size

    spec = """cell Extents
  param hidden = 4
  input x[hidden] window 2
  state h[hidden]
  output h', v, s                       # further outputs: maps of any size

  weights
    W_v : conv 2×5×5 -> 4 pad (valid, same, valid)
    W_s : conv 1×3×3 -> 4 stride (1, 2, 2)
    W_r : conv 2×5×5 pad valid resize nearest

  v  = W_v ⋆ x
  s  = W_s ⋆ x
  h' = W_r ⋆ x + h
"""
    cell = cellgen.compile(spec, opt_level=0)
    graph = cell.cell_graph
    x = torch.randn(1, 4, 2, 9, 10)
    _, _, outputs = cell(x, None)
    assert outputs["v"].shape == (1, 4, 1, 9, 6) and outputs["s"].shape == (1, 4, 2, 5, 5)
    extent = {graph[n]["name"]: graph[n]["facts"].extent for n in graph.ops("conv")}
    assert extent["v"] == {"T": Size(Fraction(1), Fraction(-1)), "H": Fraction(1), "W": Size(Fraction(1), Fraction(-4))}
    assert extent["s"] == {"T": Fraction(1), "H": Fraction(1, 2), "W": Fraction(1, 2)}
    resized = next(n for n in graph.ops("conv") if graph[n].get("geometry", (0, 0, None))[2] == "nearest")
    assert graph[resized]["facts"].extent == {"T": 1, "H": 1, "W": 1}


def test_tokens_reshape_is_openstl_s_reshape_without_permute():
    spec = """cell Tokens
  param hidden = 2
  input x[hidden] window 2
  state c[hidden]

  param tau = none
  output c'

  c' = attention(x, cat(c[t-tau:t-1], along=C), cat(c[t-tau:t-1], along=C), tokens=reshape)
"""
    cells = [cellgen.compile(spec, opt_level=level).to(DT) for level in (0, 2)]
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(1, 2, 2, 3, 3, generator=gen, dtype=DT) for _ in range(3)]
    c0 = torch.randn(1, 2, 2, 3, 3, generator=gen, dtype=DT)
    for cell in cells:
        state, c, history = {"c": c0}, c0, []
        for x in xs:
            history.append(c)
            joined = torch.cat(history, dim=1)
            q, k = x.reshape(1, -1, 2), joined.reshape(1, -1, 2)
            c = (torch.softmax(q @ k.transpose(1, 2), dim=-1) @ k).reshape(x.shape)
            out, state = cell(x, state)
            torch.testing.assert_close(state["c"], c, rtol=0, atol=1e-12)


def test_macs_count_the_positions_a_conv_computes_and_every_entry_of_a_joined_history():
    from cellgen.tools import stats

    graph = cellgen.compile("e3d_lstm_openstl", opt_level=0, in_channels=16, hidden=8, k=5).cell_graph
    macs = stats.conv_macs(graph, (2, 16, 16))
    by_weight = {graph[graph.operands(n)[1]]["name"]: macs[n] for n in graph.ops("conv")}
    # valid in time: one frame of 16×16 positions before the resize, kernel 2×5×5
    assert by_weight["W_h"] == 4 * 8 * 8 * 2 * 5 * 5 * 16 * 16
    assert by_weight["W_last"] == 8 * 16 * 1 * 2 * 16 * 16   # 1×1×1, "same": both frames
    (attention,) = stats.attention_counts(graph, (2, 16, 16), history=3)
    assert (attention.queries, attention.keys) == (2 * 16 * 16, 3 * 2 * 16 * 16)
    assert attention.macs == attention.queries * attention.keys * (8 + 8)
