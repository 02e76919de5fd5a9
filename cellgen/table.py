"""Rows of cells as lines of padded columns: every aligned table a command prints
(`cellgen list`, `--emit summary`, `diff`, `eval`, `bench`)."""
from __future__ import annotations

from typing import Collection, Sequence


def align(rows: Sequence[Sequence[str]], right: Collection[int] = ()) -> list[str]:
    """One line per row, columns two spaces apart and as wide as their widest cell; the columns
    in `right` (numbers, mostly) are right-aligned, the others left-aligned. No trailing spaces."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(width) if i in right else cell.ljust(width)
                      for i, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows]


def numbers_right(rows: Sequence[Sequence[str]]) -> list[str]:
    """`align` with the first column (a label) on the left and every other on the right."""
    return align(rows, right=range(1, len(rows[0]))) if rows else []
