"""`cellgen bench SPEC`: how fast one step of a compiled cell runs, next to what it should beat.

Every variant runs in this one process, and the repetitions are interleaved: repetition r
runs every variant once, starting at variant r mod n (round-robin, order rotated), so that
drift on the machine (other jobs, thermal state, the allocator) hits every variant alike.
Times are wall clock (`time.perf_counter`) around one call; medians and interquartile ranges
are reported, never means.

Variants (for a spec with a hand-written baseline, i.e. ConvLSTM and ST-LSTM):

  O0                 `cellgen.compile(spec, opt_level=0)`: one conv per term of the equations
  O2                 `cellgen.compile(spec, opt_level=2)`, weights loaded from O0's state_dict
  O2+compile         `torch.compile(O2 cell, fullgraph=True)`; compile time reported apart
  hand-written       the step as model zoos write it: one conv per operand (x, h, …) producing
                     every gate, then chunk/split. Loaded with O0's weights by name, and checked
                     to compute the same function as O0 before anything is timed.
  floor              the convs alone that any implementation of the cell must run:
                     ConvLSTM: one conv2d of cat[x, h] (in + C → 4C, k×k, bias) on a
                       pre-concatenated input. This is the whole MAC count of the cell.
                     ST-LSTM: the cell's minimal-MAC conv set, on pre-built inputs:
                       conv(cat[x, h]) → 4C (i, f, g, o), conv(cat[x, m]) → 3C (i_m, f_m, g_m),
                       both k×k, then conv(cat[c', m']) → C k×k (o) and → C 1×1 (before tanh).
                       Stage two reads c', m' which stage one's gates produce, so no single conv
                       can do it all; one dense conv of cat[x, h, m] → 7C would add 7C²k² MACs
                       of zero blocks. The floor's MACs equal the spec's, so it bounds any
                       implementation that does not change the arithmetic.
                     The floor is timed without the cat and without any elementwise op. Its
                     backward computes the weight (and bias) gradients and the input gradient
                     only of what requires one: of h (and m), not of x, unless --input-grad.

A spec without a hand-written baseline gets O0, O2 and O2+compile only.

Modes: `forward` runs one step under `torch.no_grad()`. `forward+backward` runs one step and
`(h.sum() + Σ state'.sum()).backward()`; the parameters and the incoming state tensors require
grad (inside an unrolled sequence the state does), the input x does not (it is data), unless
`--input-grad` (a stacked layer above the first, whose x is the layer below's h). Gradients
are reset (set to None) before every call, outside the timed region.

Before timing, every variant's output (h and every state) is compared with O0's: a max abs
difference above `tolerance` (1e-4) raises `MismatchError`, because a benchmark of a wrong
baseline (or a wrong O2) is worthless. In forward+backward mode the gradients reaching the
incoming state (and x, with --input-grad) are compared too.

Targets (issue #3): O2 at most 0.9× the hand-written step; O2 + torch.compile within 1.2× of
the floor. Both are judged on the ratio of medians, per mode, and printed as measured, with the
median and IQR of the per-repetition ratios (paired within a repetition, so drift cancels); a
verdict whose per-repetition IQR straddles the limit is marked not conclusive.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence, TextIO

import torch
from torch import nn

from cellgen import files
from cellgen.errors import CellgenError

__all__ = [
    "Row", "Target", "MismatchError", "Baseline", "HandConvLSTM", "HandSTLSTM", "ConvLSTMFloor", "STLSTMFloor",
    "BASELINES", "run_benchmark", "run_step", "compare_steps", "check_same_function", "evaluate_targets",
    "interleaved_order", "summarize", "environment", "format_report", "format_markdown", "configure_parser",
    "add_parser", "register_with_cli", "run_from_args", "main",
]

MODES = ("forward", "forward+backward")
TOLERANCE = 1e-4
TARGET_HAND = 0.9   # O2 / hand-written ≤ this
TARGET_FLOOR = 1.2  # (O2 + torch.compile) / floor ≤ this
NOISY = 0.10  # an IQR above this fraction of the median is flagged as noise

O0, O2, O2_COMPILE, HAND, FLOOR = "O0", "O2", "O2+compile", "hand-written", "floor"


class MismatchError(CellgenError):
    """A variant that does not compute the same step as the O0 cell: it must not be timed."""


# ---------------------------------------------------------------------------
# hand-written baselines, as model zoos write them
# ---------------------------------------------------------------------------

def _conv(in_channels: int, out_channels: int, k: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, k, stride=1, padding=k // 2, bias=bias)


def _zeros_like_state(x: torch.Tensor, hidden: int, names: Sequence[str]) -> dict[str, torch.Tensor]:
    return {name: x.new_zeros((x.shape[0], hidden) + tuple(x.shape[2:])) for name in names}


class _HandWritten(nn.Module):
    """A baseline written as the zoos write it, loaded with a compiled cell's weights by name."""

    @classmethod
    def from_cell(cls, cell):
        sd = cell.state_dict()
        out, in_channels, k = sd["W_xi"].shape[0], sd["W_xi"].shape[1], sd["W_xi"].shape[-1]
        module = cls(in_channels, out, k)
        module.load_from_cell(sd)
        return module

    def load_from_cell(self, sd: Mapping[str, torch.Tensor]) -> None:
        raise NotImplementedError


