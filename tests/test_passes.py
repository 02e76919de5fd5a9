"""The optimizer: each pass on a small graph, every pass alone and every level against -O0 on
every shipped spec (outputs, states and gradients), the report, the state_dict contract,
torch.compile and torch.jit.trace.

Equivalence is checked the way tests/test_reference_equivalence.py checks the references:
fp32, random weights (conv weights scaled by 1/√fan-in so gates neither saturate nor go
linear), a random non-zero initial state, 3 steps, every output and state compared with a
max abs difference of 1e-5, and the gradients of a weighted sum of all of them (weights
scaled so gradients are O(1)) w.r.t. every parameter, the input frames and the initial state.
"""
from __future__ import annotations

import functools
import io
import math
import re
import warnings
from pathlib import Path

import pytest
import torch

import cellgen
from cellgen.codegen.module import build_module
from cellgen.ir.graph import CellGraph
from cellgen.passes import PIPELINE, Report, optimize, pass_names
from cellgen.passes.activation_grouping import activation_grouping
from cellgen.passes.bias_folding import bias_folding
from cellgen.passes.concat_split import concat_split
from cellgen.passes.cost import CostModel
from cellgen.passes.cse import cse
from cellgen.passes.dce import dce
from cellgen.passes.kernel_embedding import choose_kernel_embedding, kernel_embedding
from cellgen.passes.kernel_grouping import kernel_grouping
from cellgen.passes.same_operand import same_operand_fusion
from cellgen.passes.simplify import simplify
from cellgen.passes.sum_fusion import sum_fusion

TESTS = Path(__file__).resolve().parent
MK_SPEC = str(TESTS / "specs" / "mk_convlstm_test.cell")
SIZE = 8
SPECS = {
    "convlstm": dict(in_channels=3, hidden=6, k=3),
    "convlstm_peephole": dict(in_channels=3, hidden=6, k=3, height=SIZE, width=SIZE),
    "predrnn": dict(in_channels=3, hidden=6, k=3),
    MK_SPEC: dict(in_channels=3, c3=3, c5=4),
    "e3d_lstm": dict(in_channels=2, hidden=4, k=3, tau=2),
    "e3d_lstm_official": dict(in_channels=2, hidden=4, k=3),
    "e3d_lstm_no_attention": dict(in_channels=2, hidden=4, k=3),
    "e3d_lstm_2d": dict(in_channels=2, hidden=4, k=3),
    "astm": dict(in_channels=2, hidden=4, k=3, tau=2),
    "cms_lstm": dict(in_channels=2, hidden=4, k=3, height=SIZE, width=SIZE),
    "predrnn_ce_se": dict(in_channels=2, hidden=4, k=3, height=SIZE, width=SIZE),
    "mk_convlstm": dict(in_channels=3, hidden=6),
    "mk_convlstm_1x1": dict(in_channels=3, hidden=6),
    "mk_convlstm_inception": dict(in_channels=3, hidden=8, bottleneck=3),
    "mk_convlstm_flow": dict(in_channels=3, hidden=6),
}
ATOL = 1e-5
LOSS_WEIGHT_SCALE = 0.05
STEPS = 3
BATCH = 2


pytestmark = pytest.mark.usefixtures("one_thread")


# --- equivalence helpers (also used by test_passes_property.py) -----------------------------

