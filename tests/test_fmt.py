"""`cellgen fmt`: the canonical layout with every comment kept, idempotent, never a file
rewritten unasked."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cellgen.errors import CellgenError
from cellgen.language.comments import scan_comments
from cellgen.language.parser import parse
from cellgen.language.syntax import same_cell
from cellgen.tools.fmt import format_text

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.cell")) + sorted((ROOT / "docs" / "examples").glob("*.cell"))


def _comment_texts(text: str) -> list[str]:
    return [c.text for c in scan_comments(text)]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_fmt_round_trips_every_shipped_spec_with_its_comments(path):
    text = path.read_text(encoding="utf-8")
    assert _comment_texts(text), f"{path.name} has no comment to keep"
    formatted = format_text(text, path.name)
    assert same_cell(parse(text), parse(formatted))
    assert _comment_texts(formatted) == _comment_texts(text)  # all of them, in their order
    assert format_text(formatted, path.name) == formatted      # idempotent


TRICKY = '''\
# preamble, then a blank line

cell Tricky "Someone # not a comment, Venue 2020"   # on the header
  param in_channels  # trailing a param
  input x[in_channels]
  state h[8], c[8]

  # above the weights
  weights   # on the weights line
    W_*    : conv 3×3
    b_*    : bias   # trailing a weight

  i = σ(W_xi ⋆ x +     # first part
        W_hi ⋆ h       # second part
        # a line of its own inside the wrap
        + b_i)
  f = σ(W_xf ⋆ x + b_f)

  # after a blank line: a new paragraph
  c' = f ⊙ c + i
  h' = tanh(c')   # the output
# the end of the file
'''


def test_comments_in_awkward_places_are_all_kept_and_formatting_is_stable():
    formatted = format_text(TRICKY)
    assert sorted(_comment_texts(formatted)) == sorted(_comment_texts(TRICKY))
    assert "# not a comment" in formatted.splitlines()[2] and len(_comment_texts(formatted)) == 12
    assert format_text(formatted) == formatted
    lines = formatted.splitlines()
    assert lines[:2] == ["# preamble, then a blank line", ""]
    # the wrapped equation is one line now: its comments go above it, the last one stays at its end
    at = next(i for i, line in enumerate(lines) if line.lstrip().startswith("i "))
    assert [line.strip() for line in lines[at - 3:at]] == ["# first part", "# second part",
                                                           "# a line of its own inside the wrap"]
    # the blank line before a paragraph is kept, and `=` is aligned paragraph by paragraph
    para = lines.index("  # after a blank line: a new paragraph")
    assert lines[para - 1] == "" and lines[para + 1].startswith("  c' = ")
    assert lines[-1] == "  # the end of the file"


def test_the_files_spelling_is_kept():
    ascii_text = ("cell A\n  param in_channels\n  input x[in_channels]\n  state h[4]\n  weights\n"
                  "    W_* : conv 3 x 3   # σ in a comment does not make the code Unicode\n"
                  "  h' = sigmoid(W_x * x) .* h\n")
    formatted = format_text(ascii_text)
    assert "sigmoid(W_x * x) .* h" in formatted and "conv 3 x 3" in formatted
    assert "σ(W_x ⋆ x) ⊙ h" in format_text(ascii_text, ascii=False)


def test_a_spec_that_does_not_parse_is_the_parsers_error():
    with pytest.raises(CellgenError, match="unexpected"):
        format_text("cell X\n  $\n", "bad.cell")


# --- the command ------------------------------------------------------------------------------

def _cellgen(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cellgen", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.mark.slow
def test_fmt_prints_checks_and_writes_only_when_asked(tmp_path):
    spec = tmp_path / "tricky.cell"
    spec.write_text(TRICKY, encoding="utf-8")
    os.chmod(spec, 0o640)
    before = spec.stat()

    printed = _cellgen("fmt", spec)
    assert printed.returncode == 0 and printed.stdout == format_text(TRICKY)
    check = _cellgen("fmt", "--check", spec)
    assert check.returncode == 1 and f"would reformat {spec}" in check.stderr
    diff = _cellgen("fmt", "--diff", spec)
    assert diff.returncode == 0 and diff.stdout.startswith("---") and "+  # first part" in diff.stdout
    assert spec.read_text(encoding="utf-8") == TRICKY and spec.stat().st_mtime_ns == before.st_mtime_ns

    written = _cellgen("fmt", "--write", spec)
    assert written.returncode == 0 and written.stdout == "" and "reformatted" in written.stderr
    assert spec.read_text(encoding="utf-8") == format_text(TRICKY)
    assert stat.S_IMODE(spec.stat().st_mode) == 0o640
    assert not list(tmp_path.glob(".*.tmp"))
    assert _cellgen("fmt", "--check", spec).returncode == 0

    shipped = _cellgen("fmt", "--check", *SPECS)
    assert shipped.returncode in (0, 1) and "Traceback" not in shipped.stderr

    broken = tmp_path / "broken.cell"
    broken.write_text("cell X\n  $\n", encoding="utf-8")
    other = tmp_path / "other.cell"
    other.write_text(TRICKY, encoding="utf-8")
    bad = _cellgen("fmt", "-w", broken, other)    # one bad file does not stop the others
    assert bad.returncode == 1 and "broken.cell:2:3: error" in bad.stderr and "Traceback" not in bad.stderr
    assert broken.read_text(encoding="utf-8") == "cell X\n  $\n"
    assert other.read_text(encoding="utf-8") == format_text(TRICKY)
