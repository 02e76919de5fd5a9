"""Optimisation passes: each a function CellGraph → (CellGraph, report lines) in its own module.

`optimize` runs the passes an opt level selects, in order; `enable`/`disable` switch single
passes for experiments (`opt_level=0, enable=["sum-fusion"]` runs that pass alone). Each
pass returns the rewritten graph and what it did, for `cellgen compile --explain`; called
alone it works on a copy, and `optimize` copies its input once and lets every pass rewrite
that copy in place (`in_place=True`).

    -O0  nothing: one torch op per operation of the spec
    -O1  per-gate rewrites: the graph keeps one conv per gate sum, as the equations read
         (cse, concat-split, sum-fusion, bias-folding, simplify, dce)
    -O2  everything: also fuse across gates (same-operand-fusion), and group or embed the
         kernels of multi-kernel convs (kernel-grouping | kernel-embedding, chosen by
         the cost model in cost.py)
    off  activation-grouping (level 3: runs only when enabled by name). Measured on CPU
         eager it is 0–9 % SLOWER (one σ over 3C channels leaves i, f, o as strided views,
         and the elementwise tail runs slower on them than three σ outputs save).

Parameters stay per spec symbol at every level: fused weights and biases are built inside
the step (`weight_cat`, `pad_kernel`, …), so state_dict() is the same at every level and a
checkpoint saved at one level loads at any other. Measured against the same step with the
fused weight and bias cached as parameters (ConvLSTM, 1 CPU thread, median of 7 rounds):
building them costs 9–14 % of a forward step (0.8 ms at batch 1, 64 channels, 16×16, k 5;
6 ms at batch 4, 32×32) and nothing measurable in forward + backward beyond batch 1 (within
±1 %; +22 % at batch 1). A cached fused parameter would need load/save mapping hooks and go
stale under in-place updates of the per-symbol ones (optimizers, load_state_dict).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from cellgen.errors import CellgenError, did_you_mean
from cellgen.ir.analysis import analyze
from cellgen.ir.graph import CellGraph
from cellgen.passes.activation_grouping import activation_grouping
from cellgen.passes.bias_folding import bias_folding
from cellgen.passes.concat_split import concat_split
from cellgen.passes.cse import cse
from cellgen.passes.dce import dce
from cellgen.passes.kernel_embedding import choose_kernel_embedding, kernel_embedding
from cellgen.passes.kernel_grouping import kernel_grouping
from cellgen.passes.rules import summary
from cellgen.passes.runtime_forms import runtime_forms
from cellgen.passes.same_operand import same_operand_fusion
from cellgen.passes.simplify import simplify
from cellgen.passes.sum_fusion import sum_fusion

Pass = Callable[..., tuple[CellGraph, list[str]]]  # (graph, *, in_place=False) → (graph, notes)
Chooser = Callable[[CellGraph, Callable[[CellGraph], CellGraph]], tuple[CellGraph, list[str]]]


@dataclass(frozen=True)
class PassInfo:
    name: str
    level: int  # the lowest opt level that runs it (3: none; only when enabled by name)
    run: Pass
    doc: str
    # Passes that are alternatives to this one: enabling one of them by name turns this one off.
    alternatives: tuple[str, ...] = ()
    # When the level (not the user) selects the pass and it has alternatives: the cost model's
    # choice, given a function that finishes the pipeline on a graph (to compare outcomes). If
    # it returns a graph it gave that function, unchanged, the pipeline keeps what it made.
    choose: Optional[Chooser] = None
    # Rewrites to a fixed point: run again on the graph it left, unchanged, it does nothing, so
    # the pipeline skips it there (cse after a sum fusion that fused nothing, simplify twice).
    fixed_point: bool = True


PIPELINE: list[PassInfo] = [
    PassInfo("cse", 1, cse, "merge identical nodes"),
    PassInfo("concat-split", 1, concat_split, "a sum of concats becomes a concat of sums (multi-kernel gates)"),
    PassInfo("kernel-embedding", 2, kernel_embedding,
             "zero-pad small kernels into the largest so multi-kernel convs become one conv",
             alternatives=("kernel-grouping",), choose=choose_kernel_embedding, fixed_point=False),
    PassInfo("sum-fusion", 1, sum_fusion, "W₁⋆a + W₂⋆b → one conv over [a, b]"),
    PassInfo("cse", 1, cse, "merge identical nodes"),
    PassInfo("same-operand-fusion", 2, same_operand_fusion, "convs of one input and kernel → one conv, sliced"),
    PassInfo("bias-folding", 1, bias_folding, "biases and constants added to a conv → the conv's bias"),
    PassInfo("kernel-grouping", 2, kernel_grouping,
             "multi-kernel gates read gate-major from one conv per kernel size (interleave)",
             alternatives=("kernel-embedding",)),
    PassInfo("simplify", 1, simplify, "merge adjacent slices, drop full slices, flatten concats"),
    PassInfo("activation-grouping", 3, activation_grouping,
             "one activation over the adjacent channels of gates that apply the same one (off unless enabled)"),
    PassInfo("simplify", 1, simplify, "merge adjacent slices, drop full slices, flatten concats"),
    PassInfo("cse", 1, cse, "merge identical nodes"),
    PassInfo("dce", 1, dce, "drop what no result depends on"),
    PassInfo("runtime-forms", 1, runtime_forms,
             "a conv of a concat joins its parts itself; slices of one tensor are one split"),
]


def pass_names() -> list[str]:
    return list(dict.fromkeys(p.name for p in PIPELINE))


@dataclass
class Report:
    """What each pass did, for `cellgen compile --explain`; `summary` is the final count."""

    lines: list[tuple[str, list[str]]] = field(default_factory=list)
    summary: str = ""

    def render(self) -> str:
        if not self.lines:
            return self.summary or "no passes ran"
        body = "\n".join(f"{name}: " + ("; ".join(notes) if notes else "nothing to do") for name, notes in self.lines)
        return body + (f"\n{self.summary}" if self.summary else "")


def optimize(graph: CellGraph, level: int = 2, *, enable: Iterable[str] = (), disable: Iterable[str] = (),
             report: Optional[Report] = None) -> CellGraph:
    if level not in (0, 1, 2):
        raise CellgenError(f"opt level must be 0, 1 or 2, not {level!r}")
    names = set(pass_names())
    enable, disable = set(enable), set(disable)
    for name in sorted(enable | disable):
        if name not in names:
            raise CellgenError(f"unknown pass `{name}`",
                               hint=did_you_mean(name, names) or f"passes: {', '.join(sorted(names))}")
    both = enable & disable
    if both:
        raise CellgenError(f"pass `{sorted(both)[0]}` is both enabled and disabled")

    def runs(info: PassInfo) -> bool:
        if info.name in disable:
            return False
        if info.name in enable:
            return True
        if any(other in enable for other in info.alternatives):
            return False  # the user picked an alternative
        return info.level <= level

    selected = [info for info in PIPELINE if runs(info)]
    original, graph = graph, graph.copy()  # one copy: the passes below rewrite it in place
    lines: list[tuple[str, list[str]]] = []
    for index, info in enumerate(selected):
        forced = info.name in enable or any(other in disable for other in info.alternatives)
        if info.choose is not None and not forced:
            finished: dict[int, tuple[CellGraph, CellGraph, list]] = {}  # id(input) → input, output, notes

            def finish(g: CellGraph, rest=selected[index + 1:]) -> CellGraph:
                done, notes = _run(rest, g)
                finished[id(g)] = (g, done, notes)
                return done

            graph, notes = info.choose(graph, finish, in_place=True)
            lines.append((info.name, notes))
            seen = finished.get(id(graph))
            if seen is not None and seen[0] is graph:  # the chooser handed back a graph it finished
                graph = seen[1]
                lines.extend(seen[2])
                break
        else:
            graph, notes = _run_pass(info, graph)
            lines.append((info.name, notes))
    if report is not None:
        report.lines.extend(lines)
        report.summary = summary(original, graph)
    return analyze(graph, keep=True)


def _run(passes: list[PassInfo], graph: CellGraph) -> tuple[CellGraph, list[tuple[str, list[str]]]]:
    """The passes run on a copy of `graph`, and what each did."""
    graph, lines = graph.copy(), []
    for info in passes:
        graph, notes = _run_pass(info, graph)
        lines.append((info.name, notes))
    return graph, lines


def _run_pass(info: PassInfo, graph: CellGraph) -> tuple[CellGraph, list[str]]:
    """`info` run on `graph` in place, unless it left this graph at its fixed point and nothing
    has changed the graph since (`CellGraph.version`): then there is nothing to do."""
    if info.fixed_point and graph.fixed_points.get(info.name) == graph.version:
        return graph, []
    graph, notes = info.run(graph, in_place=True)
    if info.fixed_point:
        graph.fixed_points[info.name] = graph.version
    return graph, notes
