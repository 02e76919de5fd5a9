"""A small cost model of one step, for choices between exact rewrites (kernel grouping vs
kernel embedding): estimated microseconds of a forward step at a reference problem size.

    cost = Σ_convs (ns_per_conv + MACs · ns_per_mac)
         + Σ_other activation ops (ns_per_op + elements written · ns_per_value)
         + Σ_weight-side ops ns_per_op

MACs and elements are per step at `pixels` = batch × H × W (channels come from the graph).
A slice is a view (no elements written). The constants are CPU time of one thread
(time.process_time, torch.set_num_threads(1)) on the development machine, a shared 2-core
x86 box where wall-clock times under load were useless: a tiny 3×3 conv 8 µs, any other op
2–9 µs (torch dispatch plus the generated code's Python), convs 0.022–0.06 ns per MAC
(0.025 for ≥ 32 channels, more for fewer), elementwise ops 0.15–1 ns per value written.
`measure()` re-fits them on another machine. They only need to be right within a factor of
~2: they decide between two exact graphs, and either choice can be forced by name.

Checked against measured steps (mk_convlstm_test.cell at O2, CPU µs per forward step):
    c3 = c5 = 4,  in 3,  1×16×16    grouping 565,     embedding 416      model 345 vs 359 (wrong pick)
    c3 = c5 = 4,  in 3,  8×32×32    grouping 4116,    embedding 5138     model 2043 vs 2652
    c3 = c5 = 64, in 64, 8×32×32    grouping 356138,  embedding 463571   model 415558 vs 607568
The model under-counts fixed costs of tiny steps (Python per op); at the reference size
MACs dominate and it picks what the measurement picks.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

from cellgen.ir.graph import CellGraph
from cellgen.ir.ops import OPS


def _one_pixel(node: str) -> tuple[int, tuple[int, ...]]:
    """The size the cost model counts MACs at: one map of one pixel (then times `pixels`)."""
    return 1, ()


@dataclass(frozen=True)
class CostModel:
    pixels: int = 8 * 32 * 32  # batch 8 of 32×32 maps
    ns_per_mac: float = 0.03
    ns_per_conv: float = 10_000.0
    ns_per_op: float = 5_000.0
    ns_per_value: float = 0.3

    def cost(self, g: CellGraph) -> float:
        """Estimated µs of one forward step of `g`, each op costed as its registry entry says
        (`OpDef.cost`): a conv by its MACs (`OpDef.macs` at one pixel, times `pixels`), an op
        that writes its result by the values it writes, a view or weight-side op by its call."""
        ns = 0.0
        for node in g.ops():
            data = g[node]
            definition = OPS[data["op"]]
            if definition.cost == "conv":
                ns += self.ns_per_conv + definition.macs(g, node, _one_pixel) * self.pixels * self.ns_per_mac
            elif definition.cost == "dispatch":
                ns += self.ns_per_op
            elif definition.cost == "values":
                ns += self.ns_per_op + (data.get("channels") or 1) * self.pixels * self.ns_per_value
            else:
                ns += definition.cost(self, g, node)
        return ns / 1000

    def describe(self) -> str:
        return f"at {self.pixels} px"


DEFAULT_COST = CostModel()


def measure(pixels: int = DEFAULT_COST.pixels, repeats: int = 20) -> CostModel:
    """Fit the constants on this machine (a few seconds): a large conv for ns/MAC, a tiny one
    for the fixed cost of a conv, a tiny sigmoid for an op, a large add for ns/value."""
    import torch

    def timed(fn) -> float:
        for _ in range(3):
            fn()
        best = math.inf
        for _ in range(3):
            start = time.process_time()
            for _ in range(repeats):
                fn()
            best = min(best, (time.process_time() - start) / repeats * 1e9)
        return best

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    side = max(1, int(math.sqrt(pixels / 8)))
    x, w = torch.randn(8, 64, side, side), torch.randn(128, 64, 5, 5)
    tiny_x, tiny_w = torch.randn(1, 4, 8, 8), torch.randn(4, 4, 3, 3)
    big, tiny = torch.randn(8, 64, side, side), torch.randn(1, 4, 8, 8)
    conv_ns = timed(lambda: torch.conv2d(tiny_x, tiny_w, None, 1, (1, 1)))
    mac_ns = (timed(lambda: torch.conv2d(x, w, None, 1, (2, 2))) - conv_ns) / (8 * side * side * 128 * 64 * 25)
    op_ns = timed(lambda: torch.sigmoid(tiny))
    value_ns = max(0.0, timed(lambda: big + big) - op_ns) / big.numel()
    torch.set_num_threads(threads)
    return replace(DEFAULT_COST, pixels=pixels, ns_per_mac=mac_ns, ns_per_conv=conv_ns, ns_per_op=op_ns,
                   ns_per_value=value_ns)
