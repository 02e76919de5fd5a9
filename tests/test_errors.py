"""The negative corpus: one small bad spec per mistake, and what cellgen says about each.

Every file in tests/bad_specs/ has a row in CASES: the exception (or warning) class, the
line:col the diagnostic points at, a substring of its message, and of its hint where it has
one. Further tests check that every rendered diagnostic has the compiler layout

    <path>:LINE:COL: error: message
        the offending source line
        ^^^ caret under column COL

that syntax errors name what was expected in words (never lark's `RPAR`, `_NL`, `__ANON_0`),
and that bad `param` values passed to cellgen.compile are ParamErrors.
"""
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import cellgen  # noqa: E402
from cellgen.errors import (ArityError, CellgenSyntaxError, CellgenWarning,  # noqa: E402
                            ChannelMismatchError, CyclicDefinitionError, ParamError, RedefinitionError,
                            StateNotUpdatedError, TypeMismatchError, UnknownFunctionError, UnknownSymbolError)
from cellgen.language.parser import _lark, parse  # noqa: E402
from cellgen.resources import shipped_specs  # noqa: E402

BAD = Path(__file__).resolve().parent / "bad_specs"


@dataclass
class Case:
    file: str
    error: type
    at: tuple[int, int]  # line, column of the diagnostic's span
    message: str  # a substring of the message
    hint: Optional[str] = None  # a substring of the hint
    expected: Optional[str] = None  # the whole "expected …" text of a syntax error
    notes: list[tuple[int, int]] = field(default_factory=list)  # line, column of each related note

    def __str__(self):
        return self.file


CASES = [
    # --- syntax -----------------------------------------------------------------------------
    Case("syntax_missing_equals.cell", CellgenSyntaxError, (6, 6), "unexpected name `σ`",
         hint="an equation reads `name = expression`", expected="`,`, `:` or `=`"),
    Case("syntax_unbalanced_paren.cell", CellgenSyntaxError, (6, 16), "unexpected `)`",
         hint="this `)` closes no `(`", expected="end of line"),
    Case("syntax_unclosed_paren.cell", CellgenSyntaxError, (7, 3), "unexpected name `h`",
         hint="close it with `)`", notes=[(6, 9)],
         expected="`'`, `(`, `)`, `,`, `[` or an operator (`+`, `-`, `⊙`, `⋆`, `/`)"),
    Case("syntax_bad_char.cell", CellgenSyntaxError, (6, 10), "unexpected character `·`",
         hint="write `⊙` (or `.*`) for the elementwise product",
         expected="`'`, `(`, `[`, an operator (`+`, `-`, `⊙`, `⋆`, `/`) or end of line"),
    Case("syntax_unexpected_eof.cell", CellgenSyntaxError, (6, 15), "unexpected end of file",
         hint="close it with `)`", notes=[(6, 9)], expected="`)` or `,`"),
    Case("syntax_kernel_x.cell", CellgenSyntaxError, (8, 17), "unexpected end of line",
         hint="`k×k` or `k x k`", expected="`×`"),
    Case("syntax_header.cell", CellgenSyntaxError, (2, 5), "unexpected end of line", expected="a name"),
    # --- names ------------------------------------------------------------------------------
    Case("unknown_param_in_dim.cell", UnknownSymbolError, (7, 11), "unknown param `hiden`",
         hint="did you mean `hidden`?"),
    Case("unknown_symbol.cell", UnknownSymbolError, (8, 28), "unknown symbol `hiden_state`",
         hint="did you mean `hidden_state`?"),
    Case("unknown_gate.cell", UnknownSymbolError, (8, 12), "unknown symbol `forgte`",
         hint="did you mean `forget`?"),
    Case("unknown_function.cell", UnknownFunctionError, (7, 8), "unknown function `sigmod`",
         hint="did you mean `sigmoid`?"),
    Case("wrong_arity.cell", ArityError, (7, 8), "`tanh` takes 1 argument, but 2 were given"),
    Case("gate_defined_twice.cell", RedefinitionError, (8, 3), "`g` is defined twice", notes=[(7, 3)]),
    Case("name_declared_twice.cell", RedefinitionError, (6, 9),
         "`x` is declared twice: as an input, then again as a state", notes=[(4, 9)]),
    Case("state_without_prime.cell", RedefinitionError, (7, 3),
         "`c` is declared as a state, so an equation cannot define it", hint="write `c' = …`", notes=[(5, 20)]),
    Case("glob_declared_twice.cell", RedefinitionError, (11, 13),
         "`W_xh` matches `W_x*`, which two weight declarations declare", hint="declare `W_x*` once",
         notes=[(8, 5), (9, 5)]),
    Case("cyclic.cell", CyclicDefinitionError, (7, 3), "`a` depends on itself: a → b → a",
         hint="may only depend on states at t-1", notes=[(8, 3)]),
    # --- channels, states, types --------------------------------------------------------------
    Case("channel_mismatch.cell", ChannelMismatchError, (10, 8),
         "`c ⊙ g` needs operands with equal channels, but `c` has 4 channels and `g` has 8",
         notes=[(6, 9), (4, 9)]),
    Case("state_not_updated.cell", StateNotUpdatedError, (5, 20), "state `c` is never updated",
         hint="add an equation `c' = …`"),
    Case("next_value_undefined.cell", StateNotUpdatedError, (7, 17), "`c'` is used, but no equation defines it",
         hint="add `c' = …`"),
    Case("conv_left_not_weight.cell", TypeMismatchError, (12, 8),
         "the left side of `⋆` must be a conv weight, but `f` is computed by an equation",
         hint="for an elementwise product write `f ⊙ c`", notes=[(11, 3)]),
    Case("conv_weight_without_conv.cell", TypeMismatchError, (11, 24),
         "`W_hh` is a conv weight, not a tensor: it can only be applied with `⋆`", hint="`W_hh ⋆ …`",
         notes=[(9, 5)]),
    Case("prime_on_non_state.cell", TypeMismatchError, (8, 8),
         "`g'`: only a state has a next value, and `g` is not a state", hint="drop the `'`"),
    Case("prime_target_non_state.cell", TypeMismatchError, (7, 3),
         "`g'`: only a state has a next value, and `g` is not a state", hint="declare it (`state g[…]`)"),
    Case("missing_param.cell", ParamError, (3, 3),
         "param `in_channels` of MissingParam has no default and was not given", hint="in_channels=…"),
    # --- warnings -----------------------------------------------------------------------------
    Case("unused_gate.cell", CellgenWarning, (7, 3), "`o` is computed but never used",
         hint="use it, or delete its equation"),
    Case("unused_weight.cell", CellgenWarning, (10, 5), "weight declaration `W_c*` matches no symbol in any equation",
         hint="delete it"),
]


