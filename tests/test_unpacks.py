"""Unpacks with `_` (a chunk computed and thrown away) and equal chunks (docs/unpacks.md):
each compiled cell against a hand-written step at -O0 and -O2; the misuses are in
tests/bad_specs (discard_*.cell, split_equal_uneven.cell)."""
import pytest
import torch
import torch.nn.functional as F

import cellgen

DISCARDS = """
cell Discards
  param in_channels
  param hidden = 4
  input x[in_channels]
  state h[hidden]
  weights
    W_x : conv 3×3 -> 4*hidden
    W_h : conv 3×3
  i_x, _, g_x, _ = W_x ⋆ x
  a, _ = W_h ⋆ h
  h' = σ(i_x + a) ⊙ tanh(g_x)
"""

EQUAL = """
cell Equal
  param hidden = 4
  input x[3]
  state h[hidden]
  weights
    W : conv 1×1 -> 3*hidden
    V : conv 3×3
  p, q, r = W ⋆ x
  h' = tanh(V ⋆ [p, q, r]) ⊙ σ(r)
"""

BLOCK = """
cell BlockDiscard
  param hidden = 4
  input x[hidden]
  state h[hidden]
  block G(a, b)
    weights
      W_a, W_b : conv 3×3 -> hidden
    u = tanh(W_a ⋆ a)
    v = σ(W_b ⋆ b)
    return u, v
  end
  _, v = G(x, h)
  h' = v ⊙ h
"""


def _conv(x, w):
    return F.conv2d(x, w, padding=w.shape[-1] // 2)


@pytest.mark.parametrize("level", [0, 2])
def test_discarded_chunks_are_as_wide_as_their_siblings(level):
    cell = cellgen.compile(DISCARDS, opt_level=level, in_channels=3).double()
    assert cell.W_x.shape == (16, 3, 3, 3) and cell.W_h.shape == (8, 4, 3, 3)  # `_` as wide as `a`
    gen = torch.Generator().manual_seed(0)
    x, h = (torch.randn(2, c, 5, 5, generator=gen, dtype=torch.float64) for c in (3, 4))
    out, _ = cell(x, {"h": h})
    gx, gh = _conv(x, cell.W_x), _conv(h, cell.W_h)
    expected = torch.sigmoid(gx[:, 0:4] + gh[:, 0:4]) * torch.tanh(gx[:, 8:12])
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("level", [0, 2])
def test_chunks_no_use_pins_down_split_the_total_equally(level):
    cell = cellgen.compile(EQUAL, opt_level=level).double()
    assert cell.V.shape == (4, 12, 3, 3)
    gen = torch.Generator().manual_seed(1)
    x, h = (torch.randn(2, c, 5, 5, generator=gen, dtype=torch.float64) for c in (3, 4))
    out, _ = cell(x, {"h": h})
    y = _conv(x, cell.W)
    expected = torch.tanh(_conv(y, cell.V)) * torch.sigmoid(y[:, 8:12])
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("level", [0, 2])
def test_a_block_result_can_be_discarded(level):
    cell = cellgen.compile(BLOCK, opt_level=level).double()
    gen = torch.Generator().manual_seed(2)
    x, h = (torch.randn(2, 4, 5, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    out, _ = cell(x, {"h": h})
    expected = torch.sigmoid(_conv(h, cell.state_dict()["G.W_b"])) * h
    assert "G.W_b" in cell.state_dict()
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


def test_a_loop_may_discard_in_its_unpacks():
    cell = cellgen.compile("""
cell LoopDiscard
  param hidden = 4
  input x[hidden]
  state h[hidden]
  weights
    W_* : conv 3×3 -> 2*hidden
  for s in (1, 2)
    a_s, _ = W_s ⋆ x
  end
  h' = tanh(a_1 + a_2) ⊙ h
""", opt_level=2).double()
    gen = torch.Generator().manual_seed(3)
    x, h = (torch.randn(2, 4, 5, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    out, _ = cell(x, {"h": h})
    expected = torch.tanh(_conv(x, cell.W_1)[:, :4] + _conv(x, cell.W_2)[:, :4]) * h
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
