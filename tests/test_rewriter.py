"""The rewrite driver (cellgen/passes/rules.py) and the cached order it walks (CellGraph.order).

- On every shipped spec, at every pass of every opt level, the worklist driver reaches the
  graph that the old driver — restart from the first rule and node after every rewrite,
  sweep dead nodes after every rewrite — reaches: the same nodes, edges and attributes, the
  same notes. (A rewrite creates node ids in sequence, so equal graphs mean equal steps.)
- A rewrite makes the driver try again only what it changed and the users of that.
- Dead nodes are gone after every pass; the whole-graph sweep runs once per pass.
- The kernel-embedding choice is today's on every shipped spec (recorded from
  `cellgen compile SPEC --explain` before the choice moved to a region of the graph), and,
  under other cost models, the choice that finishing the whole step both ways makes; a group
  whose padding outweighs the rest of the step is decided on one finish, which optimize keeps.
- A copy of a graph is networkx's copy, sharing no node or edge attributes with its original.
"""
from __future__ import annotations

import dataclasses
import re
import sys
import warnings
from collections import Counter

import networkx as nx
import pytest

from cellgen.api import lower_spec
from cellgen.ir.analysis import analyze
from cellgen.ir.graph import CellGraph, creation_order
from cellgen.passes import PIPELINE, Report, optimize
from cellgen.passes import rules as rules_module
from cellgen.passes.cost import CostModel
from cellgen.passes.rules import ANY, Rule, anchor_of, rewrite
from cellgen.resources import shipped_specs

kernel_embedding = sys.modules["cellgen.passes.kernel_embedding"]

PARAMS = dict(in_channels=3, hidden=8)
RULE_PASSES = {  # pass name → its module's rules (cse builds its rule per run: it keeps a table)
    "sum-fusion": "cellgen.passes.sum_fusion", "same-operand-fusion": "cellgen.passes.same_operand",
    "bias-folding": "cellgen.passes.bias_folding", "concat-split": "cellgen.passes.concat_split",
    "simplify": "cellgen.passes.simplify", "kernel-grouping": "cellgen.passes.kernel_grouping",
    "activation-grouping": "cellgen.passes.activation_grouping", "runtime-forms": "cellgen.passes.runtime_forms",
}
VARIANTS = [dict(level=1), dict(level=2), dict(level=2, enable=["activation-grouping"]),
            dict(level=2, enable=["kernel-embedding"])]


def restart_driver(graph: CellGraph, rules: list[Rule], by_creation: bool = False) -> tuple[CellGraph, list[str]]:
    """The driver as it was: find the first match of the first rule that has one, scanning
    the whole graph in order (or in creation order); apply it; sweep the dead; start again."""
    g = graph.copy()
    notes = []
    while True:
        for rule in rules:
            nodes = sorted(g.nx, key=creation_order) if by_creation else g.order()
            match = next((m for m in (rule.match(g, n) for n in nodes
                                      if ANY in rule.anchor or anchor_of(g, n) in rule.anchor) if m is not None),
                         None)
            if match is not None:
                note = rule.apply(g, match)
                if note:
                    notes.append(note)
                g.remove_dead()
                break
        else:
            return g, notes


def sweep_cse(graph: CellGraph) -> tuple[CellGraph, list[str]]:
    """CSE as it was: one sweep in topological order, each node merged into the first of its key."""
    cse = sys.modules["cellgen.passes.cse"]
    g = graph.copy()
    seen, merged = {}, []
    for node in list(g.order()):
        key = cse._key(g, node)
        if key is None:
            continue
        if key in seen:
            merged.append(g[node]["op"] if g[node]["kind"] == "op" else "const")
            rules_module.replace(g, node, seen[key])
        else:
            seen[key] = node
    g.remove_dead()
    return g, merged


def snapshot(g: CellGraph):
    nodes = {n: repr(sorted(g[n].items(), key=lambda kv: kv[0])) for n in g.nx}
    edges = sorted(g.nx.edges(keys=True))
    return nodes, edges, g.output, dict(g.next_state)


