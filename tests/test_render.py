"""Pictures: DOT of one cell (`cellgen show`) and of a diff, rendered by Graphviz.

Tests that run `dot` are skipped where Graphviz is not installed (CI installs it: .ci/run).
"""
import os
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cellgen  # noqa: E402
from cellgen.passes import optimize  # noqa: E402
from cellgen.resources import shipped_specs  # noqa: E402
from cellgen.tools import render  # noqa: E402
from cellgen.tools.diff import diff_cells, diff_main  # noqa: E402
from cellgen.tools.show import show_main  # noqa: E402

# Skipped on a developer machine without Graphviz, never in CI (which installs it): there a
# missing `dot` must fail, not pass quietly.
needs_dot = pytest.mark.skipif(shutil.which("dot") is None and os.environ.get("CI") != "true",
                               reason="Graphviz `dot` is not installed")
SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"
P = {"in_channels": 3}


def svg_nodes(svg: bytes) -> dict[str, set[str]]:
    """id → classes of every node group in an SVG written by Graphviz (parsed as XML)."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return {g.get("id"): set(g.get("class", "").split()) for g in root.iter(f"{SVG}g")
            if "node" in g.get("class", "").split()}


def labels(svg: bytes) -> set[str]:
    return {"".join(t.itertext()) for t in ET.fromstring(svg).iter(f"{SVG}text")}


def tooltips(svg: bytes) -> dict[str, str]:
    """id → tooltip of every node group (Graphviz writes it as the title of the node's link)."""
    result = {}
    for g in ET.fromstring(svg).iter(f"{SVG}g"):
        if "node" in g.get("class", "").split():
            titles = [a.get(f"{XLINK}title") for a in g.iter(f"{SVG}a") if a.get(f"{XLINK}title")]
            result[g.get("id")] = " ".join(titles)
    return result


def clusters(svg: bytes) -> dict[str, str]:
    """id → label of every cluster (a block of the cell, or a side of a diff)."""
    return {g.get("id"): "".join(t for text in g.findall(f"{SVG}text") for t in text.itertext())
            for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("class") == "cluster"}


# --- one cell ----------------------------------------------------------------------------------

@needs_dot
@pytest.mark.parametrize("level", [0, 2])
@pytest.mark.parametrize("spec", sorted(shipped_specs()))
def test_every_shipped_spec_draws(spec, level):
    """Every named value is a node of its own; every weight is written into (and named in the
    tooltip of) the op or fused-weight box that uses it."""
    graph = cellgen.lower_spec(spec, **(P if spec != "mau" else {"in_channels": 64}))  # MAU: S as wide as T
    if level:
        graph = optimize(graph, level)
    svg = render.run_dot(render.graph_dot(graph), "svg")
    nodes, tips = svg_nodes(svg), tooltips(svg)
    for node, data in graph.nx.nodes(data=True):
        if data.get("name") and data["kind"] != "weight":
            assert f"cell-{data['name']}" in nodes, data["name"]
    mentioned = " ".join(tips.values()).replace(";", " ").replace(",", " ").split()
    for symbol in graph.weights:
        if graph.users(graph.weight_node(symbol)):
            assert symbol in mentioned, symbol
    assert not any(node.startswith("cell-w") and node[6:].isdigit() for node in nodes)  # no weight boxes


@needs_dot
def test_show_writes_svg_and_png(tmp_path, capsys):
    target = tmp_path / "cell.svg"
    assert show_main(["convlstm", "-p", "in_channels=3", "-o", str(target)]) == 0
    nodes = svg_nodes(target.read_bytes())
    assert nodes["cell-i"] >= {"gate"} and nodes["cell-x"] >= {"input"} and nodes["cell-W_xi"] >= {"conv"}
    assert {"c [64]", "W_xi ⋆ 5×5", "64×3×5×5", "+ b_i"} <= labels(target.read_bytes())
    png = tmp_path / "cell.png"
    assert show_main(["predrnn", "-p", "in_channels=3", "-O", "2", "-f", "png", "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert show_main(["convlstm", "-p", "in_channels=3", "-o", str(target)]) == 1  # exists, no --force
    assert "already exists" in capsys.readouterr().err


@needs_dot
def test_optimised_picture_shows_fused_convs(tmp_path):
    target = tmp_path / "o2.svg"
    assert show_main(["convlstm", "-p", "in_channels=3", "-O", "2", "-o", str(target)]) == 0
    text = labels(target.read_bytes())
    assert "fused weight" in text and "fused bias" in text
    assert "W_xi, W_hi" in text  # the fused weight lists the spec's symbols it is made of
    assert sum(1 for t in text if t.startswith("conv ")) == 1  # one conv per step at -O2


def test_dot_format_needs_no_graphviz(monkeypatch, capsys):
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    assert show_main(["convlstm", "-p", "in_channels=3", "--format", "dot"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("digraph cell {") and 'id="cell-W_xi"' in out


def test_missing_graphviz_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    assert show_main(["convlstm", "-p", "in_channels=3"]) == 1
    err = capsys.readouterr().err
    assert "Graphviz's `dot` program is not installed" in err and "apt-get install graphviz" in err
    assert diff_main(["convlstm", "predrnn", "-p", "in_channels=3", "--format", "svg"]) == 2
    assert "not installed" in capsys.readouterr().err


def test_show_errors(capsys, tmp_path):
    assert show_main(["no_such_cell"]) == 1
    assert "no spec named `no_such_cell`" in capsys.readouterr().err
    assert show_main(["convlstm"]) == 1  # in_channels has no default
    assert "in_channels" in capsys.readouterr().err


# --- a diff ------------------------------------------------------------------------------------

@needs_dot
def test_diff_svg_names_the_changed_nodes(tmp_path, capsys):
    target = tmp_path / "diff.svg"
    assert diff_main(["convlstm", "predrnn", "-p", "in_channels=3", "-f", "svg", "-o", str(target)]) == 1
    nodes = svg_nodes(target.read_bytes())
    status = {node: ({"same", "changed", "added", "removed"} & classes).pop() for node, classes in nodes.items()
              if node != "legend"}
    for name in ("m", "g", "i_m", "f_m", "g_m", "m'", "W_o", "W_1x1", "W_xg", "W_mi"):
        assert status[f"b-{name}"] == "added", name
    tips = tooltips(target.read_bytes())
    for name in ("b_i", "b_f", "b_c", "b_o", "W_xc", "W_hc"):
        # a removed weight is written into the op that used it, which is marked and says so
        assert status[f"a-{name}"] in ("changed", "removed"), name
        assert f"{name} removed" in tips[f"a-{name}"], name
    for name in ("i", "f", "o", "c'", "h'"):
        assert status[f"a-{name}"] == status[f"b-{name}"] == "changed", name
    for name in ("x", "h", "c", "W_xi", "W_hi", "W_xo"):
        assert status[f"a-{name}"] == status[f"b-{name}"] == "same", name
    assert all(s != "added" for n, s in status.items() if n.startswith("a-"))
    assert all(s != "removed" for n, s in status.items() if n.startswith("b-"))
    assert set(clusters(target.read_bytes())) == {"cluster-a", "cluster-b"}  # side by side


@needs_dot
def test_diff_svg_of_a_peephole(tmp_path):
    svg = render.run_dot(render.diff_dot(diff_cells("convlstm", "convlstm_peephole", P)), "svg")
    status = {node: classes for node, classes in svg_nodes(svg).items()}
    assert {"op", "added"} <= status["b-W_ci"]  # the new `⊙ W_ci` of the input gate
    assert "⊙ W_ci" in labels(svg)
    assert "changed" in status["a-i"] and "same" in status["a-c'"] and "same" in status["b-h'"]


def test_diff_dot_marks_renames(tmp_path):
    text = (ROOT / "specs" / "convlstm.cell").read_text(encoding="utf-8").replace("W_xi", "W_xin")
    path = tmp_path / "w.cell"
    path.write_text(text, encoding="utf-8")
    dot = render.diff_dot(diff_cells("convlstm", str(path), P))
    assert "W_xin ⋆ 5×5\\n64×3×5×5\\n(A: W_xi)" in dot and 'class="conv changed"' in dot


# --- a large cell ---------------------------------------------------------------------------------

@needs_dot
@pytest.mark.parametrize("level", [0, 2])
def test_cms_lstm_is_readable(tmp_path, level):
    """CMS-LSTM (30 convs, 3 attentions, two blocks): its blocks are labelled clusters holding
    their own values, weights and constants are written into the ops, and the picture stays a
    size one can read (a rank per computation, not per operator)."""
    target = tmp_path / "cms.svg"
    assert show_main(["cms_lstm", "-p", "in_channels=1", "-O", str(level), "-o", str(target)]) == 0
    svg = target.read_bytes()
    root = ET.fromstring(svg)  # well-formed XML
    assert clusters(svg) == {"cell-block-CE": "block CE", "cell-block-SE": "block SE"}
    graph = cellgen.lower_spec("cms_lstm", in_channels=1)
    if level:
        graph = optimize(graph, level)
    dot = render.graph_dot(graph)
    for block, names in (("CE", ("x_1", "h_1", "x_2", "h_2", "x_3")), ("SE", ("S", "Y_1", "Y_4", "A", "i", "o"))):
        body = dot[dot.index(f'subgraph "cluster_cell_{block}"'):]
        body = body[:body.index("\n  }")]
        for name in names:  # in its block's cluster, labelled without the block's prefix
            assert f'id="cell-{block}.{name}"' in body and f'label="{name}\\n' in body, (block, name)
    nodes = svg_nodes(svg)
    assert nodes["cell-SE.c_hat"] >= {"state"} and "c' = c_hat" in labels(svg)  # c' is SE's ĉ
    assert len(nodes) < len(graph.nx) * 2 / 3  # weights, constants and operator runs are folded
    width, height = (float(root.get(side).removesuffix("pt")) for side in ("width", "height"))
    assert width <= 1600 and height <= 3600, (width, height)  # about 22 × 50 in at 72 pt/in
    assert len(svg) < 250_000



def big_spec(memories=("c", "m", "n", "p")) -> str:
    """A cell about CMS-LSTM's size at -O0: 4 memories × 3 gates × 4 convs + an output gate."""
    lines = ['cell Big "synthetic"', "  param in_channels = 3", "  param hidden = 16", "  input x[in_channels]",
             "  state h[hidden], " + ", ".join(f"{m}[hidden]" for m in memories), "  weights",
             "    W_* : conv 3×3", "    b_* : bias"]
    for m in memories:
        for gate, act in (("i", "σ"), ("f", "σ"), ("g", "tanh")):
            terms = f"W_x{gate}{m} ⋆ x + W_h{gate}{m} ⋆ h + W_{m}{gate}{m} ⋆ {m} + b_{gate}{m}"
            lines.append(f"  {gate}_{m} = {act}({terms})")
        lines.append(f"  {m}' = f_{m} ⊙ {m} + i_{m} ⊙ g_{m}")
    nexts = ", ".join(f"{m}'" for m in memories)
    lines += [f"  o = σ(W_xo ⋆ x + W_ho ⋆ h + W_co ⋆ [{nexts}] + b_o)", f"  h' = o ⊙ tanh(W_1x1 ⋆ [{nexts}])"]
    return "\n".join(lines) + "\n"


@needs_dot
def test_a_large_cell_draws_quickly_with_every_name(tmp_path):
    spec = tmp_path / "big.cell"
    spec.write_text(big_spec(), encoding="utf-8")
    graph = cellgen.lower_spec(str(spec))
    assert len(graph.nx) > 150
    start = time.monotonic()
    svg = render.run_dot(render.graph_dot(graph), "svg")
    assert time.monotonic() - start < 60
    nodes = svg_nodes(svg)
    for name in ("i_c", "f_m", "g_n", "p'", "o", "h'", "W_xgp", "b_fn"):
        assert f"cell-{name}" in nodes