def _compile(name):
    return cellgen.compile(str(BAD / name))


def _diagnostic(case):
    """Compile the case's spec; return the error (or, for a warning case, the warning) it gives."""
    if issubclass(case.error, Warning):
        with pytest.warns(case.error) as record:
            _compile(case.file)
        found = [w.message for w in record if isinstance(w.message, case.error)]
        assert len(found) == 1, [str(w) for w in found]
        return found[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellgenWarning)
        with pytest.raises(case.error) as info:
            _compile(case.file)
    assert type(info.value) is case.error, type(info.value)
    return info.value


def test_every_corpus_file_has_a_case():
    assert sorted(c.file for c in CASES) == sorted(p.name for p in BAD.glob("*.cell"))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_corpus_diagnostic(case):
    diagnostic = _diagnostic(case).diagnostic
    assert (diagnostic.span.line, diagnostic.span.column) == case.at, diagnostic.render()
    assert diagnostic.span.source.name == str(BAD / case.file)
    assert case.message in diagnostic.message
    if case.hint is None:
        assert diagnostic.hint is None, diagnostic.hint
    else:
        assert diagnostic.hint and case.hint in diagnostic.hint, diagnostic.hint
    if case.expected is not None:
        assert diagnostic.expected == case.expected
    assert [(n.span.line, n.span.column) for n in diagnostic.related] == case.notes, diagnostic.render()


# --- the rendered layout ------------------------------------------------------------------

def _check_layout(rendered: str, path: str, source_text: str, severity: str = "error"):
    """Head line `path:L:C: severity: …`, then the source line L, then a caret under column C."""
    lines = rendered.splitlines()
    head = re.match(rf"^{re.escape(path)}:(\d+):(\d+): {severity}: ", lines[0])
    assert head, lines[0]
    line, column = int(head.group(1)), int(head.group(2))
    source_lines = source_text.splitlines()
    offending = source_lines[line - 1] if line <= len(source_lines) else ""
    assert lines[1] == "    " + offending, (lines[1], offending)
    assert re.fullmatch(r" *\t* *\^+", lines[2]), lines[2]
    assert lines[2].index("^") - 4 + 1 == column, lines[:3]
    return line, column


@pytest.mark.parametrize("case", CASES, ids=str)
def test_rendered_corpus_diagnostic_has_compiler_layout(case):
    found = _diagnostic(case)
    path = BAD / case.file
    severity = "warning" if issubclass(case.error, Warning) else "error"
    rendered = str(found)
    assert rendered == found.diagnostic.render()
    assert _check_layout(rendered, str(path), path.read_text(encoding="utf-8"), severity) == case.at
    # Every note renders the same way, with the line it points at.
    for note in found.diagnostic.related:
        assert f"{path}:{note.span.line}:{note.span.column}: note: " in rendered


def test_channel_mismatch_points_at_both_declarations():
    with pytest.raises(ChannelMismatchError) as info:
        _compile("channel_mismatch.cell")
    rendered = info.value.render()
    assert "channel_mismatch.cell:6:9: note: 4 channels: state `c` is declared with 4" in rendered
    assert "channel_mismatch.cell:4:9: note: 8 channels: input `x` is declared with 8" in rendered
    assert "    state c[4]" in rendered and "    input x[hidden]" in rendered


# --- syntax errors speak in words ----------------------------------------------------------

def _raw_terminal_names():
    return {t.name for t in _lark().terminals} | {"$END"}