def lowered(spec: str) -> CellGraph:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # OpenSTL's MAUCell reads its input S with num_hidden-input convs: S as wide as T
        return lower_spec(spec, **(PARAMS if spec != "mau" else dict(PARAMS, in_channels=PARAMS["hidden"])))


def _selected(level: int, enable=()):
    enable = set(enable)
    return [p for p in PIPELINE
            if p.name in enable or (p.level <= level and not any(a in enable for a in p.alternatives))]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"O{v['level']}" + "".join(f"+{e}" for e in
                                                                                       v.get("enable", [])))
@pytest.mark.parametrize("spec", shipped_specs())
def test_worklist_reaches_the_restart_drivers_fixed_point(spec, variant):
    g = lowered(spec)
    for info in _selected(variant["level"], variant.get("enable", ())):
        if info.name == "runtime-forms":  # its rules read the analysis' facts
            g = analyze(g.copy())
        if info.name in RULE_PASSES:
            module = sys.modules[RULE_PASSES[info.name]]
            expected, expected_notes = restart_driver(g, module.RULES, by_creation=info.name == "runtime-forms")
            got, notes = rewrite(g, module.RULES, by_creation=info.name == "runtime-forms")
        elif info.name == "cse":
            expected, expected_notes = sweep_cse(g)
            got, notes = rewrite(g, [sys.modules["cellgen.passes.cse"]._rule()])
        else:
            g, _ = info.run(g)
            continue
        assert notes == expected_notes, f"{spec}, {info.name}"
        assert snapshot(got) == snapshot(expected), f"{spec}, {info.name}: a different graph"
        assert got.remove_dead() == 0, f"{spec}, {info.name}: dead nodes left"
        g = got


def test_a_rewrite_revisits_only_what_it_changed_and_its_users():
    """relu(relu(a)) → relu(a) on one chain beside 40 unrelated relus: after the first try, the
    driver tries only nodes of the chain again (the rewritten nodes and their users)."""
    g = CellGraph("chain")
    x = g.add("input", name="x")
    unrelated = [g.add_op("relu", [x]) for _ in range(40)]  # first in the order
    chain = [x]
    for _ in range(4):
        chain.append(g.add_op("relu", [chain[-1]]))
    g.output = chain[-1]
    g.next_state = {f"s{i}": n for i, n in enumerate(unrelated)}
    tried = Counter()

    def match(graph, node):
        tried[node] += 1
        (operand,) = graph.operands(node)
        return node if rules_module.is_op(graph, operand, "relu") else None

    def apply(graph, node):
        graph.replace_uses(node, graph.operands(node)[0])
        return "collapsed"

    rule = Rule("relu(relu(a)) → relu(a)", "relu is idempotent", ("relu",), match, apply)
    after, notes = rewrite(g, [rule])
    assert notes == ["collapsed"] * 3
    assert len(after.ops("relu")) == 41
    assert all(tried[n] == 1 for n in unrelated), "a node the rewrites did not touch was tried again"
    # the old driver tries every one of them again after each of the three rewrites
    tried.clear()
    restart_driver(g, [rule])
    assert all(tried[n] == 4 for n in unrelated)


def test_dead_values_go_with_the_rewrite_and_the_sweep_runs_once_per_pass(monkeypatch):
    """The rewritten chain nodes are gone by the next match (a dead user would block a guard
    that counts users), and `remove_dead` runs once per `rewrite`, not once per rewrite."""
    g = CellGraph("chain")
    x = g.add("input", name="x")
    chain = [x]
    for _ in range(5):
        chain.append(g.add_op("relu", [chain[-1]]))
    g.output = chain[-1]
    seen_dead = []

    def match(graph, node):
        seen_dead.extend(n for n in chain[1:] if n in graph.nx and not graph.users(n) and n not in graph.results())
        return node if rules_module.is_op(graph, graph.operands(node)[0], "relu") else None

    def apply(graph, node):
        graph.replace_uses(node, graph.operands(node)[0])

    sweeps = []
    original = CellGraph.remove_dead
    monkeypatch.setattr(CellGraph, "remove_dead", lambda self: sweeps.append(1) or original(self))
    after, _ = rewrite(g, [Rule("relu(relu(a)) → relu(a)", "idempotent", ("relu",), match, apply)])
    assert seen_dead == []
    assert len(sweeps) == 1
    assert after.ops("relu") == [chain[1]]


