"""The front end's stages in order (text → AST → resolved spec): what inheritance, `use` and the
two spellings of a next value do together, checked on real spec files in a temp directory and
against a hand-written ConvLSTM (tests/reference_cells.py), fed the same weights by name.
"""
import os
import sys
import warnings

import pytest
import torch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import cellgen  # noqa: E402
from cellgen import api  # noqa: E402
from cellgen.errors import CellgenError  # noqa: E402
from cellgen.language import syntax as ast  # noqa: E402
from cellgen.language.parser import parse  # noqa: E402
from cellgen.language.walk import children, transform, walk  # noqa: E402
from tests.reference_cells import conv  # noqa: E402

SMALL = dict(in_channels=2, hidden=3, k=3)


def _step(cell, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(2, 2, 5, 6)
    state = {name: torch.randn(2, 3, 5, 6) for name in ("h", "c")}
    with torch.no_grad():
        h, new = cell(x, state)
    return x, state, h, new


def _weights(cell, seed=1):
    torch.manual_seed(seed)
    with torch.no_grad():
        for value in cell.state_dict().values():
            value.copy_(torch.randn_like(value) * 0.3)
    return {name: value.clone() for name, value in cell.state_dict().items()}


def _convlstm(p, x, h, c, f_shift=0.0, o_shift=0.0, keep=True):
    """ConvLSTM by hand; `f_shift`/`o_shift` add a constant to a gate's pre-activation, and
    `keep=False` is the variant `c' = c + i ⊙ tanh(…)` (no forget gate)."""
    i = torch.sigmoid(conv(p["W_xi"], x) + conv(p["W_hi"], h) + p["b_i"].view(1, -1, 1, 1))
    g = torch.tanh(conv(p["W_xc"], x) + conv(p["W_hc"], h) + p["b_c"].view(1, -1, 1, 1))
    if keep:
        f = torch.sigmoid(conv(p["W_xf"], x) + conv(p["W_hf"], h) + p["b_f"].view(1, -1, 1, 1) + f_shift)
        c_next = f * c + i * g
    else:
        c_next = c + i * g
    o = torch.sigmoid(conv(p["W_xo"], x) + conv(p["W_ho"], h) + p["b_o"].view(1, -1, 1, 1) + o_shift)
    return o * torch.tanh(c_next), c_next


def _compile_quietly(spec, **params):
    """Compile with every warning an error: a variant whose equation is ignored warns "unused"."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return cellgen.compile(spec, opt_level=0, **{**SMALL, **params})


# --- c_next in a variant ---------------------------------------------------------------------

def test_an_ascii_next_value_in_a_variant_replaces_the_parents(tmp_path):
    """`c_next = …` in a spec extending convlstm is the variant's `c'`, not a new unused value."""
    ascii_spec = tmp_path / "no_forget.cell"
    ascii_spec.write_text("cell NoForget extends convlstm\n"
                          "  c_next = c + i .* tanh(W_xc * x + W_hc * h + b_c)\n", encoding="utf-8")
    unicode_spec = tmp_path / "no_forget_unicode.cell"
    unicode_spec.write_text("cell NoForget extends convlstm\n"
                            "  c' = c + i ⊙ tanh(W_xc ⋆ x + W_hc ⋆ h + b_c)\n", encoding="utf-8")
    resolved = api.load_spec(ascii_spec).resolved
    assert ast.same_cell(resolved, api.load_spec(unicode_spec).resolved)
    assert not any(isinstance(n, ast.Ref) and n.name == "c_next" for n in walk(resolved))

    cell = _compile_quietly(ascii_spec)  # no "`c_next` is computed but never used"
    assert "W_xf" not in cell.state_dict()  # the forget gate is gone with the parent's c'
    p = _weights(cell)
    x, state, h, new = _step(cell)
    h_want, c_want = _convlstm(p, x, state["h"], state["c"], keep=False)
    torch.testing.assert_close(new["c"], c_want)
    torch.testing.assert_close(h, h_want)


def test_c_next_of_a_name_that_is_no_state_stays_a_value(tmp_path):
    spec = tmp_path / "v.cell"
    spec.write_text("cell V extends convlstm\n  g_next = tanh(W_xc ⋆ x + W_hc ⋆ h + b_c)\n"
                    "  c' = f ⊙ c + i ⊙ g_next\n", encoding="utf-8")
    names = {n.text for n in walk(api.load_spec(spec).resolved) if isinstance(n, ast.Ref)}
    assert "g_next" in names and "g'" not in names


# --- extends chains ----------------------------------------------------------------------------

def _write_chain(directory):
    (directory / "v1.cell").write_text("cell V1 extends convlstm\n  o = σ(W_xo ⋆ x + W_ho ⋆ h + b_o + 1.0)\n",
                                       encoding="utf-8")
    (directory / "v2.cell").write_text("cell V2 extends v1\n  f = σ(W_xf ⋆ x + W_hf ⋆ h + b_f + 1.0)\n",
                                       encoding="utf-8")


def test_three_levels_of_extends(tmp_path):
    """V2 extends V1 extends convlstm: V2's f, V1's o and convlstm's other equations."""
    _write_chain(tmp_path)
    cell = _compile_quietly(tmp_path / "v2.cell")
    assert sorted(cell.state_dict()) == sorted([f"{w}{g}" for w in ("W_x", "W_h", "b_") for g in "ifco"])
    p = _weights(cell)
    x, state, h, new = _step(cell)
    h_want, c_want = _convlstm(p, x, state["h"], state["c"], f_shift=1.0, o_shift=1.0)
    torch.testing.assert_close(new["c"], c_want)
    torch.testing.assert_close(h, h_want)


def test_four_levels_and_a_grandparents_weights(tmp_path):
    _write_chain(tmp_path)
    (tmp_path / "v3.cell").write_text("cell V3 extends v2\n  i = σ(W_xi ⋆ x + W_hi ⋆ h)\n", encoding="utf-8")
    cell = _compile_quietly(tmp_path / "v3.cell")
    assert "b_i" not in cell.state_dict() and "W_xo" in cell.state_dict()


def test_extending_a_shipped_variant(tmp_path):
    """e3d_lstm_no_attention extends e3d_lstm; a spec extending it sees both levels."""
    same = tmp_path / "same.cell"
    same.write_text("cell Same extends e3d_lstm_no_attention\n  h' = o ⊙ tanh(W_1x1 ⋆ [c', m'])\n",
                    encoding="utf-8")
    params = dict(in_channels=2, hidden=4, k=3)
    shipped = cellgen.compile("e3d_lstm_no_attention", opt_level=0, **params)
    cell = cellgen.compile(same, opt_level=0, **params)
    assert sorted(cell.state_dict()) == sorted(shipped.state_dict())
    cell.load_state_dict(shipped.state_dict())
    torch.manual_seed(0)
    x = torch.randn(1, 2, 2, 4, 4)
    with torch.no_grad():
        h_a, s_a = cell(x, None)
        h_b, s_b = shipped(x, None)
    torch.testing.assert_close(h_a, h_b)
    for name in s_b:
        torch.testing.assert_close(s_a[name], s_b[name])


def test_a_cycle_through_three_specs_is_named(tmp_path):
    for name, parent in (("a", "b"), ("b", "c"), ("c", "a")):
        (tmp_path / f"{name}.cell").write_text(f"cell {name.upper()} extends {parent}\n  h' = h\n", encoding="utf-8")
    with pytest.raises(CellgenError, match="extends itself: A → B → C → A"):
        api.load_spec(tmp_path / "a.cell").resolved


# --- where named specs are found ---------------------------------------------------------------

_BLOCKS = """\
cell Blocks
  param in_channels
  input x[in_channels]
  state h[in_channels]
  block G(a)
    weights
      W_g : conv 3×3
    y = W_g ⋆ a
    return y
  end
  h' = G(x)
"""

_USER = """\
cell User
  use G from blocks
  param in_channels
  param hidden = 3
  input x[in_channels]
  state h[hidden]
  weights
    W_h : conv 3×3
  y = G(h)
  h' = tanh(W_h ⋆ x + y)
"""


def test_use_finds_a_spec_beside_the_one_that_names_it(tmp_path):
    (tmp_path / "blocks.cell").write_text(_BLOCKS, encoding="utf-8")
    (tmp_path / "user.cell").write_text(_USER, encoding="utf-8")
    cell = cellgen.compile(tmp_path / "user.cell", in_channels=2, opt_level=0)
    assert sorted(cell.state_dict()) == ["G.W_g", "W_h"]
    p = _weights(cell)
    torch.manual_seed(0)
    x, h = torch.randn(1, 2, 5, 5), torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        out, _ = cell(x, {"h": h})
    torch.testing.assert_close(out, torch.tanh(conv(p["W_h"], x) + conv(p["G.W_g"], h)))


def test_a_parents_use_is_read_beside_the_parent(tmp_path):
    """predrnn_ce_se (shipped) borrows CE and SE from cms_lstm beside it; a variant of it in
    another directory does not make that `use` read a cms_lstm.cell beside the variant."""
    (tmp_path / "cms_lstm.cell").write_text("cell Decoy\n  this is not a spec\n", encoding="utf-8")
    (tmp_path / "variant.cell").write_text("cell Variant extends predrnn_ce_se\n  param hidden = 4\n",
                                           encoding="utf-8")
    params = dict(in_channels=2, k=3)
    variant = cellgen.lower_spec(tmp_path / "variant.cell", **params)
    shipped = cellgen.lower_spec("predrnn_ce_se", **params, hidden=4)
    assert sorted(variant.weights) == sorted(shipped.weights) and any(w.startswith("SE.") for w in variant.weights)


def test_a_relative_path_with_a_directory(tmp_path, monkeypatch):
    """`sub/v2.cell`, as given on a command line: its parents are sub/v1.cell (not ./v1.cell),
    and a message about the parent names it as the user would find it."""
    sub = tmp_path / "sub"
    sub.mkdir()
    _write_chain(sub)
    (tmp_path / "v1.cell").write_text("cell Decoy\n  this is not a spec\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    cell = _compile_quietly(os.path.join("sub", "v2.cell"))
    p = _weights(cell)
    x, state, h, _ = _step(cell)
    torch.testing.assert_close(h, _convlstm(p, x, state["h"], state["c"], f_shift=1.0, o_shift=1.0)[0])

    (sub / "v1.cell").write_text("cell V1 extends convlstm\n  o = σ(W_xo ⋆ x + nope)\n", encoding="utf-8")
    with pytest.raises(CellgenError) as error:
        cellgen.lower_spec(os.path.join("sub", "v2.cell"), in_channels=2)
    assert error.value.render().startswith(os.path.join("sub", "v1.cell") + ":2:")


def test_a_shipped_spec_is_found_from_spec_text():
    spec = api.load_spec("cell V extends convlstm\n  o = σ(W_xo ⋆ x + W_ho ⋆ h + b_o + 1.0)\n")
    assert spec.ast.origin == "<string>" and spec.ast.path is None
    assert len(spec.resolved.definitions) == 5


# --- the resolved spec is cached ---------------------------------------------------------------

def test_a_spec_is_resolved_once_until_a_file_it_read_changes(tmp_path, monkeypatch):
    calls = []
    real = api.resolve
    monkeypatch.setattr(api, "resolve", lambda *args: calls.append(args[0].name) or real(*args))
    _write_chain(tmp_path)
    for level in (0, 1, 2):
        cellgen.compile(tmp_path / "v2.cell", opt_level=level, **SMALL)
    cellgen.compile_stack(tmp_path / "v2.cell", layers=3, **SMALL)
    assert calls == ["V2"]

    (tmp_path / "v1.cell").write_text("cell V1 extends convlstm\n  o = σ(W_xo ⋆ x + W_ho ⋆ h)\n", encoding="utf-8")
    cell = cellgen.compile(tmp_path / "v2.cell", **SMALL)
    assert calls == ["V2", "V2"] and "b_o" not in cell.state_dict()


# --- the walker ------------------------------------------------------------------------------

def test_walk_and_transform_visit_every_node_and_share_what_they_keep():
    spec = parse("cell T\n  input x[2]\n  state h[2]\n  weights\n    W : conv 3×3\n  h' = tanh(W ⋆ x + h)\n")
    refs = [n.text for n in walk(spec) if isinstance(n, ast.Ref)]
    assert refs == ["h'", "W", "x", "h"]
    equation = spec.definitions[0]
    assert list(children(equation)) == [equation.target, equation.expr]

    renamed = transform(spec, lambda n: n.copy_with(name="y") if isinstance(n, ast.Ref)
                        and n.name == "x" else None)
    assert [n.text for n in walk(renamed) if isinstance(n, ast.Ref)] == ["h'", "W", "y", "h"]
    assert renamed.statements[0] is spec.statements[0]  # untouched subtrees are shared, not copied
    assert transform(spec, lambda n: None) is spec
