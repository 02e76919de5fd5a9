"""Counting cells (cellgen/tools/stats.py, `cellgen compile --emit summary`): parameters per
weight and per gate, and MACs per step, checked against numbers counted by hand or printed
in the papers — never against the tool's own output.
"""
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cellgen  # noqa: E402
from cellgen.errors import CellgenError  # noqa: E402
from cellgen.resources import shipped_specs  # noqa: E402
from cellgen.tools import stats  # noqa: E402


def conv(out, inp, *kernel):
    return out * inp * math.prod(kernel)


def lower(spec, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cellgen.lower_spec(spec, **params)


def cli(*args: str) -> subprocess.CompletedProcess:
    """`cellgen …` in this process (tests/cli_runner.py; tests/test_cli.py runs the executable)."""
    from tests.cli_runner import run_in_process

    return run_in_process(*args)


def summary_rows(out: str) -> list[tuple[str, str, int]]:
    """(symbol, kind, parameters) of every weight line of a summary: `    SYMBOL  KIND  SHAPE  PARAMS …`.
    A fused weight credited to several gates has a line under each; their parameters add up."""
    rows = []
    for line in out.splitlines():
        match = re.match(r"^    (\S+)\s+(\S+)\s+(\S+)\s+(\d+)\s", line + " ")
        if match and match[2] != "attention":
            rows.append((match[1], match[2], int(match[4])))
    return rows


@pytest.mark.parametrize("spec", sorted(shipped_specs()))
def test_every_shipped_spec_is_counted(spec):
    """Every weight once, every gate's share adding up to the cell's parameters, and the MACs
    the sum of the convs' and the attentions'."""
    declared = {p.name for p in cellgen.load_spec(spec).resolved.params}
    cin = 64 if spec == "mau" else 3  # OpenSTL's MAUCell: its input S as wide as its hidden (64)
    graph = lower(spec, in_channels=cin, **{p: 16 for p in ("height", "width") if p in declared})
    summary = stats.summarize(graph, (16, 16))
    assert summary.parameters == sum(math.prod(w.shape) for w in graph.weights.values())
    assert sum(g.parameters for g in summary.gates) == summary.parameters
    assert sum(g.macs for g in summary.gates) == summary.macs
    assert summary.macs == sum(stats.conv_macs(graph, summary.size).values()) + sum(
        a.macs for a in stats.attention_counts(graph, summary.size))
    assert summary.notes == []  # 16×16 is a size every shipped spec runs at
    text = stats.format_summary(summary)
    assert f"parameters: {summary.parameters} in {len(graph.weights)} weights" in text


# --- (a) the multi-kernel paper's Table III: input-to-hidden weights, 512 inputs, C = 256 -------

TABLE_III = [  # spec, params, the paper's input-to-hidden count (4·C_k·512·k² summed over kernels)
    ("convlstm", {"k": 3}, 4 * conv(256, 512, 3, 3)),
    ("convlstm", {"k": 5}, 4 * conv(256, 512, 5, 5)),
    ("convlstm", {"k": 7}, 4 * conv(256, 512, 7, 7)),
    ("mk_convlstm", {}, 4 * (conv(128, 512, 3, 3) + conv(128, 512, 5, 5))),
]


def test_table_iii_numbers_are_the_papers():
    """The hand formula reproduces Table III's printed values (4.7M, 13.1M, 25.7M, 8,912,896)."""
    assert [n for _, _, n in TABLE_III] == [4_718_592, 13_107_200, 25_690_112, 8_912_896]


def input_to_hidden(rows) -> int:
    """Every weight whose symbol starts with W_x (all kernels of a multi-kernel one), as the table counts."""
    return sum(p for symbol, kind, p in rows if symbol.startswith("W_x") and kind == "conv")


@pytest.mark.parametrize("spec, params, expected", TABLE_III, ids=["k3", "k5", "k7", "multi-kernel"])
def test_table_iii_through_the_command_line(spec, params, expected):
    flags = [f"-p{name}={value}" for name, value in {"in_channels": 512, "hidden": 256, **params}.items()]
    result = cli("compile", spec, *flags, "-O", "0", "--emit", "summary")
    assert result.returncode == 0, result.stderr
    rows = summary_rows(result.stdout)
    assert input_to_hidden(rows) == expected
    assert sum(p for symbol, kind, p in rows if kind == "bias") == 1024  # b_i, b_f, b_c, b_o: 4 × 256
    if spec == "mk_convlstm":  # per kernel, and each symbol's total over its kernels
        assert ("W_xi.3x3", "conv", conv(128, 512, 3, 3)) in rows and ("W_xi.5x5", "conv", conv(128, 512, 5, 5)) in rows
        assert re.search(rf"^  W_xi\s+3x3\+5x5\s+{conv(128, 512, 3, 3) + conv(128, 512, 5, 5)}\s", result.stdout, re.M)


@pytest.mark.parametrize("spec, params, expected", TABLE_III, ids=["k3", "k5", "k7", "multi-kernel"])
def test_table_iii_through_the_python_api(spec, params, expected):
    summary = stats.summarize(lower(spec, in_channels=512, hidden=256, **params))
    rows = [(w.symbol, w.kind, w.parameters) for w in summary.weights]
    assert input_to_hidden(rows) == expected
    assert sum(w.parameters for w in summary.weights if w.kind == "bias") == 1024
    gates = {g.title: g for g in summary.gates}
    assert list(gates) == ["i", "f", "c'", "o"]
    assert all(g.parameters == (summary.parameters) // 4 for g in gates.values())  # four gates alike


def test_multi_kernel_with_a_stacked_1x1():
    """Table III prints "9.1 M" for the stacked 1×1: its per-gate 1×1 adds 4·256·256."""
    summary = stats.summarize(lower("mk_convlstm_1x1", in_channels=512, hidden=256))
    rows = {w.symbol: w.parameters for w in summary.weights}
    ours = sum(p for s, p in rows.items() if s.startswith(("W_x", "W_1")))
    assert ours == 8_912_896 + 4 * 256 * 256 == 9_175_040
    assert summary.multi_kernel["W_xi"] == {"kernels": ["3x3", "5x5"], "parameters": conv(128, 512, 3, 3) +
                                            conv(128, 512, 5, 5), "macs": summary.multi_kernel["W_xi"]["macs"]}
    assert [line.symbol for line in next(g for g in summary.gates if g.title == "i").lines] == \
        ["W_1i", "W_xi.3x3", "W_xi.5x5", "W_hi.3x3", "W_hi.5x5", "b_i"]


# --- (b) MACs by hand ----------------------------------------------------------------------------

def test_convlstm_macs_at_a_small_size():
    cin, c, k, h, w = 3, 8, 3, 4, 5
    graph = lower("convlstm", in_channels=cin, hidden=c, k=k)
    by_hand = 4 * (conv(c, cin, k, k) + conv(c, c, k, k)) * h * w  # 8 convs, "same" padding
    assert by_hand == 63_360
    assert stats.macs_per_step(graph, (h, w)) == by_hand
    summary = stats.summarize(graph, (h, w))
    assert (summary.conv_macs, summary.attention_macs, summary.macs) == (by_hand, 0, by_hand)
    assert [g.macs for g in summary.gates] == [by_hand // 4] * 4


def test_default_size_and_3d_sizes():
    """64×64 by default; a 3D cell counts its input window's T frames, also for `--size H W`."""
    assert stats.summarize(lower("convlstm", in_channels=1)).size == (64, 64)
    e3d = lower("e3d_lstm", in_channels=1)
    assert stats.summarize(e3d).size == (2, 64, 64)
    assert stats.summarize(e3d, (8, 8)).size == (2, 8, 8) and stats.summarize(e3d, (4, 8, 8)).size == (4, 8, 8)
    with pytest.raises(CellgenError, match="3D cell: its input size is T H W"):
        stats.summarize(e3d, (8,))
    with pytest.raises(CellgenError, match="2D cell: its input size is H W"):
        stats.summarize(lower("convlstm", in_channels=1), (0, 4))


def test_a_conv_on_a_stack_and_after_a_concatenation_along_w():
    """CMS-LSTM's SE block: Q_s, K_s, V_s run on stack(h, c) (2 maps), and W_A on the three
    scales side by side along W (H × 2W)."""
    c, h, w = 4, 8, 8
    graph = lower("cms_lstm", in_channels=1, hidden=c, height=h, width=w)
    macs = {graph[graph.operands(node)[1]]["name"]: m for node, m in stats.conv_macs(graph, (h, w)).items()}
    assert macs["SE.Q_1"] == 2 * conv(c, c, 1, 1) * h * w
    assert macs["SE.W_A"] == conv(c, 3 * c, 5, 5) * h * (2 * w)
    assert macs["SE.W_z"] == conv(c, 2 * c, 1, 1) * h * w  # after the split back into A_H, A_C


# --- (c) attention by hand --------------------------------------------------------------------------

def test_e3d_recall_attention_macs():
    """RECALL: queries r (T·H·W tokens), keys = values = the τ past memories (τ·T·H·W tokens)."""
    c, tau, t, h, w = 8, 3, 2, 4, 4
    graph = lower("e3d_lstm", in_channels=1, hidden=c, tau=tau)
    [count] = stats.attention_counts(graph, (t, h, w))
    nq, nk = t * h * w, tau * t * h * w
    assert (count.queries, count.keys, count.channels, count.value_channels) == (nq, nk, c, c)
    assert count.macs == nq * nk * c + nq * nk * c == 49_152  # q·kᵀ, then ·v
    summary = stats.summarize(graph, (h, w))
    assert summary.attention_macs == 49_152
    assert summary.macs == sum(stats.conv_macs(graph, (t, h, w)).values()) + 49_152
    recall = next(g for g in summary.gates if g.title == "R")
    assert (recall.parameters, recall.macs) == (0, 49_152)


def test_an_unbounded_history_is_counted_per_past_value():
    graph = lower("e3d_lstm", in_channels=1, hidden=8)  # tau = none
    one, five = stats.summarize(graph, (4, 4)), stats.summarize(graph, (4, 4), history=5)
    assert five.attention_macs == 5 * one.attention_macs and one.unbounded_histories == ["c"]
    assert "history of c is unbounded: attention counted over 1 past value" in stats.format_summary(one)


def test_attention_within_patches():
    """CMS-LSTM: tokens of h and c (2·H·W) attend within s×s patches: (2HW)²·2C / s²."""
    c, h, w = 4, 8, 8
    counts = stats.attention_counts(lower("cms_lstm", in_channels=1, hidden=c, height=h, width=w), (h, w))
    tokens = 2 * h * w
    assert [(a.patches, a.macs) for a in counts] == [(s, tokens * tokens * 2 * c // (s * s)) for s in (1, 2, 4)]


# --- gates ------------------------------------------------------------------------------------------

def test_a_fused_weight_is_credited_to_its_chunks_gates_by_channels():
    """E3D's official code: W_x's 7C outputs are cut into i_x, g_x, r_x, o_x, i_xm, g_xm, f_xm."""
    c, cin = 4, 2
    summary = stats.summarize(lower("e3d_lstm_official", in_channels=cin, hidden=c), (4, 4))
    gates = {g.title: g for g in summary.gates}
    w_x, w_h, w_m = conv(7 * c, cin, 2, 5, 5), conv(4 * c, c, 2, 5, 5), conv(4 * c, c, 2, 5, 5)
    # i = σ(i_x + i_h): a seventh of W_x, b_x, LN_x and a quarter of W_h, b_h, LN_h
    assert gates["i"].parameters == (w_x + 3 * 7 * c) // 7 + (w_h + 3 * 4 * c) // 4
    lines = {line.symbol: line for line in gates["i"].lines}
    assert lines["W_x"].parameters == w_x // 7 and lines["W_x"].note == "chunk i_x: 1/7 of it"
    # m_new reads tanh(m_m): the fourth chunk of W_m; m_m feeds nothing else
    assert {line.symbol: line.parameters for line in gates["m_new"].lines} == {
        "W_m": w_m // 4, "b_m": c, "LN_m.weight": c, "LN_m.bias": c}
    assert sum(g.parameters for g in summary.gates) == summary.parameters  # nothing counted twice or lost


def test_a_weight_feeding_several_gates_is_listed_as_shared():
    summary = stats.summarize(lower("cms_lstm", in_channels=1, hidden=4, height=8, width=8), (8, 8))
    gates = {g.title: g for g in summary.gates}
    shared = gates["shared by CE.x_1, CE.x_2, CE.x_3"]
    assert [line.symbol for line in shared.lines] == ["CE.W_H", "CE.b_H"]
    assert shared.gates == ("CE.x_1", "CE.x_2", "CE.x_3")
    assert shared.lines[0].macs == 3 * conv(1, 4, 5, 5) * 8 * 8  # every use of the one weight
    assert [line.symbol for line in gates["SE.A"].lines][:2] == ["SE.W_A", "SE.b_A"]  # both halves of the split
    assert sum(g.parameters for g in summary.gates) == summary.parameters


def test_a_size_the_spec_cannot_run_at_is_noted():
    graph = lower("cms_lstm", in_channels=1)  # LN_A is declared for 16×16 maps (side by side: 16×32)
    assert stats.summarize(graph, (16, 16)).notes == []
    [note] = stats.summarize(graph).notes
    assert note == "SE.LN_A is declared for 16x32 maps, but at this size it gets 64x128"


def test_counts_match_the_compiled_module():
    """The parameters the summary lists are the module's, tensor for tensor."""
    for spec, params in (("convlstm", {"in_channels": 3, "hidden": 4, "k": 3}),
                         ("e3d_lstm_official", {"in_channels": 2, "hidden": 4}),
                         ("mk_convlstm", {"in_channels": 2, "hidden": 4})):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = cellgen.compile(spec, opt_level=0, **params)
        ours = sorted(w.parameters for w in stats.weight_table(lower(spec, **params)))
        assert ours == sorted(p.numel() for p in module.parameters()), spec


def test_summary_command(tmp_path):
    """The real command: gates, totals and what was assumed, for a 3D cell with attention."""
    result = cli("compile", "e3d_lstm", "-p", "in_channels=1", "-p", "hidden=8", "-p", "tau=3", "-O", "0",
                 "--emit", "summary", "--size", "4", "4")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    attention = 32 * 96 * 16
    assert re.search(rf"^  R\s+0\s+{attention}$", out, re.M)
    assert re.search(rf"^    attention\s+attention\s+-\s+0\s+{attention}\s+q 32 tokens, k/v 96 tokens", out, re.M)
    assert "MACs at 2x4x4" in out and f"attention {attention}" in out
    assert "input size 2x4x4 (T H W; set with --size H W, T defaults to the input window" in out
    assert "not counted: LayerNorm, softmax, sums, activations, elementwise ops" in out
    bad = cli("compile", "e3d_lstm", "-p", "in_channels=1", "-p", "hidden=8", "-O", "0", "--emit", "summary",
              "--size", "4")
    assert bad.returncode == 1 and "3D cell: its input size is T H W" in bad.stderr and "Traceback" not in bad.stderr