def random_params(cell, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    params = {}
    for name, info in cell.cell_graph.weights.items():
        tensor = torch.randn(info.shape, generator=generator)
        if info.kind == "conv":
            tensor *= 2.0 / math.sqrt(math.prod(info.shape[1:]))
        else:
            tensor *= 0.5
        params[name] = tensor
    return params


def map_shape(graph, channels: int, size: int) -> tuple[int, ...]:
    """(B, C, H, W), or (B, C, T, H, W) for a cell whose input is a window of T frames."""
    window = max(graph.input_windows.values(), default=1)
    return (BATCH, channels) + ((window,) if graph.spatial_dims == 3 else ()) + (size, size)


def random_inputs(graph, steps: int, size: int, generator) -> list[torch.Tensor]:
    """One (B, steps, C, …) sequence per input of the cell."""
    return [torch.randn(BATCH, steps, *map_shape(graph, graph[node]["channels"], size)[1:], generator=generator)
            for node in graph.inputs.values()]


def _run(cell, params, xs, state0, weights):
    named = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    cell.load_state_dict(named)
    leaves = dict(cell.named_parameters())
    xs = [x.clone().requires_grad_(True) for x in xs]
    state = {k: v.clone().requires_grad_(True) for k, v in state0.items()}
    inputs = {**leaves, **{f"<input {i}>": x for i, x in enumerate(xs)},
              **{f"<{k} at t=0>": v for k, v in state.items()}}
    flat = []
    current = state
    for t in range(xs[0].shape[1]):
        h, current = cell(*[x[:, t] for x in xs], current)
        flat += [h] + [current[name] for name in sorted(state0)]
    loss = sum((w * v).sum() for w, v in zip(weights, flat))
    grads = torch.autograd.grad(loss, list(inputs.values()), allow_unused=True)
    return [v.detach() for v in flat], dict(zip(inputs, grads))


def assert_same_step(reference, candidate, *, seed: int = 0, steps: int = STEPS, size: int = SIZE,
                     what: str = "", dtype: torch.dtype = torch.float32) -> None:
    """`candidate` computes what `reference` computes, from the same state_dict: outputs and
    states of `steps` steps, and gradients w.r.t. parameters, frames and initial state.

    In fp32 (the contract) values may differ by 1e-5 relative to their magnitude; in fp64 an
    exact rewrite agrees to ~1e-12, so the bound is 1e-9 and even a tiny mistake shows."""
    atol = ATOL if dtype == torch.float32 else 1e-9
    reference, candidate = reference.to(dtype), candidate.to(dtype)
    assert {k: tuple(v.shape) for k, v in reference.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in candidate.state_dict().items()}, f"{what}: state_dict differs"
    params = {k: v.to(dtype) for k, v in random_params(reference, seed).items()}
    graph = reference.cell_graph
    generator = torch.Generator().manual_seed(seed + 1)
    xs = [x.to(dtype) for x in random_inputs(graph, steps, size, generator)]
    state0 = {name: 0.5 * torch.randn(map_shape(graph, info.channels, size), generator=generator).to(dtype)
              for name, info in graph.states.items()}
    out_shapes = [map_shape(graph, reference.out_channels, size)] + \
        [map_shape(graph, graph.states[name].channels, size) for name in sorted(graph.states)]
    weights = [LOSS_WEIGHT_SCALE * torch.randn(shape, generator=generator).to(dtype)
               for _ in range(steps) for shape in out_shapes]
    flat_r, grads_r = _run(reference, params, xs, state0, weights)
    flat_c, grads_c = _run(candidate, params, xs, state0, weights)
    for index, (a, b) in enumerate(zip(flat_c, flat_r)):
        scale = max(1.0, b.abs().max().item())
        assert (a - b).abs().max().item() <= atol * scale, f"{what}: value {index} differs"
    for name, expected in grads_r.items():
        actual = grads_c[name]
        if expected is None:
            assert actual is None or actual.abs().max() == 0, f"{what}: gradient of {name}"
            continue
        assert actual is not None, f"{what}: no gradient reaches {name}"
        scale = max(1.0, expected.abs().max().item())
        diff = (actual - expected).abs().max().item()
        assert diff <= atol * scale, f"{what}: gradient of {name} differs by {diff:.2e}"


def compile_quiet(spec, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cellgen.compile(spec, **kwargs)


def lowered(spec, **params) -> CellGraph:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cellgen.lower_spec(spec, **params)


def module(graph: CellGraph):
    return build_module(graph, 0)


def ops(graph: CellGraph, op: str) -> list[str]:
    return graph.ops(op)


def spec_id(spec: str) -> str:
    return Path(spec).stem


# --- small cells for the unit tests ----------------------------------------------------------

TWO_GATES = """
cell TwoGates
  input x[2]
  state h[3]
  weights
    W_*, U_* : conv 3×3
    b_*      : bias
  a  = σ(W_a ⋆ x + U_a ⋆ h + b_a)
  g  = tanh(W_g ⋆ x + U_g ⋆ h)
  h' = a ⊙ g + 1.0
"""

SHARED_CONV = """
cell SharedConv
  input x[2]
  state h[3]
  weights
    W_*, U_* : conv 3×3
  z  = W_a ⋆ x
  a  = σ(z + U_a ⋆ h)
  h' = a ⊙ tanh(z)
"""

MIXED_KERNELS = """
cell Mixed
  input x[2]
  state h[3]
  weights
    W_a    : conv 3×3
    U_a    : conv 5×5
  h' = tanh(W_a ⋆ x + U_a ⋆ h)
"""


# --- unit tests, one or more per pass --------------------------------------------------------

def test_cse_merges_identical_convs_and_concats():
    graph = lowered("""
cell Dup
  input x[2]
  state h[3]
  weights
    W : conv 3×3
  h' = tanh(W ⋆ [x, h]) + σ(W ⋆ [x, h])
""")
    assert len(ops(graph, "conv")) == 2 and len(ops(graph, "concat")) == 2
    after, notes = cse(graph)
    assert len(ops(after, "conv")) == 1 and len(ops(after, "concat")) == 1
    assert "merged 2 duplicates" in notes[0]
    assert len(ops(graph, "conv")) == 2, "a pass must not change its input graph"
    assert_same_step(module(graph), module(after), what="cse")


def test_cse_treats_add_and_mul_as_commutative():
    graph = lowered("""
cell Comm
  input x[3]
  state h[3]
  h' = x ⊙ h + h ⊙ x
""")
    after, _ = cse(graph)
    assert len(ops(after, "mul")) == 1
    assert_same_step(module(graph), module(after), what="cse")



def test_cse_keeps_zero_and_minus_zero_apart():
    """0.0 == -0.0, but they are different constants: 1 / (x ⊙ -0.0) is −∞ where 1 / (x ⊙ 0.0) is ∞."""
    spec = """
cell Zeros
  input x[2]
  state h[2]
  h' = h + tanh(1 / (x ⊙ 0.0)) - tanh(1 / (x ⊙ -0.0))
"""
    graph = lowered(spec)
    after, _ = cse(graph)
    assert sorted(repr(after[n]["value"]) for n in after.nx if after[n]["kind"] == "const" and
                  after[n]["value"] == 0) == ["-0.0", "0.0"]
    x = torch.ones(1, 2, 4, 4)
    for level in (0, 1, 2):
        h, _ = cellgen.compile(spec, opt_level=level)(x)
        assert torch.equal(h, torch.full_like(h, 2.0)), level


def test_a_minus_zero_bias_stays_minus_zero_through_folding_simplify_and_codegen():
    """Bias folding makes `+ -0.0` the conv's bias fill; simplify must not merge it with the
    next chunk's 0.0 fill, and codegen must not emit it as zeros (x + -0.0 keeps a -0.0 x)."""
    spec = """
cell Zeros
  input x[2]
  state h[2]
  weights
    W_a, W_b : conv 3×3
  h' = σ(W_a ⋆ x + -0.0) ⊙ σ(W_b ⋆ x) + h
"""
    for level in (1, 2):
        module = cellgen.compile(spec, opt_level=level)
        fills = [(n.target, n.args[2] if n.target == "new_full" else 0.0) for n in module.graph.nodes
                 if n.op == "call_method" and n.target in ("new_full", "new_zeros")]
        assert ("new_full", -0.0) in fills and math.copysign(1.0, dict(fills)["new_full"]) < 0, (level, fills)
        assert (("new_zeros", 0.0) in fills) == (level == 2), (level, fills)  # O2: W_a, W_b one conv

def test_dce_drops_what_no_result_reads_but_keeps_parameters():
    graph = lowered(TWO_GATES)
    dead = graph.add_op("sigmoid", [graph.inputs["x"]])
    graph.add_op("tanh", [dead])
    after, notes = dce(graph)
    assert len(after.nx) == len(graph.nx) - 2
    assert notes == ["removed 2 dead nodes"]
    assert set(after.weights) == set(graph.weights)
    assert dce(after)[1] == []


def test_sum_fusion_fuses_each_gate_over_the_concat_of_its_inputs():
    graph = lowered(TWO_GATES)
    after, notes = sum_fusion(graph)
    assert len(ops(graph, "conv")) == 4 and len(ops(after, "conv")) == 2
    for conv in ops(after, "conv"):
        source = after.operands(conv)[0]
        assert after[source]["op"] == "concat" and after[source]["channels"] == 5
        weight = after.operands(conv)[1]
        assert after[weight]["op"] == "weight_cat" and after[weight]["dim"] == 1
    assert notes == ["4 convs -> 2 (a: W_a⋆x + U_a⋆h; g: W_g⋆x + U_g⋆h)"]
    assert_same_step(module(graph), module(after), what="sum-fusion")


def test_sum_fusion_guard_a_conv_read_elsewhere_is_not_fused():
    """`z = W_a ⋆ x` feeds the sum AND tanh: fusing it into the sum would lose z (as a
    normalisation between a conv and the sum would block the fusion)."""
    graph = lowered(SHARED_CONV)
    after, notes = sum_fusion(graph)
    assert notes == [] and len(ops(after, "conv")) == 2
    assert_same_step(module(graph), module(optimize(graph, 2)), what="shared conv at O2")


def test_sum_fusion_guard_different_kernels_are_not_fused():
    graph = lowered(MIXED_KERNELS)
    after, notes = sum_fusion(graph)
    assert notes == [] and len(ops(after, "conv")) == 2


def test_sum_fusion_adds_the_weights_of_two_convs_of_one_input():
    graph = lowered("""
cell SameInput
  input x[2]
  state h[3]
  weights
    A, B : conv 3×3
  h' = tanh(A ⋆ x + B ⋆ x)
""")
    after, _ = sum_fusion(graph)
    (conv,) = ops(after, "conv")
    assert after.operands(conv)[0] == graph.inputs["x"]
    assert after[after.operands(conv)[1]]["op"] == "weight_add"
    assert_same_step(module(graph), module(after), what="sum-fusion (W₁+W₂)⋆x")


def test_sum_fusion_keeps_stages_apart_in_predrnn():
    graph = lowered("predrnn", **SPECS["predrnn"])
    after, _ = sum_fusion(graph)
    assert len(ops(after, "conv")) == 9
    sources = {after[after.operands(c)[0]].get("op") or after[after.operands(c)[0]]["name"]
               for c in ops(after, "conv")}
    assert "concat" in sources
    # o = W_xo⋆x + W_ho⋆h + W_o⋆[c', m']: x and h fused, [c', m'] (one conv later) kept apart
    stage1 = [c for c in ops(after, "conv") if after[after.operands(c)[0]]["op"] == "concat"
              and {after[o]["name"] for o in after.operands(after.operands(c)[0])} == {"c'", "m'"}]
    assert len(stage1) == 2  # W_o and W_1x1


def test_same_operand_fusion_stacks_output_channels_and_slices():
    graph = lowered("convlstm", **SPECS["convlstm"])
    after, notes = same_operand_fusion(graph)
    assert len(ops(after, "conv")) == 2
    assert notes == ["8 convs -> 2 (x: W_xi W_xf W_xc W_xo; h: W_hi W_hf W_hc W_ho)"]
    for conv in ops(after, "conv"):
        assert after[conv]["channels"] == 4 * 6
        slices = sorted((after[u]["start"], after[u]["stop"]) for u in after.users(conv))
        assert slices == [(0, 6), (6, 12), (12, 18), (18, 24)]
    assert_same_step(module(graph), module(after), what="same-operand fusion")


def test_same_operand_fusion_guard_different_kernels_stay_apart():
    graph = lowered("""
cell K
  input x[2]
  state h[3]
  weights
    A : conv 3×3
    B : conv 5×5
  h' = tanh(A ⋆ x) ⊙ σ(B ⋆ x)
""")
    after, notes = same_operand_fusion(graph)
    assert notes == [] and len(ops(after, "conv")) == 2


def test_bias_folding_on_single_convs_and_on_chunks_of_a_fused_conv():
    graph = lowered(TWO_GATES)
    alone, notes = bias_folding(graph)
    assert notes == ["folded into conv biases: a ← b_a"]
    assert not ops(alone, "channel_view")
    assert_same_step(module(graph), module(alone), what="bias folding alone")

    fused, _ = same_operand_fusion(cse(sum_fusion(graph)[0])[0])
    folded, notes = bias_folding(fused)
    (conv,) = ops(folded, "conv")
    bias = folded.operands(conv)[2]
    assert folded[bias]["op"] == "weight_cat"  # [b_a | zeros for g]
    assert [folded[p]["op"] if folded[p]["kind"] == "op" else folded[p]["name"]
            for p in folded.operands(bias)] == ["b_a", "fill"]
    assert_same_step(module(graph), module(folded), what="bias folding on chunks")


def test_bias_folding_folds_scalar_constants_and_guards_shared_chunks():
    graph = lowered("predrnn", **SPECS["predrnn"])
    after, notes = bias_folding(graph)
    assert "f ← 1" in notes[0] and "f_m ← 1" in notes[0]
    fills = [n for n in after.ops("fill") if after[n]["value"] == 1.0]
    assert len(fills) == 2
    assert_same_step(module(graph), module(after), what="bias folding predrnn")
    # h' = a ⊙ g + 1.0 is not a conv's sum: the 1.0 stays
    two = lowered(TWO_GATES)
    assert any(two[n]["kind"] == "const" for n in bias_folding(two)[0].nx)


def test_concat_split_distributes_sums_over_concats():
    graph = lowered(MK_SPEC, **SPECS[MK_SPEC])
    after, notes = concat_split(graph)
    assert notes == ["split 4 sums of concats: i = [3, 4 channels], f = [3, 4 channels], c' = [3, 4 channels], "
                     "o = [3, 4 channels]"]
    for gate in ("i", "f", "o"):
        (node,) = [n for n in after.nx if after[n]["name"] == gate]
        (operand,) = after.operands(node)
        assert after[operand]["op"] == "concat"
        assert all(after[p]["op"] == "add" for p in after.operands(operand))
    assert_same_step(module(graph), module(after), what="concat split")


def test_concat_split_cuts_a_bias_added_to_the_whole_concat():
    graph = lowered("""
cell WholeBias
  input x[2]
  state h[5]
  weights
    A : conv 3×3
    B : conv 1×1
    e : elementwise [2, 1, 1]
    b : bias
  h' = tanh([A ⋆ x + e, B ⋆ x] + b)
""")
    after, _ = concat_split(graph)
    assert len(after.ops("weight_slice")) == 2
    assert_same_step(module(graph), module(optimize(graph, 2)), what="bias through concat at O2")
    assert_same_step(module(graph), module(after), what="bias through concat")


def _grouped(graph: CellGraph) -> CellGraph:
    for step in (concat_split, sum_fusion, cse, same_operand_fusion, bias_folding):
        graph, _ = step(graph)
    return graph


def test_kernel_grouping_interleaves_gate_major():
    graph = lowered(MK_SPEC, **SPECS[MK_SPEC])
    before = _grouped(graph)
    assert len(ops(before, "conv")) == 2 and len(ops(before, "concat")) == 5  # [x, h] and one per gate
    after, notes = kernel_grouping(before)
    (interleave,) = after.ops("interleave")
    assert after[interleave]["groups"] == 4 and after[interleave]["channels"] == 4 * 7
    assert [after[t]["kernel"] for t in after.operands(interleave)] == [(3, 3), (5, 5)]
    assert notes == ["interleaved 4 gates × (3×3: 3 + 5×5: 4) channels, gate-major"]
    slices = sorted((after[u]["start"], after[u]["stop"]) for u in after.users(interleave))
    assert slices == [(0, 7), (7, 14), (14, 21), (21, 28)]
    assert_same_step(module(graph), module(after), what="kernel grouping")


def test_kernel_embedding_pads_small_kernels_into_the_largest():
    graph = lowered(MK_SPEC, **SPECS[MK_SPEC])
    split, _ = concat_split(graph)
    after, notes = kernel_embedding(split)
    assert {after[c]["kernel"] for c in ops(after, "conv")} == {(5, 5)}
    assert len(after.ops("pad_kernel")) == 8
    assert notes == ["embedded 3×3 + 5×5 (pad W_x3i W_h3i W_x3f W_h3f … 8 weights to 5×5)"]
    assert_same_step(module(graph), module(after), what="kernel embedding")
    # and then sum and same-operand fusion make ONE conv
    assert optimize(graph, 2, enable=["kernel-embedding"]).count("conv") == 1
    # mixed kernels in one sum: embedding lets sum fusion fuse them
    mixed = lowered(MIXED_KERNELS)
    assert optimize(mixed, 2, enable=["kernel-embedding"]).count("conv") == 1
    assert optimize(mixed, 2, enable=["kernel-grouping"]).count("conv") == 2


def test_kernel_embedding_guard_even_kernels_are_left_alone():
    graph = lowered("""
cell Even
  input x[2]
  state h[3]
  weights
    A : conv 2×2
    B : conv 4×4
  h' = tanh(A ⋆ x + B ⋆ x)
""")
    assert kernel_embedding(graph)[1] == []


def test_cost_model_choice_is_visible_and_follows_the_size():
    graph = lowered(MK_SPEC, **SPECS[MK_SPEC])
    rest = [p for p in PIPELINE[PIPELINE.index(next(p for p in PIPELINE if p.name == "kernel-embedding")) + 1:]]

    def finish(g):
        for info in rest:
            g, _ = info.run(g)
        return g

    _, notes = choose_kernel_embedding(concat_split(graph)[0], finish, CostModel(pixels=8 * 32 * 32))
    assert notes[0].startswith("3×3 + 5×5 (pad W_x3i W_h3i W_x3f W_h3f … 8 weights to 5×5): grouping 2 convs")
    assert "embedding 1 conv " in notes[0] and notes[0].endswith("-> grouping")
    free_macs = CostModel(pixels=8 * 32 * 32, ns_per_mac=0.0)  # when MACs cost nothing, fewer convs win
    chosen, notes = choose_kernel_embedding(concat_split(graph)[0], finish, free_macs)
    assert notes[0].endswith("-> embedding") and chosen.ops("pad_kernel")


def test_activation_grouping_reorders_gates_and_shares_one_sigmoid():
    graph = lowered("convlstm", **SPECS["convlstm"])
    # the graph activation grouping meets in the pipeline: before runtime-forms cuts the slices by a split
    fused = optimize(graph, 2, disable=["activation-grouping", "runtime-forms"])
    assert len(fused.ops("sigmoid")) == 3
    after, notes = activation_grouping(fused)
    (sigmoid,) = after.ops("sigmoid")
    assert after[sigmoid]["channels"] == 3 * 6
    assert "gate order i f o c'" in notes[0]
    assert_same_step(module(graph), module(after), what="activation grouping")


def test_simplify_merges_adjacent_slices_and_weight_rows():
    graph = lowered(MK_SPEC, **SPECS[MK_SPEC])
    embedded = optimize(graph, 0, enable=["concat-split", "kernel-embedding", "sum-fusion", "cse",
                                          "same-operand-fusion", "bias-folding"])
    assert len(embedded.ops("concat")) == 5  # [x, h] and, per gate, [3×3 chunk, 5×5 chunk]
    after, notes = simplify(embedded)
    assert len(after.ops("concat")) == 1  # each gate now reads one slice of the one conv
    assert notes and "->" in notes[0]
    assert_same_step(module(graph), module(after), what="simplify")


# --- the pipeline: levels, switches, report ---------------------------------------------------

CONV_COUNTS = {  # spec: (O0, O1, O2)
    "convlstm": (8, 4, 1),
    "convlstm_peephole": (8, 4, 1),
    "predrnn": (16, 9, 4),
    MK_SPEC: (16, 8, 2),
    "mk_convlstm": (16, 8, 2),
}


@pytest.mark.parametrize("spec", list(CONV_COUNTS), ids=spec_id)
def test_conv_counts_per_level(spec):
    counts = tuple(compile_quiet(spec, opt_level=level, **SPECS[spec]).cell_graph.count("conv") for level in (0, 1, 2))
    assert counts == CONV_COUNTS[spec]


def test_report_lines_and_summary():
    report = Report()
    cellgen.compile("convlstm", opt_level=2, report=report, **SPECS["convlstm"])
    lines = dict(report.lines)
    assert lines["same-operand-fusion"] == ["4 convs -> 1 ([x, h]: W_xi W_hi W_xf W_hf W_xc W_hc W_xo W_ho)"]
    assert lines["sum-fusion"][0].startswith("8 convs -> 4 (i: W_xi⋆x + W_hi⋆h; f: W_xf⋆x + W_hf⋆h;")
    assert report.summary.startswith("ConvLSTM: 8 convs -> 1")
    text = report.render()
    assert text.splitlines()[-1] == report.summary and "kernel-embedding: nothing to do" in text
    # a pass alone at O0
    alone = Report()
    cellgen.compile("convlstm", opt_level=0, enable=["same-operand-fusion"], report=alone, **SPECS["convlstm"])
    assert [name for name, _ in alone.lines] == ["same-operand-fusion"]
    assert alone.lines[0][1] == ["8 convs -> 2 (x: W_xi W_xf W_xc W_xo; h: W_hi W_hf W_hc W_ho)"]


def test_enable_disable_and_alternatives():
    graph = lowered(MK_SPEC, **SPECS[MK_SPEC])
    assert optimize(graph, 0).count("conv") == 16
    assert optimize(graph, 2, disable=["same-operand-fusion"]).count("conv") == 8
    assert optimize(graph, 2, enable=["kernel-embedding"]).count("conv") == 1
    assert optimize(graph, 2, disable=["kernel-grouping"]).count("conv") == 1  # the alternative is forced
    grouped = optimize(graph, 2, enable=["kernel-grouping"])
    assert grouped.count("conv") == 2 and grouped.ops("interleave")
    with pytest.raises(cellgen.CellgenError, match="unknown pass `sum-fusoin`"):
        optimize(graph, 2, enable=["sum-fusoin"])
    with pytest.raises(cellgen.CellgenError, match="both enabled and disabled"):
        optimize(graph, 2, enable=["cse"], disable=["cse"])


# --- equivalence on every shipped spec: each pass alone, each level, both kernel choices -------

CASES = [dict(opt_level=0, enable=[name]) for name in pass_names()] + [
    dict(opt_level=1), dict(opt_level=2), dict(opt_level=2, enable=["kernel-embedding"]),
    dict(opt_level=2, enable=["kernel-grouping"]), dict(opt_level=2, enable=["activation-grouping"])]


def _case_id(case):
    return f"O{case['opt_level']}" + "".join(f"+{name}" for name in case.get("enable", []))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("spec", list(SPECS), ids=spec_id)
def test_equivalent_to_O0(spec, case):
    """In fp64, where an exact rewrite agrees to ~1e-12: the deep cells (CMS-LSTM's attention
    and norms, E3D's RECALL) round differently in fp32 after a rewrite by ~1e-5 already."""
    candidate = compile_quiet(spec, **case, **SPECS[spec])
    assert_same_step(_reference(spec), candidate, what=f"{spec_id(spec)} {_case_id(case)}", dtype=torch.float64)


@functools.lru_cache(maxsize=None)
def _reference(spec):
    """The O0 cell every case of `spec` is compared with, compiled once: assert_same_step loads
    its weights and sets its dtype afresh each time."""
    return compile_quiet(spec, opt_level=0, **SPECS[spec])


@pytest.mark.parametrize("spec", list(SPECS), ids=spec_id)
def test_checkpoints_load_across_levels(spec):
    cells = {level: compile_quiet(spec, opt_level=level, **SPECS[spec]) for level in (0, 1, 2)}
    x = [x[:, 0] for x in random_inputs(cells[0].cell_graph, 1, SIZE, None)]
    for saved in (2, 0):
        buffer = io.BytesIO()
        torch.save(cells[saved].state_dict(), buffer)
        outputs = []
        for level, cell in cells.items():
            buffer.seek(0)
            cell.load_state_dict(torch.load(buffer), strict=True)
            with torch.no_grad():
                outputs.append(cell(*x, None)[0])
        for out in outputs[1:]:
            assert (out - outputs[0]).abs().max() <= ATOL


@pytest.mark.parametrize("spec", list(SPECS), ids=spec_id)
def test_standalone_module_of_an_O2_cell_runs_the_same_steps(spec):
    from cellgen.codegen.standalone import standalone_source

    cell = compile_quiet(spec, opt_level=2, **SPECS[spec])
    namespace: dict = {}
    exec(compile(standalone_source(cell), "<standalone>", "exec"), namespace)
    standalone = namespace[re.sub(r"\W", "_", cell.cell_graph.name)]()
    standalone.load_state_dict(random_params(cell))
    cell.load_state_dict(random_params(cell))
    xs = random_inputs(cell.cell_graph, 3, SIZE, torch.Generator().manual_seed(3))
    state_a = state_b = None
    with torch.no_grad():
        for t in range(3):
            a, state_a = standalone(*[x[:, t] for x in xs], state_a)
            b, state_b = cell(*[x[:, t] for x in xs], state_b)
            assert (a - b).abs().max() <= ATOL
        assert state_a.keys() == state_b.keys()


# --- torch.jit.trace and torch.compile ---------------------------------------------------------

@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("spec", list(SPECS), ids=spec_id)
def test_jit_trace_of_the_O2_step(spec):
    cell = compile_quiet(spec, opt_level=2, **SPECS[spec])
    x = [x[:, 0] for x in random_inputs(cell.cell_graph, 1, SIZE, None)]
    state = {k: torch.randn_like(v) for k, v in cell.zero_state(x[0]).items()}
    traced = torch.jit.trace(cell, (*x, state), strict=False)
    x2 = [torch.randn_like(v) for v in x]
    state2 = {k: torch.randn_like(v) for k, v in state.items()}
    h, new = cell(*x2, state2)
    h_t, new_t = traced(*x2, state2)
    assert (h - h_t).abs().max() <= ATOL
    assert all((new[k] - new_t[k]).abs().max() <= ATOL for k in new)


def _compiled_matches_eager(spec, backend):
    torch._dynamo.reset()
    cell = compile_quiet(spec, opt_level=2, **SPECS[spec])
    x = [x[:, 0] for x in random_inputs(cell.cell_graph, 1, SIZE, None)]
    state = {k: torch.randn_like(v) for k, v in cell.zero_state(x[0]).items()}
    compiled = torch.compile(cell, fullgraph=True, backend=backend)  # fullgraph: a graph break raises
    h_c, new_c = compiled(*x, state)
    h, new = cell(*x, state)
    assert (h - h_c).abs().max() <= ATOL
    assert all((new[k] - new_c[k]).abs().max() <= ATOL for k in new)


def test_torch_compile_fullgraph_traces_without_graph_breaks():
    """Dynamo alone (backend="eager"): fast, and it is what would report a graph break."""
    for spec in ("convlstm", MK_SPEC, "e3d_lstm", "cms_lstm", "astm", "mk_convlstm_flow"):
        _compiled_matches_eager(spec, "eager")


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["convlstm", "predrnn", MK_SPEC, "e3d_lstm", "cms_lstm"], ids=spec_id)
def test_torch_compile_fullgraph_inductor(spec):
    _compiled_matches_eager(spec, "inductor")
