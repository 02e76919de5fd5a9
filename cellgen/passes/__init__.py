"""Optimisation passes: each a function CellGraph → CellGraph in its own module.

`optimize` runs the passes an opt level selects, in order; `enable`/`disable` switch single
passes for experiments. Each pass returns a new graph and a one-line report of what it did.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from cellgen.errors import CellgenError, did_you_mean
from cellgen.ir.graph import CellGraph

Pass = Callable[[CellGraph], tuple[CellGraph, list[str]]]


@dataclass(frozen=True)
class PassInfo:
    name: str
    level: int  # the lowest opt level that runs it
    run: Pass
    doc: str


# Filled by the optimizer: (name, level, function), in the order they run.
PIPELINE: list[PassInfo] = []


@dataclass
class Report:
    """What each pass did, for `cellgen compile --explain`."""

    lines: list[tuple[str, list[str]]] = field(default_factory=list)

    def render(self) -> str:
        if not self.lines:
            return "no passes ran"
        return "\n".join(f"{name}: " + ("; ".join(notes) if notes else "nothing to do") for name, notes in self.lines)


def optimize(graph: CellGraph, level: int = 2, *, enable: Iterable[str] = (), disable: Iterable[str] = (),
             report: Optional[Report] = None) -> CellGraph:
    if level not in (0, 1, 2):
        raise CellgenError(f"opt level must be 0, 1 or 2, not {level!r}")
    names = {p.name for p in PIPELINE}
    for name in (*enable, *disable):
        if name not in names:
            raise CellgenError(f"unknown pass `{name}`",
                               hint=did_you_mean(name, names) or f"passes: {', '.join(sorted(names)) or 'none'}")
    enable, disable = set(enable), set(disable)
    for info in PIPELINE:
        if (info.level <= level or info.name in enable) and info.name not in disable:
            graph, notes = info.run(graph)
            if report is not None:
                report.lines.append((info.name, notes))
    return graph
