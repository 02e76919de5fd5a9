"""A compiled cell in a REPL or notebook: its repr, summary() and the `show` picture."""
import copy
import pickle
import shutil

import pytest

import cellgen
from cellgen.cli import main


def test_the_repr_says_what_the_module_is():
    cell = cellgen.compile("convlstm", in_channels=1, hidden=16, k=3)
    count = sum(p.numel() for p in cell.parameters())
    assert repr(cell) == f"ConvLSTM(in_channels=1, hidden=16, k=3, O2, 12 weights, {count:,} parameters)"
    assert repr(copy.deepcopy(cell)) == repr(cell)
    assert repr(cellgen.compile("predrnn", in_channels=1, hidden=8, k=3, opt_level=0)).startswith(
        "STLSTM(in_channels=1, hidden=8, k=3, O0, ")
    stack = cellgen.compile_stack("convlstm", layers=2, in_channels=1, hidden=8, k=3)
    assert "(1): ConvLSTM(in_channels=8, hidden=8, k=3, O2, 12 weights" in repr(stack)


def test_summary_is_the_emit_summary_table(capsys):
    cell = cellgen.compile("predrnn", in_channels=1, hidden=16, k=3)
    assert main(["compile", "predrnn", "-p", "in_channels=1", "-p", "hidden=16", "-p", "k=3", "--emit", "summary"]) == 0
    table = capsys.readouterr().out
    assert str(cell.summary()) == table.rstrip("\n") or str(cell.summary()) == table
    assert repr(cell.summary()) == str(cell.summary())          # a notebook shows the table, not a quoted string
    assert "convs per step" in copy.deepcopy(cell).summary()
    assert str(pickle.loads(pickle.dumps(cell)).summary()) == str(cell.summary())
    assert "MACs at 32x32" in cell.summary(size=(32, 32))


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_repr_svg_is_the_show_picture(tmp_path):
    cell = cellgen.compile("convlstm", in_channels=1, hidden=16, k=3)
    svg = cell._repr_svg_()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "W_xi" in svg
    assert main(["show", "convlstm", "-p", "in_channels=1", "-p", "hidden=16", "-p", "k=3", "-O", "2", "--format",
                 "svg", "-o", str(tmp_path / "show.svg")]) == 0
    shown = (tmp_path / "show.svg").read_text(encoding="utf-8")
    # the same picture; only the title differs (`show` names the spec file the module does not know)
    differ = [(a, b) for a, b in zip(svg.splitlines(), shown.splitlines()) if a != b]
    assert len(svg.splitlines()) == len(shown.splitlines()) and len(differ) == 1
    assert ">ConvLSTM &#45;O2<" in differ[0][0] and ">ConvLSTM (specs/convlstm.cell) &#45;O2<" in differ[0][1]


def test_without_graphviz_a_notebook_falls_back_to_the_repr(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert cellgen.compile("convlstm", in_channels=1, hidden=4, k=3)._repr_svg_() is None
