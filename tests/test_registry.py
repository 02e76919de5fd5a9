"""The op registry (cellgen/ir/ops.py), the analysis (cellgen/ir/analysis.py) and the
runtime-forms pass: one home per op, facts computed once, codegen that only translates."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import cellgen
from cellgen.codegen.fx import build_fx_graph
from cellgen.ir.analysis import analyze
from cellgen.ir.ops import ACTIVATIONS, BINARY_OPS, FUNCTIONS, KEPT, OPS, WEIGHT_OPS, in_group
from cellgen.passes import optimize
from cellgen.passes.cost import DEFAULT_COST
from cellgen.resources import shipped_specs
from cellgen.tools import stats

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"in_channels": 2, "hidden": 4}


def lowered(spec, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cellgen.lower_spec(spec, **params)


def shipped(name):
    params = {k: v for k, v in SMALL.items() if k in {p.name for p in cellgen.load_spec(name).resolved.params}}
    if name == "mau":  # OpenSTL's MAUCell reads its input S with num_hidden-input convs
        params["in_channels"] = params["hidden"]
    return lowered(name, **params)


# --- the registry ---------------------------------------------------------------------------------

def test_the_ir_and_the_registry_import_without_torch():
    """`cellgen check`/`list`/`diff` must not pay for torch: the registry names its emitters'
    torch calls through the codegen context, never by importing torch."""
    code = textwrap.dedent(f"""
        import sys, types
        package = types.ModuleType("cellgen")  # skip cellgen/__init__ (the API imports torch)
        package.__path__ = [{str(ROOT / "cellgen")!r}]
        sys.modules["cellgen"] = package
        import cellgen.ir.ops, cellgen.ir.analysis, cellgen.ir.layout, cellgen.tools.stats, cellgen.passes.cost
        from cellgen.ir.lower import lower
        from cellgen.language.parser import parse
        graph = lower(parse(open({str(ROOT / "specs/convlstm.cell")!r}).read()), {{"in_channels": 3}})
        cellgen.tools.stats.summarize(graph)
        assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))[:5]
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_every_entry_is_complete():
    for name, definition in OPS.items():
        assert definition.name == name and definition.doc and callable(definition.emit)
        low, high = definition.arity
        assert low >= 1 and (high is None or high >= low)
        assert definition.cost in ("values", "dispatch", "conv") or callable(definition.cost)
        assert definition.cost != "conv" or definition.macs is not None
        assert definition.needs_maps == () or definition.role, f"{name}: a message needs its role"
    # every op a spec's function or operator makes has its channel rule (convs: the lowering's)
    for op in {f.op for f in FUNCTIONS.values()} | set(BINARY_OPS.values()) - {"conv"}:
        assert OPS[op].channels is not None, op
    for op in ("softmax", "reduce", "stack", "unstack", "cat_along", "split_along", "attention", "layernorm",
               "concat"):
        assert OPS[op].channels is not None, op


def test_groups_and_spellings_are_views_of_the_table():
    assert ACTIVATIONS == {"sigmoid", "tanh", "relu", "silu"}
    assert {"weight_cat", "fill", "pad_kernel"} <= WEIGHT_OPS and "channel_view" not in WEIGHT_OPS
    assert FUNCTIONS["σ"].op == FUNCTIONS["sigmoid"].op == "sigmoid"
    assert BINARY_OPS == {"add": "add", "sub": "sub", "hadamard": "mul", "div": "div", "conv": "conv"}
    assert in_group("commutative") == {"add", "mul"}


@pytest.mark.parametrize("name", shipped_specs())
@pytest.mark.parametrize("level", [0, 2])
def test_every_op_of_every_shipped_spec_is_in_the_registry_and_analysed(name, level):
    graph = optimize(shipped(name), level)
    for node in graph.nx:
        data = graph[node]
        assert "facts" in data, f"{node} has no facts"
        if data["kind"] == "op":
            definition = OPS[data["op"]]
            count = len(graph.operands(node))
            assert definition.arity[0] <= count and (definition.arity[1] is None or count <= definition.arity[1])



@pytest.mark.parametrize("name", shipped_specs())
@pytest.mark.parametrize("variant", [dict(level=1), dict(level=2), dict(level=2, enable=["kernel-embedding"]),
                                     dict(level=2, enable=["activation-grouping"])], ids=repr)
def test_facts_kept_through_the_passes_are_the_facts_of_the_optimised_graph(name, variant):
    """optimize analyses only the nodes the passes made (a rewrite is exact: a value it leaves
    keeps its facts); the facts are those a fresh analysis of the graph it returns finds."""
    graph = optimize(shipped(name), variant["level"], enable=variant.get("enable", ()))
    fresh = graph.copy()
    for node in fresh.nx:
        del fresh[node]["facts"]
    analyze(fresh)
    assert {n: graph[n]["facts"] for n in graph.nx} == {n: fresh[n]["facts"] for n in fresh.nx}