@pytest.mark.parametrize("spec", shipped_specs())
def test_no_dead_node_survives_a_pass(spec):
    g = lowered(spec).copy()
    for info in _selected(2):
        g, _ = info.run(g, in_place=True)
        assert g.copy().remove_dead() == 0, f"{spec}: {info.name} left dead nodes"


def counting_runs(runs: Counter) -> list:
    """PIPELINE with each pass counting its runs, by name, in `runs`."""
    return [dataclasses.replace(info, run=lambda g, run=info.run, name=info.name, **kw: runs.update([name]) or
                                run(g, **kw)) for info in PIPELINE]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"O{v['level']}" + "".join(f"+{e}" for e in
                                                                                       v.get("enable", [])))
@pytest.mark.parametrize("spec", shipped_specs())
def test_a_pass_run_again_on_what_it_left_does_nothing(spec, variant):
    """optimize skips a pass on a graph it left at its fixed point, unchanged since
    (`PassInfo.fixed_point`, `CellGraph.version`): each such pass, run again, changes nothing."""
    g = lowered(spec).copy()
    for info in _selected(variant["level"], variant.get("enable", ())):
        g, _ = info.run(g, in_place=True)
        if info.fixed_point:
            before, version = snapshot(g), g.version
            again, notes = info.run(g.copy())
            assert (snapshot(again), notes, again.version) == (before, [], version), f"{spec}: {info.name}"


def test_the_version_counts_every_change_and_a_copy_keeps_it():
    g = lowered("convlstm")
    version = g.version
    conv = g.ops("conv")[0]
    assert g.copy().version == version and g.order() and g.version == version  # reading changes nothing
    twin = g.add_op("conv", g.operands(conv), kernel=g[conv]["kernel"])
    assert g.version == version + 1
    g.replace_uses(conv, twin)
    assert g.version == version + 2
    g.remove([conv])
    assert g.version == version + 3 and g.copy().version == g.version


def test_optimize_skips_a_pass_only_where_it_left_the_graph_unchanged(monkeypatch):
    """PredRNN with CE and SE: the cse after sum fusion (which fuses nothing there) and the
    second simplify are skipped; the report still says each had nothing to do."""
    runs = Counter()
    monkeypatch.setattr(sys.modules["cellgen.passes"], "PIPELINE", counting_runs(runs))
    report = Report()
    optimize(lower_spec("predrnn_ce_se", hidden=64, in_channels=3), 2, report=report)  # one finish (test below)
    names = [name for name, _ in report.lines]
    assert names.count("cse") == 3 and names.count("simplify") == 2
    assert runs["cse"] == 2 and runs["simplify"] == 1 and runs["bias-folding"] == 1
    assert dict(report.lines[names.index("sum-fusion") + 1:][:1]) == {"cse": []}

def test_order_is_cached_until_the_graph_changes():
    g = lowered("predrnn")
    first = g.order()
    assert g.order() is first
    assert first == list(nx.lexicographical_topological_sort(g.nx, key=creation_order))
    conv = g.ops("conv")[0]
    copy = g.add_op("conv", g.operands(conv), kernel=g[conv]["kernel"])
    assert g.order() is not first and copy in g.order()
    g.replace_uses(conv, copy)
    assert g.order() == list(nx.lexicographical_topological_sort(g.nx, key=creation_order))
    g.remove_dead()
    assert conv not in g.order()
    assert g.order() == list(nx.lexicographical_topological_sort(g.nx, key=creation_order))

def reference_evaluation_order(g: CellGraph) -> dict[str, int]:
    """The equations evaluated as written, recursively: each named value in creation order
    (then the results), each operand left to right before its user."""
    position: dict[str, int] = {}

    def visit(node):
        for operand in g.operands(node):
            if operand not in position:
                visit(operand)
        position[node] = len(position)

    named = sorted((n for n in g.nx if g[n]["kind"] == "op" and g[n].get("name")), key=creation_order)
    for start in named + g.results():
        if start not in position:
            visit(start)
    return position