def _assert_no_raw_names(error: CellgenSyntaxError):
    words = " ".join(filter(None, [error.diagnostic.message, error.diagnostic.expected, error.diagnostic.hint]))
    assert "__ANON" not in words and "$END" not in words, words
    for name in _raw_terminal_names():
        assert not re.search(rf"(?<![\w`]){re.escape(name)}(?![\w`])", words), (name, words)


@pytest.mark.parametrize("case", [c for c in CASES if c.error is CellgenSyntaxError], ids=str)
def test_syntax_errors_name_expected_tokens_in_words(case):
    with pytest.raises(CellgenSyntaxError) as info:
        _compile(case.file)
    _assert_no_raw_names(info.value)
    assert "__ANON" not in info.value.render() and "_NL" not in info.value.render()


@pytest.mark.parametrize("text,message,hint", [
    ("cell A\n  parm k = 5\n", "unexpected name `k`", "did you mean `param`?"),
    ("cell A\n  wieghts\n    W : conv 3x3\n", "unexpected end of line", "did you mean `weights`?"),
    ("cell A\n  state h[3] zigzg\n", "unexpected name `zigzg`", "did you mean `zigzag`?"),
    ("cell A\n  weights\n    W : cnv 3x3\n", "unexpected name `cnv`", "did you mean `conv`?"),
    ("cell A\n  c' = f ⊙ c @ h\n", "unexpected character `@`", "matrix products"),
    ("cell A\n  state h[2.5]\n", "`2.5` is not a whole number", "channel counts, kernel sizes and shapes"),
    ("", "unexpected end of file", None),
    ("cell A\n  h' = tanh(c'))\n", "unexpected `)`", "this `)` closes no `(`"),
    ("cell A\n  h' = tanh(\n    c']\n", "unexpected `]`", "close it with `)`"),
])
def test_syntax_error_messages(text, message, hint):
    with pytest.raises(CellgenSyntaxError) as info:
        parse(text, "t.cell")
    assert info.value.message == message
    assert info.value.hint == hint or (hint and hint in info.value.hint)
    _assert_no_raw_names(info.value)
    _check_layout(info.value.render(), "t.cell", text)


_SHIPPED_TEXTS = [p.read_text(encoding="utf-8") for p in shipped_specs().values()]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_broken_shipped_specs_give_well_formed_syntax_errors(data):
    """Delete, insert or swap one character of a shipped spec, or cut it short: if that breaks
    the syntax, the error is a CellgenSyntaxError in words, with the compiler layout."""
    text = data.draw(st.sampled_from(_SHIPPED_TEXTS))
    at = data.draw(st.integers(0, len(text) - 1))
    edit = data.draw(st.sampled_from(["delete", "insert", "swap", "cut"]))
    if edit == "delete":
        broken = text[:at] + text[at + 1:]
    elif edit == "insert":
        broken = text[:at] + data.draw(st.sampled_from(list("()[],=:*'+-x#\"⋆⊙σ@$\n 1.e·"))) + text[at:]
    elif edit == "swap":
        broken = text[:at] + text[at + 1:at + 2] + text[at] + text[at + 2:]
    else:
        broken = text[:at]
    try:
        parse(broken, "broken.cell")
    except CellgenSyntaxError as error:
        _assert_no_raw_names(error)
        _check_layout(error.render(), "broken.cell", broken)


# --- params --------------------------------------------------------------------------------

CONV = BAD.parent.parent / "specs" / "convlstm.cell"


@pytest.mark.parametrize("params,message,hint", [
    (dict(in_channels=3, hiden=8), "ConvLSTM has no param `hiden`", "did you mean `hidden`?"),
    (dict(in_channels=3, kernel=3), "ConvLSTM has no param `kernel`",
     "the params of ConvLSTM are: in_channels, hidden, k"),
    (dict(in_channels=3, hidden=2.5), "param `hidden` must be a whole number, not 2.5", None),
    (dict(in_channels="three"), "param `in_channels` must be a whole number, not 'three'", None),
    (dict(in_channels=True), "param `in_channels` must be a whole number, not True", None),
])
def test_bad_param_values(params, message, hint):
    for spec in ("convlstm", str(CONV), CONV.read_text(encoding="utf-8")):
        with pytest.raises(ParamError) as info:
            cellgen.compile(spec, **params)
        assert info.value.message == message
        assert info.value.hint == hint


def test_missing_param_points_at_its_declaration():
    with pytest.raises(ParamError) as info:
        cellgen.compile(CONV.read_text(encoding="utf-8"), hidden=8)
    assert info.value.message == "param `in_channels` of ConvLSTM has no default and was not given"
    assert (info.value.span.line, info.value.span.column) == (4, 3)
    assert info.value.span.source.name == "<string>"
    assert "cellgen.compile(..., in_channels=…)" in info.value.hint
    _check_layout(info.value.render(), "<string>", CONV.read_text(encoding="utf-8"))


def test_good_params_compile():
    cell = cellgen.compile(str(BAD / "missing_param.cell"), in_channels=3, hidden="8")
    assert isinstance(cell, cellgen.CellModule)