# --- the worked example of docs/architecture.md: an op added as one entry ---------------------------

SILU = """
cell Swish
  input x[2]
  state h[3]
  weights
    W : conv 3×3
    b : bias
  h' = silu(W ⋆ x + b) ⊙ tanh(h)
"""


@pytest.mark.parametrize("level", [0, 1, 2])
def test_silu_matches_a_hand_written_step(level):
    cell = cellgen.compile(SILU, opt_level=level)
    torch.manual_seed(0)
    x, h = torch.randn(2, 2, 5, 5), torch.randn(2, 3, 5, 5)
    weight, bias = cell.W.detach(), cell.b.detach()
    expected = F.silu(F.conv2d(x, weight, bias, padding=1)) * torch.tanh(h)  # written without the compiler
    out, state = cell(x, {"h": h})
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    assert "torch.nn.functional.silu(" in cell.code


def test_an_unknown_function_lists_the_new_one():
    with pytest.raises(cellgen.CellgenError, match="did you mean `silu`"):
        lowered(SILU.replace("silu(", "silo("))


# --- detach: a stop-gradient (OpenSTL's MIM detaches n) ---------------------------------------------

DETACH = """
cell Detached
  input x[2]
  state h[3]
  weights
    W_a, W_b, W_c : conv 3×3
  h' = tanh(W_a ⋆ x + W_b ⋆ detach(h) + W_c ⋆ h)
"""


@pytest.mark.parametrize("level", [0, 1, 2])
def test_detach_stops_the_gradient_and_nothing_fuses_it_away(level):
    """W_b ⋆ detach(h) + W_c ⋆ h is one fused conv at O2 (of [x, detach(h), h]): gradients through h
    flow only through W_c, as a hand-written step over two steps says."""
    cell = cellgen.compile(DETACH, opt_level=level).double()
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(2, 2, 5, 5, generator=gen, dtype=torch.float64) for _ in range(2)]
    h0 = torch.randn(2, 3, 5, 5, generator=gen, dtype=torch.float64)
    weights = {n: p.detach().clone().requires_grad_(True) for n, p in cell.named_parameters()}

    def reference(h):  # written without the compiler
        for x in xs:
            h = torch.tanh(F.conv2d(x, weights["W_a"], padding=1) + F.conv2d(h.detach(), weights["W_b"], padding=1)
                           + F.conv2d(h, weights["W_c"], padding=1))
        return h

    h_e, h_a = h0.clone().requires_grad_(True), h0.clone().requires_grad_(True)
    expected = reference(h_e)
    state = {"h": h_a}
    for x in xs:
        out, state = cell(x, state)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    params = dict(cell.named_parameters())
    got = torch.autograd.grad((out * out).sum(), [h_a, *params.values()])
    want = torch.autograd.grad((expected * expected).sum(), [h_e, *(weights[n] for n in params)])
    for name, g, w in zip(["h0", *params], got, want):
        torch.testing.assert_close(g, w, atol=1e-10, rtol=0, msg=f"gradient of {name}")
    assert want[0].abs().max() > 1e-6  # h0's gradient flows through W_c: the test is not vacuous
    assert ".detach()" in cell.code


# --- the analysis ---------------------------------------------------------------------------------

def test_facts_of_histories_stacks_and_axes():
    graph = lowered("""
cell Facts
  param tau = 3
  input x[2]
  state h[2], c[2]
  weights
    W : conv 3×3
  C = c[t-tau:t-1]
  s = sum(softmax(C ⊙ h, over=stack), over=stack)
  a, b = split(cat(W ⋆ x, h, along=W), along=W)
  c' = s + a
  h' = b ⊙ tanh(c')
""")
    by_name = {graph[n]["name"]: graph[n]["facts"] for n in graph.nx if graph[n].get("name")}
    history = next(graph[n]["facts"] for n in graph.nx if graph[n]["kind"] == "history")
    assert history.stacked and history.length == ("history", 3)
    assert not by_name["s"].stacked and by_name["s"].map
    assert by_name["a"].extent == {"H": 1, "W": 1}
    cat = next(n for n in graph.nx if graph[n].get("op") == "cat_along")
    assert graph[cat]["facts"].extent["W"] == Fraction(2)
    weight = graph.weight_node("W")
    assert not graph[weight]["facts"].map


KEEP = """
cell Keep
  input x[2]
  state h[2]
  C = h[t-2:t-1]
  v = sum(C, over=W)
  h' = attention(x, v, v) + h
"""


