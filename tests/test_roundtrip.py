"""The pretty-printer (cellgen.language.printer) against the parser: printing loses nothing.

- every shipped spec, printed with Unicode operators and with ASCII spellings, parses back
  to the same cell (`same_cell`: equal ignoring spans), and printing is idempotent;
- hand-picked expressions print in the canonical spelling, with parentheses only where
  precedence needs them;
- random expression ASTs (refs, numbers, σ/tanh/relu calls, the five binary operators,
  unary minus, `2x` scaling, concatenation) and random integer expressions over params
  (channels, kernel sizes) survive `parse(format(ast))`.
"""
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from cellgen.language import syntax as ast  # noqa: E402
from cellgen.language.parser import parse  # noqa: E402
from cellgen.language.printer import format_expr, format_spec  # noqa: E402
from cellgen.language.syntax import same_cell, without_spans  # noqa: E402
from cellgen.resources import shipped_specs  # noqa: E402

SHIPPED = sorted(shipped_specs().items())
SPELLINGS = [pytest.param(False, id="unicode"), pytest.param(True, id="ascii")]


def _shipped(path):
    return parse(path.read_text(encoding="utf-8"), str(path))


# --- shipped specs -----------------------------------------------------------------------

@pytest.mark.parametrize("ascii", SPELLINGS)
@pytest.mark.parametrize("name,path", SHIPPED, ids=[name for name, _ in SHIPPED])
def test_shipped_spec_round_trips(name, path, ascii):
    spec = _shipped(path)
    printed = format_spec(spec, ascii=ascii)
    assert same_cell(parse(printed, f"<printed {name}>"), spec), printed


@pytest.mark.parametrize("ascii", SPELLINGS)
@pytest.mark.parametrize("name,path", SHIPPED, ids=[name for name, _ in SHIPPED])
def test_printing_is_idempotent(name, path, ascii):
    printed = format_spec(_shipped(path), ascii=ascii)
    assert format_spec(parse(printed), ascii=ascii) == printed


@pytest.mark.parametrize("name,path", SHIPPED, ids=[name for name, _ in SHIPPED])
def test_ascii_print_is_ascii_and_unicode_print_is_the_papers(name, path):
    spec = _shipped(path)
    body = format_spec(spec, ascii=True).split("\n", 1)[1]  # the citation may quote a name with accents
    assert body.isascii(), [line for line in body.splitlines() if not line.isascii()]
    unicode = format_spec(spec)
    ascii_text = format_spec(spec, ascii=True)
    assert "sigmoid" not in unicode and ("σ(" in unicode) == ("sigmoid(" in ascii_text)
    assert ("⋆" in unicode) == (" * " in ascii_text)
    # Both spellings are one cell: printing either way and back gives the same Unicode text.
    assert format_spec(parse(format_spec(spec, ascii=True))) == unicode


def test_shipped_convlstm_prints_in_the_canonical_layout():
    printed = format_spec(_shipped(shipped_specs()["convlstm"]))
    assert printed == """\
cell ConvLSTM "Shi et al., Convolutional LSTM Network, NeurIPS 2015"

  param in_channels
  param hidden = 64
  param k = 5

  input x[in_channels]
  state h[hidden], c[hidden]

  weights
    W_x*, W_h* : conv k×k
    b_*        : bias

  i  = σ(W_xi ⋆ x + W_hi ⋆ h + b_i)
  f  = σ(W_xf ⋆ x + W_hf ⋆ h + b_f)
  c' = f ⊙ c + i ⊙ tanh(W_xc ⋆ x + W_hc ⋆ h + b_c)
  o  = σ(W_xo ⋆ x + W_ho ⋆ h + b_o)
  h' = o ⊙ tanh(c')
"""


def test_ascii_layout_spells_every_operator_in_ascii():
    printed = format_spec(_shipped(shipped_specs()["predrnn"]), ascii=True)
    assert "    W_1x1                 : conv 1 x 1" in printed
    assert "  c'  = f .* c + i .* g" in printed
    assert "  o   = sigmoid(W_xo * x + W_ho * h + W_o * [c', m'])" in printed
    assert "  state m[hidden] zigzag" in printed


# --- canonical spellings and parentheses ----------------------------------------------------

def _expr(text):
    """The AST of one expression, read through a one-equation spec."""
    return parse(f"cell T\n  y = {text}\n").equations[0].expr