@pytest.mark.parametrize("spec", shipped_specs())
def test_evaluation_order_is_the_equations_evaluated_as_written(spec):
    g = lowered(spec).copy()
    for info in [None, *_selected(2)]:
        if info is not None:
            g, _ = info.run(g, in_place=True)
        assert list(rules_module.evaluation_order(g).items()) == list(reference_evaluation_order(g).items())

@pytest.mark.parametrize("spec", ["predrnn_ce_se", "mimn"])
def test_a_copy_is_networkxs_copy_and_shares_nothing_with_its_original(spec):
    g = lowered(spec)
    before, clone = snapshot(g), g.copy()
    theirs = g.nx.copy()
    assert snapshot(clone) == before and nx.utils.graphs_equal(clone.nx, theirs)
    for node in theirs:  # the same adjacency, in the same order: users() and every walk see the same lists
        assert list(clone.nx._succ[node]) == list(theirs._succ[node])
        assert list(clone.nx._pred[node]) == list(theirs._pred[node])
    assert all(clone.nx._succ[u][v] is clone.nx._pred[v][u] for u, v in clone.nx.edges())
    conv = clone.ops("conv")[0]
    clone[conv]["kernel"] = (7, 7)
    clone.nx.edges[next(iter(clone.nx.in_edges(conv, keys=True)))]["mark"] = 1
    clone.replace_uses(conv, clone.add_op("conv", clone.operands(conv), kernel=(1, 1)))
    clone.remove_dead()
    assert snapshot(g) == before and not any(data for *_, data in g.nx.edges(data=True))
    assert clone.copy().remove_dead() == 0 and snapshot(clone.copy()) == snapshot(clone)


def test_optimize_copies_its_input_once_and_leaves_it_alone(monkeypatch):
    g = lowered("convlstm")
    before = snapshot(g)
    copies = []
    original = CellGraph.copy
    monkeypatch.setattr(CellGraph, "copy", lambda self: copies.append(1) or original(self))
    optimize(g, 1)
    assert len(copies) == 1 and snapshot(g) == before


# --- the kernel-embedding choice ------------------------------------------------------------

# Today's choices (`cellgen compile SPEC -p hidden=H -p in_channels=C --explain`, default cost
# model), for the shipped specs that have kernel groups, before the choice moved to regions
# (the OpenSTL-style specs and PredRNN-V2 and SA-ConvLSTM recorded from main at 26c714a).
SIZES = [(4, 1), (4, 3), (4, 64), (16, 1), (16, 3), (16, 64), (64, 1), (64, 3), (64, 64)]
TODAY = {
    **{spec: {size: ["grouping"] for size in SIZES}
       for spec in ["predrnn_openstl", "predrnn_openstl_ln", "predrnnv2", "predrnnv2_ln", "sa_convlstm"]},
    "mk_convlstm": {size: ["grouping"] for size in [(4, 1), (4, 3), (4, 64), (16, 1), (16, 3), (16, 64), (64, 1),
                                                    (64, 3), (64, 64)]},
    "mk_convlstm_1x1": {(4, 1): ["embedding", "grouping"], (4, 3): ["grouping", "grouping"],
                        (4, 64): ["grouping", "grouping"], (16, 1): ["embedding", "grouping"],
                        (16, 3): ["grouping", "grouping"], (16, 64): ["grouping", "grouping"],
                        (64, 1): ["embedding", "grouping"], (64, 3): ["grouping", "grouping"],
                        (64, 64): ["grouping", "grouping"]},
    "mk_convlstm_flow": {size: ["grouping"] for size in [(4, 1), (4, 3), (4, 64), (16, 1), (16, 3), (16, 64),
                                                         (64, 1), (64, 3), (64, 64)]},
    "predrnn": {size: ["grouping"] for size in [(4, 1), (4, 3), (4, 64), (16, 1), (16, 3), (16, 64), (64, 1),
                                                (64, 3), (64, 64)]},
    "predrnn_ce_se": {size: ["grouping"] for size in [(4, 1), (4, 3), (4, 64), (16, 1), (16, 3), (16, 64),
                                                      (64, 1), (64, 3), (64, 64)]},
}