class HandConvLSTM(_HandWritten):
    """ConvLSTM as zoos write it: one conv of x (with the bias) and one of h (without), each
    producing all four gates, chunked in the order `GATES` (i, f, g, o; g is Shi's c gate).

    `load_from_cell(state_dict)` stacks the cell's per-gate weights (`W_xi`, `W_hi`, `b_i`, …)
    by name in that order.
    """

    GATES = ("i", "f", "c", "o")
    SYMBOLS = frozenset(f"{w}{g}" for w in ("W_x", "W_h", "b_") for g in ("i", "f", "c", "o"))

    def __init__(self, in_channels: int, hidden: int, k: int):
        super().__init__()
        self.hidden = hidden
        self.conv_x = _conv(in_channels, 4 * hidden, k, bias=True)
        self.conv_h = _conv(hidden, 4 * hidden, k, bias=False)

    def load_from_cell(self, sd: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.conv_x.weight.copy_(torch.cat([sd[f"W_x{g}"] for g in self.GATES]))
            self.conv_x.bias.copy_(torch.cat([sd[f"b_{g}"] for g in self.GATES]))
            self.conv_h.weight.copy_(torch.cat([sd[f"W_h{g}"] for g in self.GATES]))

    def forward(self, x, state=None):
        if state is None:
            state = _zeros_like_state(x, self.hidden, ("h", "c"))
        h, c = state["h"], state["c"]
        gates = self.conv_x(x) + self.conv_h(h)
        i, f, g, o = torch.chunk(gates, 4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_next = f * c + i * g
        h_next = o * torch.tanh(c_next)
        return h_next, {"h": h_next, "c": c_next}


class HandSTLSTM(_HandWritten):
    """ST-LSTM as predrnn-pytorch's SpatioTemporalLSTMCell writes it (no layer norm): bias-free
    conv_x → 7C, conv_h → 4C, conv_m → 3C, conv_o over [c', m'] → C (k×k), conv_last over
    [c', m'] → C (1×1), forget bias 1.0.
    """

    X = ("W_xi", "W_xf", "W_xg", "W_xi_m", "W_xf_m", "W_xg_m", "W_xo")
    H = ("W_hi", "W_hf", "W_hg", "W_ho")
    M = ("W_mi", "W_mf", "W_mg")
    SYMBOLS = frozenset(X + H + M + ("W_o", "W_1x1"))
    FORGET_BIAS = 1.0

    def __init__(self, in_channels: int, hidden: int, k: int):
        super().__init__()
        self.hidden = hidden
        self.conv_x = _conv(in_channels, 7 * hidden, k, bias=False)
        self.conv_h = _conv(hidden, 4 * hidden, k, bias=False)
        self.conv_m = _conv(hidden, 3 * hidden, k, bias=False)
        self.conv_o = _conv(2 * hidden, hidden, k, bias=False)
        self.conv_last = _conv(2 * hidden, hidden, 1, bias=False)

    def load_from_cell(self, sd: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.conv_x.weight.copy_(torch.cat([sd[n] for n in self.X]))
            self.conv_h.weight.copy_(torch.cat([sd[n] for n in self.H]))
            self.conv_m.weight.copy_(torch.cat([sd[n] for n in self.M]))
            self.conv_o.weight.copy_(sd["W_o"])
            self.conv_last.weight.copy_(sd["W_1x1"])

    def forward(self, x, state=None):
        if state is None:
            state = _zeros_like_state(x, self.hidden, ("h", "c", "m"))
        h_t, c_t, m_t = state["h"], state["c"], state["m"]
        i_x, f_x, g_x, i_x_prime, f_x_prime, g_x_prime, o_x = torch.split(self.conv_x(x), self.hidden, dim=1)
        i_h, f_h, g_h, o_h = torch.split(self.conv_h(h_t), self.hidden, dim=1)
        i_m, f_m, g_m = torch.split(self.conv_m(m_t), self.hidden, dim=1)

        i_t = torch.sigmoid(i_x + i_h)
        f_t = torch.sigmoid(f_x + f_h + self.FORGET_BIAS)
        g_t = torch.tanh(g_x + g_h)
        c_new = f_t * c_t + i_t * g_t

        i_t_prime = torch.sigmoid(i_x_prime + i_m)
        f_t_prime = torch.sigmoid(f_x_prime + f_m + self.FORGET_BIAS)
        g_t_prime = torch.tanh(g_x_prime + g_m)
        m_new = f_t_prime * m_t + i_t_prime * g_t_prime

        mem = torch.cat((c_new, m_new), 1)
        o_t = torch.sigmoid(o_x + o_h + self.conv_o(mem))
        h_new = o_t * torch.tanh(self.conv_last(mem))
        return h_new, {"h": h_new, "c": c_new, "m": m_new}


class _ConvTrailingInputGrad(torch.autograd.Function):
    """conv2d(inp, weight, bias), stride 1, whose backward computes the input gradient only for
    the trailing channels of `inp`, handed back as the gradient of `part` (a leaf that holds
    the same values as those channels): what a conv over cat[x, h] must do when x needs no
    gradient, and not a multiply-accumulate more."""

    @staticmethod
    def forward(ctx, inp, part, weight, bias, padding):
        ctx.save_for_backward(inp, part, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return torch.conv2d(inp, weight, bias, 1, padding)

    @staticmethod
    def backward(ctx, grad):
        inp, part, weight = ctx.saved_tensors
        pad, stride, dilation, out_pad = [ctx.padding] * 2, [1, 1], [1, 1], [0, 0]
        bias_sizes = [weight.shape[0]] if ctx.has_bias else None
        _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, inp, weight, bias_sizes, stride, pad, dilation, False, out_pad, 1, [False, True, ctx.has_bias])
        grad_part, _, _ = torch.ops.aten.convolution_backward(
            grad, part, weight[:, -part.shape[1]:].contiguous(), None, stride, pad, dilation, False, out_pad, 1,
            [True, False, False])
        return None, grad_part, grad_weight, grad_bias if ctx.has_bias else None, None


def _floor_conv(conv: nn.Conv2d, inp: torch.Tensor, part: Optional[torch.Tensor]) -> torch.Tensor:
    """`conv(inp)`; with `part`, the input gradient is computed for `part`'s channels only."""
    if part is None or not torch.is_grad_enabled():
        return conv(inp)
    return _ConvTrailingInputGrad.apply(inp, part, conv.weight, conv.bias, conv.padding[0])


def _leaf(t: torch.Tensor, requires_grad: bool) -> torch.Tensor:
    return t.detach().clone().requires_grad_(requires_grad)


class ConvLSTMFloor(nn.Module):
    """The floor of a ConvLSTM step: the single fused conv, cat[x, h] (in + C) → 4C, k×k, bias.

    `prepare` builds its (pre-concatenated) input; the cat is not timed. Backward computes the
    weight and bias gradients and the input gradient of what requires one: h only (x is data),
    or all of cat[x, h] with `input_grad` (x is a lower layer's output)."""

    def __init__(self, in_channels: int, hidden: int, k: int):
        super().__init__()
        self.conv = _conv(in_channels + hidden, 4 * hidden, k, bias=True)

    @classmethod
    def from_cell(cls, cell) -> "ConvLSTMFloor":
        w = cell.state_dict()["W_xi"]
        return cls(w.shape[1], w.shape[0], w.shape[-1])

    @staticmethod
    def prepare(x, state, input_grad: bool = False) -> tuple:
        xh = torch.cat([x, state["h"]], 1)
        if input_grad:
            return _leaf(xh, True), None
        return _leaf(xh, False), _leaf(state["h"], True)

    def forward(self, xh, h=None):
        return _floor_conv(self.conv, xh, h)


class STLSTMFloor(nn.Module):
    """The floor of an ST-LSTM step: the minimal-MAC set of convs, without any elementwise op.
    conv(cat[x, h]) → 4C and conv(cat[x, m]) → 3C (k×k); conv(cat[c', m']) → C (k×k) and → C (1×1).

    Inputs are pre-built by `prepare` (the second stage reads a stand-in for [c', m'], which
    needs an input gradient). As for ConvLSTMFloor, the first stage's input gradient covers h
    and m only unless `input_grad`."""

    def __init__(self, in_channels: int, hidden: int, k: int):
        super().__init__()
        self.conv_xh = _conv(in_channels + hidden, 4 * hidden, k, bias=False)
        self.conv_xm = _conv(in_channels + hidden, 3 * hidden, k, bias=False)
        self.conv_o = _conv(2 * hidden, hidden, k, bias=False)
        self.conv_last = _conv(2 * hidden, hidden, 1, bias=False)

    @classmethod
    def from_cell(cls, cell) -> "STLSTMFloor":
        w = cell.state_dict()["W_xi"]
        return cls(w.shape[1], w.shape[0], w.shape[-1])

    @staticmethod
    def prepare(x, state, input_grad: bool = False) -> tuple:
        xh, xm = torch.cat([x, state["h"]], 1), torch.cat([x, state["m"]], 1)
        cm = _leaf(torch.cat([state["c"], state["m"]], 1), True)
        if input_grad:
            return _leaf(xh, True), None, _leaf(xm, True), None, cm
        return _leaf(xh, False), _leaf(state["h"], True), _leaf(xm, False), _leaf(state["m"], True), cm

    def forward(self, xh, h, xm, m, cm):
        return _floor_conv(self.conv_xh, xh, h), _floor_conv(self.conv_xm, xm, m), self.conv_o(cm), self.conv_last(cm)


@dataclass(frozen=True)
class Baseline:
    """The hand-written step and the floor for one cell (keyed by the spec's cell name)."""

    hand: type
    floor: type
    symbols: frozenset  # the weight symbols the cell must have for the baseline to apply
    floor_doc: str


BASELINES: dict[str, Baseline] = {
    "ConvLSTM": Baseline(HandConvLSTM, ConvLSTMFloor, HandConvLSTM.SYMBOLS,
                         "one conv2d of cat[x, h] (in+C → 4C, k×k, bias) on a pre-concatenated input; backward: "
                         "weight, bias and input gradients, the latter only for what requires grad"),
    "STLSTM": Baseline(HandSTLSTM, STLSTMFloor, HandSTLSTM.SYMBOLS,
                       "minimal-MAC conv set: cat[x,h] → 4C and cat[x,m] → 3C (k×k); cat[c',m'] → C (k×k) "
                       "and → C (1×1); inputs pre-built, no elementwise ops; backward: input gradients only for "
                       "what requires grad"),
}


def conv_macs(module: nn.Module, batch: int, spatial: Sequence[int]) -> int:
    """Multiply-accumulates of every Conv2d in `module` at stride 1, "same" padding."""
    pixels = batch
    for size in spatial:
        pixels *= size
    return sum(m.weight.numel() * pixels for m in module.modules() if isinstance(m, nn.Conv2d))


def conv_count(module: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in module.modules())


# ---------------------------------------------------------------------------
# the equality check
# ---------------------------------------------------------------------------

def _outputs(result) -> list[torch.Tensor]:
    """h and every state (in the reference's order) of `(h, state)`, and the further outputs of
    `(h, state, outputs)` (docs/outputs.md), or a floor's tensors."""
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, tuple) and len(result) in (2, 3) and all(isinstance(r, dict) for r in result[1:]):
        h, state, *others = result
        return [h, *state.values(), *(others[0].values() if others else ())]
    return list(result)


def _named_outputs(result) -> dict[str, torch.Tensor]:
    h, state, *others = result
    return {"h (output)": h, **{f"state {name}": value for name, value in state.items()},
            **{f"output {name}": value for name, value in (others[0] if others else {}).items()}}


def run_step(step: Callable, inputs: Sequence[torch.Tensor], state: Mapping[str, torch.Tensor], *,
             backward: bool = False) -> tuple:
    """One step on `inputs` and `state`: (result, {name: gradient reaching that state or input}).

    Forward-only runs under no_grad and returns no gradients. With `backward`, the state
    tensors (and the inputs that require grad) are replaced by fresh leaves that require grad,
    and (h + Σ states).sum() is back-propagated."""
    if not backward:
        with torch.no_grad():
            return step(*inputs, dict(state)), {}
    with torch.enable_grad():
        leaves = {f"state {name}": _leaf(value, True) for name, value in state.items()}
        args = [_leaf(t, True) if t.requires_grad else t for t in inputs]
        leaves.update({f"input {i}": t for i, t in enumerate(args) if t.requires_grad})
        result = step(*args, {name: leaves[f"state {name}"] for name in state})
        sum(t.sum() for t in _outputs(result)).backward()
    return result, {name: leaf.grad for name, leaf in leaves.items()}


def compare_steps(reference: tuple, candidate: tuple, *, tolerance: float = TOLERANCE,
                  what: str = "variant") -> float:
    """Raise `MismatchError` unless two `run_step` results agree: h and every state to
    `tolerance` (max abs difference), gradients to `tolerance` × max(1, their magnitude).
    Returns the largest difference (gradients' relative to that magnitude)."""
    (ref_out, ref_grads), (cand_out, cand_grads) = reference, candidate
    ref_named, cand_named = _named_outputs(ref_out), _named_outputs(cand_out)
    if set(ref_named) != set(cand_named):
        raise MismatchError(f"{what} returns {sorted(cand_named)}, the O0 cell {sorted(ref_named)}")
    worst = 0.0
    for name, expected in ref_named.items():
        worst = max(worst, _compare(cand_named[name], expected, tolerance, f"{what}: {name}"))
    for name, expected in ref_grads.items():
        scale = max(1.0, expected.abs().max().item())
        worst = max(worst, _compare(cand_grads.get(name), expected, tolerance * scale,
                                    f"{what}: gradient of the incoming {name}") / scale)
    return worst


def check_same_function(reference: Callable, candidate: Callable, inputs: Sequence[torch.Tensor],
                        state: Mapping[str, torch.Tensor], *, tolerance: float = TOLERANCE,
                        what: str = "variant", backward: bool = False) -> float:
    """Run both steps on the same inputs; raise `MismatchError` unless h and every state agree
    to `tolerance` (max abs difference), and with `backward` the gradients reaching each
    incoming state too. Returns the largest difference seen."""
    return compare_steps(run_step(reference, inputs, state, backward=backward),
                         run_step(candidate, inputs, state, backward=backward), tolerance=tolerance, what=what)


def _compare(actual: Optional[torch.Tensor], expected: torch.Tensor, tolerance: float, what: str) -> float:
    if actual is None:
        raise MismatchError(f"{what} is missing")
    if tuple(actual.shape) != tuple(expected.shape):
        raise MismatchError(f"{what} has shape {tuple(actual.shape)}, the O0 cell's is {tuple(expected.shape)}")
    diff = (actual.detach().float() - expected.detach().float()).abs().max().item()
    if not diff <= tolerance:  # also catches NaN
        raise MismatchError(f"{what} differs from the O0 cell by {diff:.3e} (max abs; tolerance {tolerance:.0e})",
                            hint="a benchmark of a step that computes something else is worthless; "
                                 "fix the baseline (gate order? forget bias? weights loaded by name?) "
                                 "or the optimizer before timing")
    return diff


# ---------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------

@dataclass
class Row:
    """One variant in one mode: its times and how they compare."""

    spec: str
    mode: str  # "forward" | "forward+backward"
    variant: str
    times_ms: list[float] = field(default_factory=list)
    median_ms: Optional[float] = None
    q1_ms: Optional[float] = None
    q3_ms: Optional[float] = None
    iqr_ms: Optional[float] = None
    vs_hand: Optional[float] = None   # median / hand-written median
    vs_floor: Optional[float] = None  # median / floor median
    convs: Optional[int] = None       # conv ops per step
    gmacs: Optional[float] = None     # conv multiply-accumulates per step (whole batch), in 10⁹
    check_diff: Optional[float] = None  # max abs difference to O0 found by the check (None: not checked)
    compile_s: Optional[float] = None   # torch.compile: the first call in this mode (compile + one step)
    error: Optional[str] = None         # why the variant has no times (e.g. torch.compile failed)


@dataclass(frozen=True)
class Target:
    name: str
    mode: str
    ratio: Optional[float]
    limit: float
    met: Optional[bool]  # None: not measured
    detail: str
    # Per-repetition ratios (the variants ran in the same repetitions): median, Q1, Q3. Drift
    # that hits both sides of a repetition cancels in them.
    paired: Optional[tuple[float, float, float]] = None

    @property
    def conclusive(self) -> Optional[bool]:
        """False when the middle half of the per-repetition ratios lies on both sides of the limit."""
        if self.met is None or self.paired is None:
            return None
        _, q1, q3 = self.paired
        return not (q1 <= self.limit < q3)

    def line(self) -> str:
        if self.met is None:
            return f"{self.name} [{self.mode}]: not measured: {self.detail}"
        verdict = "MET" if self.met else "NOT MET"
        text = f"{self.name} [{self.mode}]: {self.ratio:.2f}× ({self.detail}) → {verdict}"
        if self.paired is not None:
            median, q1, q3 = self.paired
            text += f"; per-repetition ratios: median {median:.2f}, IQR {q1:.2f}–{q3:.2f}"
            if not self.conclusive:
                text += " (straddles the limit: not conclusive)"
        return text


@dataclass
class _Variant:
    name: str
    module: Callable
    args: tuple
    leaves: list  # tensors whose .grad is reset before each call
    convs: Optional[int] = None
    macs: Optional[int] = None
    compile_s: dict = field(default_factory=dict)
    check_diff: dict = field(default_factory=dict)
    error: Optional[str] = None

    def call(self, backward: bool) -> float:
        """One step (and backward); milliseconds of wall clock."""
        for leaf in self.leaves:
            leaf.grad = None
        if backward:
            start = time.perf_counter()
            outputs = _outputs(self.module(*self.args))
            sum(t.sum() for t in outputs).backward()
            return (time.perf_counter() - start) * 1e3
        with torch.no_grad():
            start = time.perf_counter()
            self.module(*self.args)
            return (time.perf_counter() - start) * 1e3


def interleaved_order(count: int, repetition: int) -> list[int]:
    """Which variants repetition `repetition` runs, in order: all `count` of them, rotated."""
    shift = repetition % count if count else 0
    return list(range(shift, count)) + list(range(shift))


def summarize(times: Sequence[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) of some times."""
    if not times:
        raise ValueError("no times")
    if len(times) == 1:
        return times[0], times[0], times[0]
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return statistics.median(times), q1, q3


def _log(stream: Optional[TextIO], message: str) -> None:
    if stream is not None:
        print(message, file=stream, flush=True)


def spec_params(spec_ast, *, in_channels: int, channels: int, size: int, k: Optional[int],
                extra: Mapping[str, int] = ()) -> dict[str, int]:
    """The values the command line gives to the params the spec declares: in_channels,
    hidden (--channels), k (--k; the spec's default when not given), height/width (--size)."""
    declared = {p.name for p in spec_ast.params}
    offered = {"in_channels": in_channels, "hidden": channels, "height": size, "width": size}
    if k is not None:
        offered["k"] = k
    params = {name: value for name, value in offered.items() if name in declared}
    params.update(dict(extra))
    return params


def run_benchmark(spec: str = "convlstm", *, batch: int = 8, channels: int = 64, in_channels: int = 64,
                  size: int = 64, k: Optional[int] = None, frames: int = 2, repeats: int = 10, warmup: int = 2,
                  compile: bool = True, modes: Iterable[str] = MODES, params: Mapping[str, int] = (),
                  tolerance: float = TOLERANCE, seed: int = 0, input_grad: bool = False,
                  baselines: Optional[Mapping[str, Baseline]] = None, report=None,
                  progress: Optional[TextIO] = None) -> list[Row]:
    """Time one step of `spec` at every variant (see the module doc) and return one Row per
    variant and mode. `report` (a `cellgen.passes.Report`) receives what O2's passes did.
    `input_grad`: the inputs require grad too, as in a stacked layer above the first.
    Raises `MismatchError` if a variant does not compute O0's step."""
    import cellgen  # lazily: cellgen.tools is imported by the cli

    modes = tuple(modes)
    for mode in modes:
        if mode not in MODES:
            raise CellgenError(f"unknown mode `{mode}`", hint=f"modes: {', '.join(MODES)}")
    if repeats < 1 or warmup < 0:
        raise CellgenError(f"need at least one repetition and no negative warm-up, not {repeats} and {warmup}")
    baselines = BASELINES if baselines is None else baselines
    loaded = cellgen.load_spec(spec)
    bound = spec_params(loaded.resolved, in_channels=in_channels, channels=channels, size=size, k=k, extra=params)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cell0 = cellgen.compile(spec, opt_level=0, **bound)
        cell2 = cellgen.compile(spec, opt_level=2, report=report, **bound)
        cell2.load_state_dict(cell0.state_dict())
        graph = cell0.cell_graph
        spatial = (size, size) if graph.spatial_dims == 2 else (frames, size, size)
        generator = torch.Generator().manual_seed(seed)
        inputs = tuple(torch.randn((batch, graph[node]["channels"]) + spatial, generator=generator)
                       .requires_grad_(input_grad) for node in graph.inputs.values())
        state = {name: torch.randn((batch, info.channels) + spatial, generator=generator).requires_grad_(True)
                 for name, info in graph.states.items()}
        leaves_in = list(state.values()) + [t for t in inputs if t.requires_grad]

        def cell_variant(name, module, cell_graph) -> _Variant:
            return _Variant(name, module, (*inputs, state), list(module.parameters()) + leaves_in,
                            *_graph_counts(cell_graph, spatial, batch))

        variants = [cell_variant(O0, cell0, cell0.cell_graph), cell_variant(O2, cell2, cell2.cell_graph)]
        if compile:
            cell2c = cellgen.compile(spec, opt_level=2, **bound)
            cell2c.load_state_dict(cell0.state_dict())
            compiled = torch.compile(cell2c, fullgraph=True)
            variants.append(_Variant(O2_COMPILE, compiled, (*inputs, state), list(cell2c.parameters()) + leaves_in,
                                     *_graph_counts(cell2c.cell_graph, spatial, batch)))
        baseline = baselines.get(graph.name)
        skipped = None
        if baseline is not None and set(graph.weights) != set(baseline.symbols):
            skipped = (f"cell {graph.name} has weights {sorted(graph.weights)}, the hand-written baseline "
                       f"needs {sorted(baseline.symbols)}")
            baseline = None
        if baseline is not None:
            hand = baseline.hand.from_cell(cell0)
            floor = baseline.floor.from_cell(cell0)
            floor_args = floor.prepare(inputs[0], state, input_grad=input_grad)
            variants.append(_Variant(HAND, hand, (*inputs, state), list(hand.parameters()) + leaves_in,
                                     conv_count(hand), conv_macs(hand, batch, spatial)))
            variants.append(_Variant(FLOOR, floor, floor_args,
                                     list(floor.parameters()) + [t for t in floor_args if t is not None],
                                     conv_count(floor), conv_macs(floor, batch, spatial)))
    if skipped:
        _log(progress, f"no hand-written baseline: {skipped}")

    # The check, before anything is timed: every variant against O0 on the benchmark's own
    # inputs, in every mode. torch.compile's first call in each mode is its compile.
    for mode in modes:
        backward = mode == "forward+backward"
        expected = run_step(cell0, inputs, state, backward=backward)
        for variant in variants:
            if variant.name in (O0, FLOOR) or variant.error:
                continue
            compiling = variant.name == O2_COMPILE
            _log(progress, f"checking {variant.name} against O0 ({mode})"
                 + (": compiling with torch.compile first, this takes a while" if compiling else ""))
            start = time.perf_counter()
            try:
                got = run_step(variant.module, inputs, state, backward=backward)
            except Exception as error:  # torch.compile can fail (no C++ compiler, a graph break, …)
                if not compiling:
                    raise
                variant.error = f"torch.compile failed: {type(error).__name__}: {_first_line(error)}"
                _log(progress, variant.error)
                continue
            if compiling:
                variant.compile_s[mode] = time.perf_counter() - start
            variant.check_diff[mode] = compare_steps(expected, got, tolerance=tolerance,
                                                     what=f"{variant.name} ({mode})")

    rows = []
    for mode in modes:
        backward = mode == "forward+backward"
        active = [v for v in variants if not v.error]
        times: dict[str, list[float]] = {v.name: [] for v in active}
        _log(progress, f"{mode}: {warmup} warm-up + {repeats} timed repetitions of {len(active)} variants")
        for repetition in range(warmup + repeats):
            for index in interleaved_order(len(active), repetition):
                variant = active[index]
                elapsed = variant.call(backward)
                if repetition >= warmup:
                    times[variant.name].append(elapsed)
        medians = {name: summarize(t)[0] for name, t in times.items()}
        for variant in variants:
            row = Row(str(spec), mode, variant.name,
                      convs=variant.convs, gmacs=None if variant.macs is None else variant.macs / 1e9,
                      check_diff=variant.check_diff.get(mode), compile_s=variant.compile_s.get(mode),
                      error=variant.error)
            if variant.name in times:
                row.times_ms = times[variant.name]
                row.median_ms, row.q1_ms, row.q3_ms = summarize(row.times_ms)
                row.iqr_ms = row.q3_ms - row.q1_ms
                if HAND in medians:
                    row.vs_hand = row.median_ms / medians[HAND]
                if FLOOR in medians:
                    row.vs_floor = row.median_ms / medians[FLOOR]
            rows.append(row)
    return rows


def _graph_counts(graph, spatial: Sequence[int], batch: int) -> tuple[Optional[int], Optional[int]]:
    """(convs per step, conv MACs per step for the whole batch) of a compiled cell's graph,
    counted by cellgen.tools.stats like `cellgen compile --emit summary` counts them."""
    try:
        from cellgen.tools import stats
    except ImportError:  # counting is informative only; never stop a benchmark for it
        return None, None
    return stats.conv_count(graph), stats.macs_per_step(graph, spatial) * batch


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else "")[:200]


def evaluate_targets(rows: Sequence[Row], *, hand_limit: float = TARGET_HAND,
                     floor_limit: float = TARGET_FLOOR) -> list[Target]:
    """The two targets of issue #3, per mode, judged on ratios of medians."""
    targets = []
    for mode in [m for m in MODES if any(r.mode == m for r in rows)]:
        got = {r.variant: r for r in rows if r.mode == mode}
        targets.append(_target(f"O2 ≤ {hand_limit}× hand-written", mode, got.get(O2), got.get(HAND), hand_limit))
        targets.append(_target(f"O2+compile ≤ {floor_limit}× floor", mode, got.get(O2_COMPILE), got.get(FLOOR),
                               floor_limit))
    return targets


def _target(name: str, mode: str, row: Optional[Row], against: Optional[Row], limit: float) -> Target:
    if against is None or against.median_ms is None:
        what = "hand-written baseline" if "hand" in name else "floor"
        return Target(name, mode, None, limit, None, f"this spec has no {what}")
    if row is None:
        return Target(name, mode, None, limit, None, "torch.compile was skipped (--no-compile)")
    if row.median_ms is None:
        return Target(name, mode, None, limit, None, row.error or "no times")
    ratio = row.median_ms / against.median_ms
    detail = f"{row.variant} {_ms(row.median_ms)} ms / {against.variant} {_ms(against.median_ms)} ms, limit {limit}×"
    paired = None
    if len(row.times_ms) == len(against.times_ms) > 1:
        paired = summarize([a / b for a, b in zip(row.times_ms, against.times_ms)])
    return Target(name, mode, ratio, limit, ratio <= limit, detail, paired)


# ---------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def source_revision() -> Optional[str]:
    """`git describe --always --dirty` of the checkout cellgen runs from, if it is one."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True,
                              timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def environment() -> dict:
    import cellgen

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cellgen": cellgen.__version__,
        "revision": source_revision(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "load_average": None if load is None else [round(v, 2) for v in load],
        "platform": platform.platform(),
    }


def _fmt(value: Optional[float], spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _ms(value: float) -> str:
    """Milliseconds to three significant digits, never in exponent form (1012, 60.6, 0.0645)."""
    if value <= 0 or not math.isfinite(value):
        return f"{value:.1f}"
    return f"{value:.{max(1, 2 - math.floor(math.log10(value)))}f}"


def _ratio(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def _table(rows: Sequence[Row], markdown: bool = False) -> list[str]:
    header = ["variant", "convs", "GMAC", "median ms", "IQR ms", "× hand", "× floor", "check Δ vs O0"]
    body = []
    for r in rows:
        if r.median_ms is None:
            body.append([r.variant, _fmt(r.convs, "d"), _fmt(r.gmacs, ".3g"), r.error or "—", "", "", "", ""])
            continue
        check = "reference" if r.variant == O0 else "not checked" if r.check_diff is None else f"{r.check_diff:.1e}"
        if r.variant == FLOOR:
            check = "n/a"
        body.append([r.variant, _fmt(r.convs, "d"), _fmt(r.gmacs, ".3g"), _ms(r.median_ms),
                     _ms(r.iqr_ms), _ratio(r.vs_hand), _ratio(r.vs_floor), check])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return lines + ["| " + " | ".join(cells) + " |" for cells in body]
    from cellgen.table import numbers_right

    return numbers_right([header] + body)


def _header(config: Mapping, env: Mapping) -> list[str]:
    spatial = "×".join(str(s) for s in config["spatial"])
    load = env.get("load_average")
    return [
        f"cellgen bench {config['spec']}: cell {config['cell']}, B={config['batch']}, in={config['in_channels']}, "
        f"hidden={config['channels']}, {spatial}, k={config['k']}",
        f"environment: torch {env['torch']}, Python {env['python']}, cellgen {env['cellgen']}"
        + (f" ({env['revision']})" if env.get("revision") else "") + ", "
        f"{env['threads']} threads (interop {env['interop_threads']}), CPU {env['cpu']} "
        f"({env['logical_cpus']} logical), mkldnn {'on' if env['mkldnn'] else 'off'}"
        + (f", load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start" if load else ""),
        f"O2 passes: {config['passes']}",
        f"floor: {config['floor']}",
        f"timing: {config['warmup']} warm-up + {config['repeats']} timed repetitions per mode, interleaved "
        f"round-robin (order rotated each repetition); median and IQR of wall clock per step",
    ]


def format_report(rows: Sequence[Row], config: Mapping, env: Mapping, targets: Sequence[Target]) -> str:
    lines = _header(config, env)
    for mode in MODES:
        mode_rows = [r for r in rows if r.mode == mode]
        if not mode_rows:
            continue
        how = "one step under torch.no_grad()" if mode == "forward" else \
            ("one step + (h + Σ states).sum().backward(); gradients for the parameters, the incoming state"
             + (" and x" if config.get("input_grad") else " (not x)") + "; reset between calls")
        lines += ["", f"{mode} ({how})"]
        lines += _table(mode_rows)
    compile_times = [(r.mode, r.compile_s) for r in rows if r.compile_s is not None]
    if compile_times:
        lines += ["", "torch.compile(fullgraph=True), first call (compile + one step, not in the table): "
                  + ", ".join(f"{mode} {seconds:.1f} s" for mode, seconds in compile_times)
                  + " (inductor's on-disk cache makes repeated runs compile faster)"]
    lines += ["", "targets (issue #3), ratios of medians:"] + [f"  {t.line()}" for t in targets]
    noise = _noise_line(rows)
    if noise:
        lines.append(noise)
    load = config.get("load_after")
    if load:
        lines.append(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return "\n".join(lines)


def _noise_line(rows: Sequence[Row]) -> Optional[str]:
    noisy = [f"{r.variant} [{r.mode}] {100 * r.iqr_ms / r.median_ms:.0f}%" for r in rows
             if r.median_ms and r.iqr_ms is not None and r.iqr_ms > NOISY * r.median_ms]
    if not noisy:
        return None
    return (f"noise: IQR above {100 * NOISY:.0f}% of the median for {', '.join(noisy)}; the machine was busy or "
            "drifting, so read the ratios with care (rerun on an idle machine for a verdict)")


def format_markdown(rows: Sequence[Row], config: Mapping, env: Mapping, targets: Sequence[Target]) -> str:
    """The same report as a Markdown section, for the docs."""
    lines = [f"### `cellgen bench {config['spec']}`", "", "```"] + _header(config, env) + ["```"]
    for mode in MODES:
        mode_rows = [r for r in rows if r.mode == mode]
        if mode_rows:
            lines += ["", f"**{mode}**", ""] + _table(mode_rows, markdown=True)
    compile_times = [(r.mode, r.compile_s) for r in rows if r.compile_s is not None]
    if compile_times:
        lines += ["", "torch.compile first call (compile + one step): "
                  + ", ".join(f"{mode} {seconds:.1f} s" for mode, seconds in compile_times)]
    lines += ["", "Targets (ratios of medians):", ""] + [f"- {t.line()}" for t in targets]
    noise = _noise_line(rows)
    load = config.get("load_after")
    if noise or load:
        lines.append("")
    if noise:
        lines.append(noise[0].upper() + noise[1:] + ".")
    if load:
        lines.append(f"Load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------

def _whole_number_at_least(minimum: int):
    """An argparse type: a whole number no smaller than `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value
    return parse


_positive = _whole_number_at_least(1)
_nonnegative = _whole_number_at_least(0)


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the bench arguments to `parser` (the standalone one, or a `cellgen bench` subparser)."""
    parser.add_argument("spec", metavar="SPEC", nargs="?", default="convlstm",
                        help="a shipped spec's name or a .cell file (default: convlstm)")
    parser.add_argument("--batch", type=_positive, default=8, help="batch size B (default 8)")
    parser.add_argument("--channels", type=_positive, default=64, help="hidden channels C (default 64)")
    parser.add_argument("--in-channels", type=_positive, default=64, help="input channels (default 64)")
    parser.add_argument("--size", type=_positive, default=64, help="height = width of the frames (default 64)")
    parser.add_argument("--frames", type=_positive, default=2, help="time window T of a 3D cell (default 2)")
    parser.add_argument("--k", type=_positive, default=None, help="kernel size (default: the spec's, 5 for the "
                        "shipped cells)")
    from cellgen.cli import add_param_argument

    add_param_argument(parser, help="set any other spec param (repeatable)")
    parser.add_argument("--repeats", type=_positive, default=10, help="timed repetitions per mode (default 10)")
    parser.add_argument("--warmup", type=_nonnegative, default=2, help="untimed repetitions first (default 2)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip the O2 + torch.compile variant")
    parser.add_argument("--backward", dest="backward", action="store_true", default=True,
                        help="time forward and forward+backward (default)")
    parser.add_argument("--forward-only", dest="backward", action="store_false", help="time the forward step only")
    parser.add_argument("--input-grad", action="store_true",
                        help="the input x requires grad too (a stacked layer above the first); by default it is "
                             "data and only the incoming state needs a gradient")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"max abs difference to O0 a variant may have (default {TOLERANCE:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs (default 0)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write environment, config and rows as JSON")
    parser.add_argument("--markdown", metavar="FILE", type=Path, help="also write the report as Markdown (for docs)")
    parser.add_argument("--force", action="store_true", help="let --json/--markdown replace existing files")
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `bench` on an argparse subparsers object; the parsed namespace carries
    `handler=run_from_args` (call it with the namespace, it returns the exit code)."""
    parser = subparsers.add_parser("bench", help=HELP,
                                   description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    configure_parser(parser)
    parser.set_defaults(handler=run_from_args)
    return parser


def run_from_args(args: argparse.Namespace, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    from cellgen.cli import parse_params
    from cellgen.passes import Report

    report = Report()
    modes = MODES if args.backward else ("forward",)
    try:  # the output files are checked first: a wrong target must not cost a whole benchmark
        outputs = _output_targets(args)
    except CellgenError as error:
        print(error.render(), file=err)
        return 1
    env = environment()
    try:
        rows = run_benchmark(args.spec, batch=args.batch, channels=args.channels, in_channels=args.in_channels,
                             size=args.size, k=args.k, frames=args.frames, repeats=args.repeats, warmup=args.warmup,
                             compile=args.compile, modes=modes, params=parse_params(args.params),
                             tolerance=args.tolerance, seed=args.seed, input_grad=args.input_grad, report=report, progress=err)
    except MismatchError as error:
        print(error.render(), file=err)
        print("nothing was timed: the variants above do not compute the same step", file=err)
        return 2
    except CellgenError as error:
        print(error.render(), file=err)
        return 1
    config = _config(args, rows, report)
    targets = evaluate_targets(rows)
    print(format_report(rows, config, env, targets), file=out)
    texts = {}
    if args.json:
        payload = {"environment": env, "config": config, "rows": [asdict(r) for r in rows],
                   "targets": [asdict(t) for t in targets]}
        texts["json"] = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    if args.markdown:
        texts["markdown"] = format_markdown(rows, config, env, targets)
    try:
        for kind, text in texts.items():
            files.write_bytes_atomically(outputs[kind], text.encode("utf-8"))
    except CellgenError as error:
        print(error.render(), file=err)
        return 1
    return 0


def _output_targets(args: argparse.Namespace) -> dict[str, Path]:
    """--json and --markdown checked as any written file is (cellgen/targets.py): no device or
    directory, an existing file only with --force, a symlink to a file written through."""
    from cellgen.targets import check_target

    chosen = {kind: path for kind, path in (("json", args.json), ("markdown", args.markdown)) if path is not None}
    if len(chosen) == 2 and os.path.abspath(chosen["json"]) == os.path.abspath(chosen["markdown"]):
        raise CellgenError(f"--json and --markdown both name {chosen['json']}")
    return {kind: check_target(path, getattr(args, "force", False)) for kind, path in chosen.items()}


def _config(args: argparse.Namespace, rows: Sequence[Row], report) -> dict:
    import cellgen
    from cellgen.cli import parse_params

    loaded = cellgen.load_spec(args.spec)
    bound = spec_params(loaded.resolved, in_channels=args.in_channels, channels=args.channels, size=args.size, k=args.k,
                        extra=parse_params(args.params))
    graph = cellgen.lower_spec(args.spec, **bound)
    k = graph.params.get("k")
    baseline = BASELINES.get(graph.name)
    has_floor = any(r.variant == FLOOR for r in rows)
    try:
        load_after = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load_after = None
    return {
        "spec": str(args.spec), "cell": graph.name, "origin": loaded.origin, "batch": args.batch,
        "in_channels": args.in_channels, "channels": args.channels,
        "spatial": [args.size] * 2 if graph.spatial_dims == 2 else [args.frames, args.size, args.size],
        "k": k, "params": graph.params, "repeats": args.repeats, "warmup": args.warmup, "compile": args.compile,
        "modes": list(MODES if args.backward else ("forward",)), "tolerance": args.tolerance, "seed": args.seed,
        "input_grad": args.input_grad,
        "passes": "; ".join(f"{name} ({'; '.join(notes) or 'nothing to do'})" for name, notes in report.lines)
                  or "none ran (O2 = O0)",
        "floor": baseline.floor_doc if (baseline and has_floor) else "none (no hand-written baseline for this cell)",
        "load_after": load_after,
    }


HELP = "time one step: O0, O2, O2 + torch.compile, the hand-written step, the floor"


def register_with_cli():
    """Add `cellgen bench` to cellgen.cli's subcommand registry (`register(name, help,
    configure, run)`); call once, e.g. when cellgen.cli imports its extensions."""
    from cellgen.cli import register

    return register("bench", HELP, configure_parser, run_from_args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = configure_parser(argparse.ArgumentParser(
        prog="cellgen bench", description=__doc__.split("\n\n")[0],
        epilog="See cellgen/tools/bench.py for what each variant is.",
        formatter_class=argparse.RawDescriptionHelpFormatter))
    from cellgen.cli import run_reporting_warnings

    return run_reporting_warnings(run_from_args, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
