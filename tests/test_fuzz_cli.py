"""Fuzzing the edges: spec text and command lines from hypothesis, through the real parser,
compiler and CLI entry point (in process). Nothing but a CellgenError may escape the API, and
the CLI ends with exit status 0, 1 or 2 and a message, never a traceback.
"""
import contextlib
import io
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cellgen
from cellgen.cli import main
from cellgen.errors import CellgenError, CellgenWarning

# Pieces of the language (and of what breaks it), so that random text often gets past the lexer.
_PIECES = ["cell ", "C", "\n", "  ", "param ", "hidden", " = ", "4", "input ", "x", "[", "]", "state ", "h", "c",
           "'", "weights", "W_x*", " : ", "conv ", "3×3", "bias", "elementwise ", "layernorm ", "eps ", "1e999",
           "σ(", "tanh(", ")", " + ", " - ", " ⊙ ", " ⋆ ", "-", ",", "output ", "for s in (1, 2)", "end", "block ",
           "return ", "9" * 60, "\x1b[31m", "\u00a0", "\u200b", "ο", "х", "\ufeff", '"', "#", "(" * 50, "tanh(" * 120]
_BASE = "cell C\n  param hidden = 4\n  input x[2]\n  state h[hidden], c[hidden]\n  weights\n    W_x*, W_h* : conv 3×3\n" \
        "    b_* : bias\n  i = σ(W_xi ⋆ x + W_hi ⋆ h + b_i)\n  c' = i ⊙ c\n  h' = tanh(c')\n"

spec_texts = st.one_of(
    st.lists(st.sampled_from(_PIECES), max_size=60).map("".join),
    st.tuples(st.integers(0, len(_BASE)), st.lists(st.sampled_from(_PIECES), min_size=1, max_size=4))
      .map(lambda t: _BASE[:t[0]] + "".join(t[1]) + _BASE[t[0]:]),
    st.text(max_size=200),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=spec_texts)
def test_spec_text_fails_only_with_cellgen_errors(text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellgenWarning)
        try:
            cell = cellgen.compile(text if text.lstrip().startswith("cell ") or "\n" in text else "cell X\n" + text,
                                   opt_level=0)
        except CellgenError as error:
            assert "\x1b" not in error.render()


_WORDS = ["check", "compile", "list", "eval", "export", "train", "bench", "diff", "show", "convlstm", "predrnn",
          "nope", "--param", "-p", "hidden=0", "hidden=-1", "hidden=10000000000000", "k=0", "in_channels=1",
          "x=1", "hidden", "=", "-O", "3", "-1", "--emit", "module", "summary", "code", "--size", "0", "99999999",
          "-o", "/dev/null", "/nonexistent/dir/f.py", "--force", "--steps", "--out", "--batch-size", "--resume",
          "--format", "onnx", "--json", "--frame-size", "1000000", "\x1b[2J", "", "specs/", "1e999"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=st.lists(st.sampled_from(_WORDS), min_size=1, max_size=7))
def test_command_lines_end_with_a_status_never_a_traceback(argv, tmp_path_factory):
    if "train" in argv[:1] or "bench" in argv[:1]:  # the long-running commands: only their argument checks
        argv = argv + ["--steps", "0"] if argv[0] == "train" else argv + ["--json", "/dev/null"]
    out, err = io.StringIO(), io.StringIO()
    here = tmp_path_factory.mktemp("cwd")  # what a command writes (--out, -o) lands here
    with contextlib.chdir(here), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exit:  # argparse: usage errors exit 2, --help 0
            status = exit.code
    assert status in (0, 1, 2), (argv, status, err.getvalue()[-500:])
    if status == 1:
        assert "error" in err.getvalue() and "Traceback" not in err.getvalue()