def _choices(report: Report) -> list[str]:
    (notes,) = [n for name, n in report.lines if name == "kernel-embedding"]
    return [re.search(r"-> (\w+)$", note).group(1) for note in notes]


def test_every_shipped_spec_with_kernel_groups_is_in_the_table():
    with_groups = set()
    for spec in shipped_specs():
        g = optimize(lowered(spec), 0, enable=["cse", "concat-split"])
        if kernel_embedding.kernel_groups(g):
            with_groups.add(spec)
    assert with_groups == set(TODAY)


@pytest.mark.parametrize("spec,size", [(s, (64, 3)) for s in TODAY]
                         + [pytest.param(s, size, marks=pytest.mark.slow) for s in TODAY for size in TODAY[s]
                            if size != (64, 3)])
def test_kernel_embedding_choice_is_todays(spec, size):
    hidden, in_channels = size
    report = Report()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimize(lower_spec(spec, hidden=hidden, in_channels=in_channels), 2, report=report)
    assert _choices(report) == TODAY[spec][size]


def whole_step_choice(graph: CellGraph, finish, model: CostModel) -> list[str]:
    """The choice as it was made: finish the whole step without embedding and with each group
    embedded, and embed a group if that is cheaper."""
    base = model.cost(finish(graph))
    return ["embedding" if model.cost(finish(kernel_embedding.embed(graph, [group]))) < base else "grouping"
            for group in kernel_embedding.kernel_groups(graph)]


MODELS = {"default": CostModel(), "1×16×16 px": CostModel(pixels=16 * 16), "free MACs": CostModel(ns_per_mac=0.0)}


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS, ids=str)
@pytest.mark.parametrize("spec", sorted(TODAY))
def test_region_choice_is_the_whole_step_choice(spec, model):
    selected = _selected(2)
    at = next(i for i, p in enumerate(selected) if p.name == "kernel-embedding")

    def finish(g):
        g = g.copy()
        for info in selected[at + 1:]:
            g, _ = info.run(g, in_place=True)
        return g

    for hidden, in_channels in [(4, 1), (16, 3), (64, 64)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = lower_spec(spec, hidden=hidden, in_channels=in_channels)
        for info in selected[:at]:
            g, _ = info.run(g)
        _, notes = kernel_embedding.choose_kernel_embedding(g, finish, MODELS[model])
        got = [re.search(r"-> (\w+)$", note).group(1) for note in notes]
        assert got == whole_step_choice(g, finish, MODELS[model]), (spec, hidden, in_channels)


@pytest.mark.parametrize("spec,finishes", [("predrnn_ce_se", 1), ("predrnn", 1), ("mk_convlstm_1x1", 3)])
def test_a_group_whose_padding_outweighs_the_rest_is_decided_on_one_finish_of_the_whole_step(spec, finishes):
    """PredRNN's 1×1 conv padded to 5×5 adds more multiply-accumulates than every other op of
    the step costs: the whole step is finished once, without embedding, and that is the step
    optimize keeps. mk_convlstm_1x1's x-side group is small: it is decided on its region, with
    and without (two finishes), then its h-side group on the whole step (one)."""
    graphs, runs = [], Counter()
    passes = sys.modules["cellgen.passes"]
    original = passes._run
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passes, "_run", lambda selected, g: graphs.append(g) or original(selected, g))
        patch.setattr(passes, "PIPELINE", counting_runs(runs))
        report = Report()
        optimize(lower_spec(spec, hidden=64, in_channels=3), 2, report=report)
    (notes,) = [n for name, n in report.lines if name == "kernel-embedding"]
    assert len(graphs) == runs["sum-fusion"] == finishes  # no pass runs again after the choice
    assert "in its convs' multiply-accumulates alone" in notes[-1] and notes[-1].endswith("-> grouping")
    assert "(region)" not in graphs[-1].name  # the step kept was finished from the whole graph