@pytest.mark.parametrize("written,unicode,ascii", [
    ("a + b - c", "a + b - c", "a + b - c"),
    ("a - (b - c)", "a - (b - c)", "a - (b - c)"),
    ("a - (b + c)", "a - (b + c)", "a - (b + c)"),
    ("(a + b) ⊙ c", "(a + b) ⊙ c", "(a + b) .* c"),
    ("((a ⊙ b)) ⊙ c", "a ⊙ b ⊙ c", "a .* b .* c"),
    ("a ⊙ (b ⊙ c)", "a ⊙ (b ⊙ c)", "a .* (b .* c)"),
    ("a ∘ b / c", "a ⊙ b / c", "a .* b / c"),
    ("a / (b / c)", "a / (b / c)", "a / (b / c)"),
    ("W ⋆ (x + h)", "W ⋆ (x + h)", "W * (x + h)"),
    ("W * x .* g", "W ⋆ x ⊙ g", "W * x .* g"),
    ("a + b ⊙ c", "a + b ⊙ c", "a + b .* c"),
    ("−a + b", "-a + b", "-a + b"),
    ("-(a + b)", "-(a + b)", "-(a + b)"),
    ("- -a", "--a", "--a"),
    ("-(a ⊙ b)", "-(a ⊙ b)", "-(a .* b)"),
    ("a - -b", "a - -b", "a - -b"),
    ("2σ(x)", "2σ(x)", "2sigmoid(x)"),
    ("2 sigmoid(x)", "2σ(x)", "2sigmoid(x)"),
    ("2(a + b)", "2(a + b)", "2(a + b)"),
    ("2(-a)", "2(-a)", "2(-a)"),
    ("2(3x)", "2(3x)", "2(3x)"),
    ("-2x", "-2x", "-2x"),
    ("2 e5", "2 e5", "2 e5"),
    ("1.0 .5", "1.0 .5", "1.0 .5"),
    ("1 - i", "1 - i", "1 - i"),
    ("f + 1.0", "f + 1.0", "f + 1.0"),
    ("1e-3 ⊙ a", "1e-3 ⊙ a", "1e-3 .* a"),
    ("[c', m_next]", "[c', m_next]", "[c', m_next]"),  # m is no state here: m_next is a plain name
    ("tanh([a + b, (c)])", "tanh([a + b, c])", "tanh([a + b, c])"),
    ("f(a, b ⊙ c)", "f(a, b ⊙ c)", "f(a, b .* c)"),
])
def test_expression_prints_canonically(written, unicode, ascii):
    expr = _expr(written)
    assert format_expr(expr) == unicode
    assert format_expr(expr, ascii=True) == ascii
    assert same_cell(_expr(unicode), expr) and same_cell(_expr(ascii), expr)


def test_next_value_spellings_print_as_a_prime():
    spec = parse("cell T\n  state c[4]\n  c_next = tanh(c)\n  output c_next\n")
    printed = format_spec(spec, ascii=True)
    assert "  c' = tanh(c)" in printed and "  output c'" in printed


def test_sections_are_printed_in_reading_order():
    spec = parse("""cell T "cite" extends Base
  h' = tanh(W ⋆ x + b)
  weights
    b : bias
  state h[hidden]
  param hidden = 4
  input x[in_channels]
  param in_channels
  weights
    W : conv 3x3
""")
    assert format_spec(spec) == """\
cell T "cite" extends Base

  param hidden = 4
  param in_channels

  state h[hidden]
  input x[in_channels]

  weights
    b : bias
    W : conv 3×3

  h' = tanh(W ⋆ x + b)
"""


@pytest.mark.parametrize("written,printed", [
    ("(2*hidden)", "2*hidden"),
    ("hidden + 2*k", "hidden + 2*k"),
    ("(hidden + 1)*2", "(hidden + 1)*2"),
    ("hidden - (k - 1)", "hidden - (k - 1)"),
    ("hidden - k - 1", "hidden - k - 1"),
    ("k*(k*k)", "k*(k*k)"),
])
def test_integer_expressions_print_with_needed_parentheses(written, printed):
    spec = parse(f"cell T\n  state h[{written}]\n")
    text = format_spec(spec)
    assert f"  state h[{printed}]" in text
    assert same_cell(parse(text), spec)


@pytest.mark.parametrize("written", ["3×3×t", "3x3xt", "3 x 3 x t", "3×(3)×t"])
def test_kernel_starting_with_two_numbers_then_a_name_reparses(written):
    spec = parse(f"cell T\n  weights\n    W : conv {written}\n")
    assert [type(d).__name__ for d in spec.weights[0].type.kernel] == ["DimInt", "DimInt", "DimName"]
    assert "    W : conv 3×3×t" in format_spec(spec)
    for ascii in (False, True):
        assert same_cell(parse(format_spec(spec, ascii=ascii)), spec)