def test_a_sum_over_an_axis_of_a_stack_keeps_the_stack():
    """One rule for validation, stats and codegen: `sum(…, over=W)` of a history is a stack
    whose W is kept at size 1. (Layout and stats used to disagree: codegen took it for a map.)"""
    graph = lowered(KEEP)
    (reduce_w,) = graph.ops("reduce")
    facts = graph[reduce_w]["facts"]
    assert facts.stacked and facts.length == ("history", 2) and facts.extent == {"H": 1, "W": KEPT}
    (attention,) = stats.attention_counts(graph, (4, 4))
    assert attention.keys == 2 * 4 and attention.queries == 4 * 4
    # stats counted it as a stack already; validation and codegen now agree with them
    assert stats.extents(graph, (4, 4))[reduce_w].entries == 2


def test_stats_read_the_analysis_at_any_size():
    graph = shipped("predrnn")
    sizes = stats.extents(graph, (16, 32))
    assert {e.spatial for e in sizes.values()} == {(16, 32)}
    assert stats.macs_per_step(graph, (16, 32)) == sum(stats.conv_macs(graph, (16, 32)).values())


# --- codegen only translates: what it emits, the graph says -----------------------------------------

def test_runtime_forms_are_in_the_optimised_graph():
    graph = optimize(shipped("convlstm"), 2)
    (conv,) = graph.ops("conv")
    assert graph[conv]["parts"] == 2 and not graph.ops("concat")
    assert len(graph.ops("split")) == 1 and len(graph.ops("piece")) == 4 and not graph.ops("slice")
    code = build_fx_graph(graph).python_code("self").src
    assert code.count(".split(") == 1 and code.count("conv_of_concat(") == 1 and "narrow" not in code


@pytest.mark.parametrize("name", shipped_specs())
def test_the_code_has_one_call_of_each_kind_the_graph_has(name):
    graph = optimize(shipped(name), 2)
    code = build_fx_graph(graph).python_code("self").src
    assert code.count(".split(") == len(graph.ops("split"))
    joined = [n for n in graph.ops("conv") if graph[n].get("parts", 1) > 1]
    assert code.count("conv_of_concat(") == len(joined)
    assert code.count("torch.cat(") >= len(graph.ops("concat"))


def test_the_cost_model_sees_the_runtime_forms():
    before = optimize(shipped("convlstm"), 2, disable=["runtime-forms"])
    after = optimize(shipped("convlstm"), 2)
    # four narrows and a cat become one split (four free tuple reads): the model counts fewer calls
    assert DEFAULT_COST.cost(after) < DEFAULT_COST.cost(before)
    assert stats.macs_per_step(after, (8, 8)) == stats.macs_per_step(before, (8, 8))


# --- the tools, untangled ---------------------------------------------------------------------------

def _imports(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    import ast
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_render_draws_graphs_and_nothing_else():
    """render.py is graph (or diff result) → DOT: no import of diff, show, the CLI or lowering,
    so diff → render is the only edge between them."""
    imports = _imports(ROOT / "cellgen/tools/render.py")
    for module in ("cellgen.tools.diff", "cellgen.tools.show", "cellgen.cli", "cellgen.api", "cellgen.ir.lower",
                   "cellgen.passes"):
        assert not any(i == module or i.startswith(module + ".") for i in imports), module


def test_every_spelling_of_a_function_is_the_registrys():
    """The parser and the printer take a function's spellings from its OpDef: each spelling
    parses to one name the AST keeps, lowers to the op, and prints (ASCII or not) as one of
    the op's spellings, which reads back as the same spec."""
    from cellgen.api import lower_spec
    from cellgen.ir.ops import OPS
    from cellgen.language.parser import parse
    from cellgen.language.printer import format_spec

    spelled = [d for d in OPS.values() if d.spellings]
    assert any(len(d.spellings) > 1 for d in spelled)  # sigmoid and σ
    for definition in spelled:
        kept = set()
        for spelling in definition.spellings:
            text = ("cell F\n  input x[3]\n  state h[4]\n  weights\n    W: conv 3×3\n"
                    f"  h' = {spelling}(W ⋆ x) + h\n")
            spec = parse(text)
            kept.add(spec.definitions[0].expr.left.func)
            graph = lower_spec(text)
            assert graph.count(definition.name) == 1, (spelling, definition.name)
            for ascii in (False, True):
                printed = format_spec(spec, ascii=ascii)
                written = printed.split("h' = ")[1].split("(")[0]
                assert written in definition.spellings and (written.isascii() or not ascii), (spelling, printed)
                assert format_spec(parse(printed)) == format_spec(spec)
        assert len(kept) == 1, (definition.name, kept)