def test_compound_kernel_sizes_are_parenthesized():
    spec = parse("cell T\n  weights\n    W : conv 3 x (3 + k) x (k)\n")
    assert "    W : conv 3×(3 + k)×k" in format_spec(spec)
    assert "    W : conv 3 x (3 + k) x k" in format_spec(spec, ascii=True)
    for ascii in (False, True):
        assert same_cell(parse(format_spec(spec, ascii=ascii)), spec)


# --- random ASTs ---------------------------------------------------------------------------

_KEYWORDS = {"cell", "param", "input", "state", "output", "weights", "conv", "bias", "elementwise", "zigzag",
             "extends"}

_names = st.one_of(
    st.sampled_from(["a", "b", "x", "h", "c", "W_xi", "b_i", "e", "e5", "E2", "x3", "_t", "σx"]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True),
).filter(lambda n: n not in _KEYWORDS and not n.endswith("_next"))

# Every way to write a number that the grammar reads as one NUMBER token.
_number_texts = st.one_of(
    st.sampled_from(["0", "1", "2", "1.0", "0.5", ".5", "3.", "1e-3", "2E5", "10", "1.5e3", ".5e-2", "2.E1"]),
    st.from_regex(r"[0-9]{1,3}|[0-9]{1,2}\.[0-9]{0,2}|\.[0-9]{1,2}|[0-9]{1,2}(\.[0-9]{0,2})?[eE][+-]?[0-9]",
                  fullmatch=True),
)
_numbers = _number_texts.map(lambda t: ast.Number(value=float(t), text=t))
_refs = st.builds(lambda name, prime: ast.Ref(name=name, prime=prime), _names, st.booleans())
_functions = st.one_of(st.sampled_from(["σ", "tanh", "relu"]), _names.filter(lambda n: n != "sigmoid"))


def _compound(children):
    binary = st.builds(lambda op, left, right: ast.Binary(op=op, left=left, right=right),
                       st.sampled_from(["add", "sub", "hadamard", "conv", "div"]), children, children)
    return st.one_of(
        binary, binary,
        st.builds(lambda e: ast.Neg(operand=e), children),
        st.builds(lambda n, e: ast.Scale(factor=n, operand=e), _numbers, children),
        st.builds(lambda f, args: ast.Call(func=f, args=args), _functions, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda items: ast.Concat(items=items), st.lists(children, min_size=1, max_size=3)),
    )


_exprs = st.recursive(st.one_of(_refs, _numbers), _compound, max_leaves=12)


def _tiny_spec(expr):
    """A spec around one equation: enough for the parser (lowering would reject most of them)."""
    return ast.CellSpec(name="Random", statements=[
        ast.ParamDecl(name="hidden", default=4),
        ast.InputDecl(tensors=[ast.TensorDecl(name="x", channels=ast.DimInt(value=3))]),
        ast.StateDecl(tensors=[ast.TensorDecl(name="h", channels=ast.DimName(name="hidden"))]),
        ast.Equation(target=ast.Ref(name="y"), expr=expr),
        ast.Equation(target=ast.Ref(name="h", prime=True), expr=ast.Ref(name="y")),
    ])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=_exprs, ascii=st.booleans())
def test_random_expressions_round_trip(expr, ascii):
    spec = _tiny_spec(expr)
    printed = format_spec(spec, ascii=ascii)
    reparsed = parse(printed)
    assert without_spans(reparsed.equations[0].expr) == without_spans(expr), printed
    assert same_cell(reparsed, spec)
    assert format_spec(reparsed, ascii=ascii) == printed


_dims = st.recursive(
    st.one_of(st.integers(1, 99).map(lambda v: ast.DimInt(value=v)),
              st.sampled_from(["hidden", "k", "height"]).map(lambda n: ast.DimName(name=n))),
    lambda children: st.builds(lambda op, left, right: ast.DimBinary(op=op, left=left, right=right),
                               st.sampled_from(["+", "-", "*"]), children, children),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(channels=_dims, kernel=st.lists(_dims, min_size=2, max_size=3), shape=st.lists(_dims, min_size=1, max_size=3),
       ascii=st.booleans())
def test_random_integer_expressions_round_trip(channels, kernel, shape, ascii):
    spec = ast.CellSpec(name="Dims", citation="random", statements=[
        ast.StateDecl(tensors=[ast.TensorDecl(name="h", channels=channels)], zigzag=True),
        ast.WeightDecl(patterns=[ast.WeightPattern(text="W_*")], type=ast.ConvType(kernel=kernel)),
        ast.WeightDecl(patterns=[ast.WeightPattern(text="P"), ast.WeightPattern(text="Q")],
                       type=ast.ElementwiseType(shape=shape)),
    ])
    printed = format_spec(spec, ascii=ascii)
    assert same_cell(parse(printed), spec), printed
