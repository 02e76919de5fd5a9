"""Pictures of cells: a cell graph (or two, side by side, for a diff) as Graphviz DOT, and
`dot` run on it for SVG or PNG. It reads graphs (and a diff's result) only: the commands that
draw, `cellgen show` (cellgen/tools/show.py) and `cellgen diff --format svg`, call it.

One node per computation of the graph, shaped by what it is:

    input x, state c, c[t-τ:t-1]   rounded boxes (blue, yellow); a state's next value c' is doubled
    gate (a named value)           an ellipse with its name and op: `i  σ`
    conv                           a green box with its weight, kernel and shape: `W_xi ⋆ 5×5`
    +, ⊙, tanh, …                  small circles (anonymous intermediate values); a run of them,
                                   each feeding only the next, is one box listing them in order
    fused weight (-O1, -O2)        a grey box listing the symbols it is built from

Weights, biases, LayerNorms and constants are written into the op that uses them (`+ b_i`,
`⊙ W_ci`, `LayerNorm LN_c`, `⊙ 2.0`), so a large cell (CMS-LSTM) has a rank per computation,
not per operator. The values of an inlined block (`CE.x_1`, `SE.i`) are drawn in a cluster
labelled with the block. In a diff the fill says what happened to a value: white same, amber
changed, green added, red removed; SVG nodes carry the class `same|changed|added|removed` and
an id `a-NAME` / `b-NAME` (`a-SYMBOL` for the op that uses a weight), and their tooltips name
the weights written into them and what happened to each.

Graphviz (`dot`) must be installed for svg and png; `--format dot` needs nothing.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import networkx as nx

from cellgen import files
from cellgen.errors import CellgenError
from cellgen.ir.graph import CellGraph
from cellgen.ir.ops import COMMUTATIVE, OPS, in_group
from cellgen.tools.stats import first_named

FONT = "DejaVu Sans,Helvetica,Arial,sans-serif"

_KIND_FILL = {"input": "#cfe2f3", "state": "#fff2cc", "weight": "#eeeeee", "conv": "#d9ead3", "gate": "#e8e0f0",
              "op": "#ffffff", "const": "#ffffff"}
_STATUS_STYLE = {  # fill, border
    "same": ("#ffffff", "#666666"),
    "changed": ("#ffe599", "#b45f06"),
    "added": ("#b6d7a8", "#274e13"),
    "removed": ("#f4cccc", "#990000"),
}
_SYMBOLS = {definition.symbol for definition in OPS.values() if definition.symbol}
_ORDERED_SHOWN = in_group("ordered")  # ops whose operand order is drawn on the edges
_CHAIN_OPS = in_group("chain")  # small ops drawn as one box when each feeds only the next


# --- DOT for one graph -------------------------------------------------------------------------------

def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(**attrs) -> str:
    return "[" + " ".join(f"{key}={_quote(str(value))}" for key, value in attrs.items() if value is not None) + "]"


def _dims(values) -> str:
    return "×".join(map(str, values))


class _Painter:
    """The DOT statements of one cell graph; node names get `prefix` so two graphs can share a
    picture, and `status` (node → same|changed|added|removed) colours a diff.

    Weights, biases and constants are written into the label of the op that uses them
    (`W_xi ⋆ 5×5`, `+ b_i`, `⊙ 2.0`, `LN_c`) rather than drawn as nodes of their own: a cell's
    picture then has one node per computation, half as many ranks, and no long edges from a
    shared constant. Ops that compute only from weights and constants (an optimised graph
    builds its fused weights and biases in the step: `weight_cat`, `fill`, `pad_kernel`, …)
    are drawn as one box per tree, listing the spec's symbols it is made of; a bias's
    broadcast view is not drawn. Values of an inlined block (`CE.x_1`, `SE.i`) are drawn in
    a cluster named after the block, with the block's prefix dropped from their labels.
    """

    def __init__(self, graph: CellGraph, prefix: str, status: Optional[dict[str, str]] = None,
                 notes: Optional[dict[str, str]] = None):
        self.graph = graph
        self.prefix = prefix
        self.status = status
        self.notes = notes or {}  # node → an extra label line (a rename)
        self.next_values = {node: state for state, node in graph.next_state.items() if graph[node]["kind"] == "op"}
        dynamic = set()
        for source in (*graph.inputs.values(), *graph.state_nodes.values()):
            dynamic |= {source} | nx.descendants(graph.nx, source)
        self.static_ops = {n for n in graph.nx if n not in dynamic and graph[n]["kind"] == "op"}
        drawn = [n for n in graph.order() if self._drawn(n)]
        self.head = self._chains(drawn)  # drawn node → the node drawn for it (itself, or its chain's first)
        self.members: dict[str, list[str]] = {}
        for node in drawn:
            self.members.setdefault(self.head[node], []).append(node)
        self.drawn = [n for n in drawn if self.head[n] == n]
        self.blocks = {node: _block_of(graph, node) for node in self.drawn}
        self.ids = self._ids()

    def _chains(self, drawn: list[str]) -> dict[str, str]:
        """Runs of anonymous elementwise ops, each the only user of the one before (`+ b_i`,
        then `σ`, then `⊙ 2.0`), are drawn as one box listing them in order: a picture of a
        large cell gets a rank per computation, not per operator."""
        graph, shown = self.graph, set(drawn)
        head = {}
        for node in drawn:
            head[node] = node
            if not self._chainable(node):
                continue
            sources = [s for s in (self._source(o) for o in graph.operands(node)) if s in shown]
            if len(sources) != 1 or not self._chainable(sources[0]):
                continue
            previous = sources[0]
            if [u for u in graph.users(previous) if u in shown] == [node]:
                head[node] = head[previous]
        return head

    def _chainable(self, node: str) -> bool:
        data = self.graph[node]
        return (data["kind"] == "op" and not data.get("name") and data.get("op") in _CHAIN_OPS
                and node not in self.next_values and not self._is_output(node) and node not in self.static_ops)

    def _is_output(self, node: str) -> bool:
        """The step's output, or one of its further outputs (`output h', delta_c, delta_m`)."""
        return node == self.graph.output or node in self.graph.extra_outputs.values()

    def _drawn(self, node: str) -> bool:
        data = self.graph[node]
        if data.get("op") == "channel_view" or data["kind"] == "weight":
            return False
        if data["kind"] == "const":
            return not self.graph.users(node)  # a constant is written into the op that uses it
        if node in self.static_ops:
            # a parameter-only value is drawn where it meets the step's data (or nowhere else)
            return any(u not in self.static_ops or self.graph[u].get("op") == "channel_view"
                       for u in self.graph.users(node)) or not self.graph.users(node)
        return True

    def _ids(self) -> dict[str, str]:
        """SVG ids: `PREFIX-NAME` for a named value; an anonymous op that uses a weight is named
        after it (`a-W_xi`, `a-b_i`; a weight used twice: `a-CE.W_H`, `a-CE.W_H@2`)."""
        ids, used = {}, set()
        for node in self.drawn:
            name = self.graph[node].get("name")
            folded = [w for m in self.members[node] for w, _ in self.folded(m) if self.graph[w]["kind"] == "weight"]
            base = f"{self.prefix}-{name}" if name else (
                f"{self.prefix}-{self.graph[folded[0]]['name']}" if folded else f"{self.prefix}-{node}")
            candidate, count = base, 1
            while candidate in used:
                count += 1
                candidate = f"{base}@{count}"
            used.add(candidate)
            ids[node] = candidate
        return ids

    def dot_id(self, node: str) -> str:
        return f"{self.prefix}.{node}"

    def svg_id(self, node: str) -> str:
        return self.ids.get(node) or f"{self.prefix}-{self.graph[node].get('name') or node}"

    def _source(self, node: str) -> str:
        while self.graph[node].get("op") == "channel_view":
            node = self.graph.operands(node)[0]
        return node

    def folded(self, node: str) -> list[tuple[str, int]]:
        """(weight or constant, port) written into `node`'s label instead of drawn."""
        if node in self.static_ops or self.graph[node]["kind"] != "op":
            return []
        result = []
        for port, operand in enumerate(self.graph.operands(node)):
            source = self._source(operand)
            if self.graph[source]["kind"] in ("weight", "const"):
                result.append((source, port))
        return result

    def statements(self) -> list[str]:
        graph = self.graph
        lines = [f"{_quote(self.dot_id(node))} {self._node_attrs(node)}" for node in self.drawn
                 if self.blocks[node] is None]
        for block in dict.fromkeys(b for b in self.blocks.values() if b is not None):
            lines.append(f"subgraph {_quote(f'cluster_{self.prefix}_{block}')} {{")
            lines.append("  graph " + _attrs(label=f"block {block}", id=f"{self.prefix}-block-{block}",
                                            labeljust="l", style="rounded,dashed", color="#8e7cc3",
                                            fontcolor="#674ea7", fontsize="12"))
            lines += [f"  {_quote(self.dot_id(node))} {self._node_attrs(node)}" for node in self.drawn
                      if self.blocks[node] == block]
            lines.append("}")
        for node in (m for head in self.drawn for m in self.members[head]):
            if node in self.static_ops:
                continue  # its operands are listed in its label
            operands = graph.operands(node)
            show_port = graph[node].get("op") in _ORDERED_SHOWN and len(operands) > 1
            for port, operand in enumerate(operands):
                source = self.head.get(self._source(operand))
                if source is None or source == self.head[node]:
                    continue  # a weight or constant (in the label), or the op before it in its box
                parameter = source in self.static_ops
                lines.append(f"{_quote(self.dot_id(source))} -> {_quote(self.dot_id(self.head[node]))} " + _attrs(
                    color="#999999" if parameter else None, arrowsize="0.5" if parameter else None,
                    headlabel=str(port + 1) if show_port else None, labelfontsize="8" if show_port else None))
        sources = [self.dot_id(n) for n in (*graph.inputs.values(), *graph.state_nodes.values())]
        if sources:
            lines.append("{rank=min; " + " ".join(_quote(s) for s in sources) + "}")
        return lines

    def _node_attrs(self, node: str) -> str:
        data = self.graph[node]
        shape, role, text = self._look(node)
        folded = [w for m in self.members.get(node, [node]) for w, _ in self.folded(m)]
        for note in (self.notes.get(n) for n in (node, *folded)):
            if note:
                text += f"\n{note}"
        attrs = {"label": text, "id": self.svg_id(node), "shape": shape}
        fill, border = _KIND_FILL[role], "#444444"
        status = None
        if self.status is not None:
            status = self._status(node)
            fill, border = _STATUS_STYLE[status]
        attrs["class"] = " ".join(x for x in (role, status) if x)
        attrs["tooltip"] = self._tooltip(node, status)
        attrs["fillcolor"], attrs["color"] = fill, border
        style = ["filled"]
        if data["kind"] in ("input", "state", "history") or node in self.next_values:
            style.append("rounded")
        if node in self.next_values or self._is_output(node):
            style.append("bold")
            attrs["peripheries"] = "2" if node in self.next_values else None
        if shape == "plaintext":
            style = []
        attrs["style"] = ",".join(style) or None
        if role == "weight" or data["kind"] == "const":
            attrs.update(fontsize="9", height="0.2", margin="0.04,0.02")
        elif role == "op":
            attrs.update(fontsize="11", width="0.3", height="0.3", margin="0.04,0.02")
        return _attrs(**attrs)

    def _status(self, node: str) -> str:
        """A node's status in a diff; one that is the same but uses a weight that was added,
        removed or changed (it is written into its label) counts as changed."""
        statuses = [self.status.get(m, "same") for m in self.members.get(node, [node])]
        status = statuses[0] if len(set(statuses)) == 1 else "changed"
        folded = [w for m in self.members.get(node, [node]) for w, _ in self.folded(m)
                  if self.graph[w]["kind"] == "weight"]
        if status == "same" and any(self.status.get(w, "same") != "same" for w in folded):
            return "changed"
        return status

    def _tooltip(self, node: str, status: Optional[str]) -> str:
        """The node's name or op, its status, and the full symbol of every weight in its label."""
        data = self.graph[node]
        text = f"{data.get('name') or data.get('op') or data['kind']}" + (f": {status}" if status else "")
        if node in self.static_ops:
            leaves = [self.graph[n]["name"] for n in sorted(nx.ancestors(self.graph.nx, node) | {node}, key=_creation)
                      if self.graph[n]["kind"] == "weight"]
            return text + "; fused from " + ", ".join(leaves)
        for weight, _ in (f for m in self.members.get(node, [node]) for f in self.folded(m)):
            if self.graph[weight]["kind"] == "weight":
                text += f"; {self.graph[weight]['name']}" + (f" {self.status.get(weight, 'same')}" if status else "")
        return text

    def _short(self, node: str, name: Optional[str]) -> Optional[str]:
        """A name as shown inside its block's cluster: `SE.i` → `i`."""
        block = self.blocks.get(self.head.get(node, node))
        if name and block and name.startswith(f"{block}."):
            return name[len(block) + 1:]
        return name

    def _look(self, node: str) -> tuple[str, str, str]:
        """(shape, role, label) of a node."""
        graph, data = self.graph, self.graph[node]
        kind, name = data["kind"], self._short(node, data.get("name"))
        if kind == "input":
            window = graph.input_windows.get(data.get("name"))
            return "box", "input", f"{name} [{data['channels']}]" + (f"\nwindow {window}" if window else "")
        if kind == "state":
            info = graph.states.get(name)
            extra = "".join(f"\n{key}" if value is True else f"\n{key} {value}" for key, value in
                            (vars(info).items() if info else ()) if key not in ("name", "channels", "history",
                                                                                "history_size") and value)
            if info and info.history:
                extra += f"\nhistory {info.history_size or '∞'}"
            if graph.next_state.get(name) == node:
                extra += f"\nnever updated ({name}' = {name})"
            return "box", "state", f"{name} [{data['channels']}]{extra}"
        if kind == "history":
            return "box", "state", f"{name}\npast values of {data.get('state')}"
        if kind == "const":
            return "plaintext", "const", _number(data.get("value"))
        if node in self.static_ops:
            return "box", "weight", self._fused_label(node)
        symbol = self._op_label(node)
        if node in self.next_values or self._is_output(node):
            state = self.next_values.get(node)
            title = f"{state}'" if state else (name or "")
            if name and name != title:
                title += f" = {name}"
            tail = " (output)" if self._is_output(node) else ""
            return "box", "state", f"{title}{tail}\n{symbol}"
        if data.get("op") == "conv":
            return "box", "conv", f"{name}\n{symbol}" if name else symbol
        if name:
            return "ellipse", "gate", f"{name}\n{symbol}"
        members = self.members.get(node, [node])
        if len(members) > 1:
            return "box", "op", "\n".join(self._op_label(m) for m in members)
        if symbol in _SYMBOLS or len(symbol) <= 3:
            return "circle", "op", symbol
        return "box", "op", symbol

    def _op_label(self, node: str) -> str:
        """What an op computes, with the weights and constants it uses written in:
        `W_xi ⋆ 5×5` (and the weight's shape), `+ b_i`, `1.0 − ·`, `LayerNorm LN_c`."""
        graph, data = self.graph, self.graph[node]
        op, folded = data.get("op", "?"), dict((port, w) for w, port in self.folded(node))
        if op == "conv":
            parts = data.get("parts", 1)  # the weight's port (see ops.conv_operands)
            weight = folded.get(parts)
            if weight is None:
                return _op_text(data)
            info = graph.weights.get(graph[weight]["name"])
            shape = f"\n{_dims(info.shape)}" if info else ""
            bias = f"\n+ {self._operand_text(node, folded[parts + 1])}" if parts + 1 in folded else ""
            return f"{self._short(node, graph[weight]['name'])} ⋆ {_dims(data.get('kernel') or ())}{shape}{bias}"
        if op == "layernorm":
            return f"LayerNorm\n{self._short(node, data.get('symbol'))}"
        if op == "attention":
            patches = data.get("patches", 1)
            return "attention" + (f"\n{patches}×{patches} patches" if patches > 1 else "")
        symbol = _op_text(data)
        if not folded:
            return symbol
        texts = {port: self._operand_text(node, w) for port, w in folded.items()}
        if op in COMMUTATIVE:  # operand order says nothing: `+ b_i`
            return " ".join([symbol, *texts.values()])
        operands = graph.operands(node)
        if len(operands) == 2 and op in OPS and OPS[op].symbol:
            return f" {symbol} ".join(texts.get(port, "·") for port in range(len(operands)))
        return f"{symbol}(" + ", ".join(texts.get(port, "·") for port in range(len(operands))) + ")"

    def _operand_text(self, node: str, operand: str) -> str:
        data = self.graph[operand]
        return _number(data.get("value")) if data["kind"] == "const" else self._short(node, data.get("name")) or "?"

    def _fused_label(self, node: str) -> str:
        """A weight or bias built in the step: its role, one line per part, then its shape."""
        graph = self.graph
        role = "parameter"
        for _, user, port in graph.nx.out_edges(node, keys=True):
            if graph[user].get("op") == "conv" and user not in self.static_ops:
                parts = graph[user].get("parts", 1)  # the weight's port (see ops.conv_operands)
                role = {parts: "weight", parts + 1: "bias"}.get(port, role)
        steps = sorted({graph[n]["op"] for n in nx.ancestors(graph.nx, node) | {node}
                        if n in self.static_ops} - {"weight_cat", "fill", "channel_view"})
        lines = [f"fused {role}" + (f" ({', '.join(steps)})" if steps else ""),
                 *(self._parts(node, operand) for operand in graph.operands(node))]
        shape = graph[node].get("shape")
        if shape:
            lines.append(_dims(shape))
        return "\n".join(lines)

    def _parts(self, box: str, node: str) -> str:
        """One line of a fused weight's box (`box`): a symbol, a constant, or what a part is made of."""
        graph, data = self.graph, self.graph[node]
        if data["kind"] == "weight":
            return self._short(box, data.get("name")) or "weight"
        if data["kind"] == "const":
            return _number(data.get("value"))
        if data.get("op") == "fill":
            return f"{_number(data.get('value'))} ×{data.get('size', '')}"
        leaves = [self._short(box, graph[n]["name"]) for n in sorted(nx.ancestors(graph.nx, node), key=_creation)
                  if graph[n]["kind"] == "weight" and graph[n].get("name")]
        return ", ".join(leaves) if leaves else data.get("op", "?")


def _block_of(graph: CellGraph, node: str) -> Optional[str]:
    """The inlined block a drawn node belongs to: the prefix of its name (`SE` of `SE.i`), or,
    for an anonymous op, the one block of every named value it feeds first."""
    data = graph[node]
    if data["kind"] != "op":
        return None
    if data.get("name"):
        return _prefix(data["name"])
    blocks = {_prefix(graph[n]["name"]) for n in first_named(graph, node)}
    return blocks.pop() if len(blocks) == 1 else None


def _prefix(name: str) -> Optional[str]:
    head, dot, _ = name.partition(".")
    return head if dot and head else None


def _creation(node: str) -> int:
    return int(node[1:]) if node[1:].isdigit() else 0


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:g}" if not value.is_integer() else f"{value:.1f}"
    return str(value)


def _op_text(data: dict) -> str:
    op = data.get("op", "?")
    if op == "conv":
        return f"conv {_dims(data.get('kernel') or ())}"
    if op == "slice" and "start" in data:
        return f"slice {data['start']}:{data.get('stop', '')}"
    return OPS[op].shown if op in OPS else op


def _header(title: Optional[str] = None) -> list[str]:
    lines = ["digraph cell {",
             f"  graph {_attrs(fontname=FONT, rankdir='TB', nodesep='0.25', ranksep='0.35', newrank='true')}",
             f"  node {_attrs(fontname=FONT, fontsize='11')}",
             f"  edge {_attrs(fontname=FONT, arrowsize='0.7')}"]
    if title:
        lines.append(f"  graph {_attrs(label=title, labelloc='t', fontsize='14')}")
    return lines


def graph_dot(graph: CellGraph, title: Optional[str] = None) -> str:
    """DOT source of one cell graph."""
    body = _Painter(graph, "cell").statements()
    return "\n".join(_header(title or picture_title(graph)) + [f"  {line}" for line in body] + ["}"]) + "\n"


def picture_title(graph: CellGraph, origin: Optional[str] = None, opt_level: Optional[int] = None) -> str:
    parts = [graph.name]
    if origin:
        parts.append(f"({origin})")
    if opt_level is not None:
        parts.append(f"-O{opt_level}")
    return " ".join(parts)


# --- DOT for a diff ----------------------------------------------------------------------------------

def diff_dot(diff) -> str:
    """DOT source of a CellDiff: A and B side by side, coloured by what happened to each value."""
    al = diff.alignment
    renamed_b = {nb: f"(A: {al.a[na]['name']})" for na, nb in al.renamed()}
    renamed_a = {na: f"(B: {al.b[nb]['name']})" for na, nb in al.renamed()}
    lines = _header()
    for prefix, graph, side, status, notes in (("a", al.a, diff.a, diff.status_a, renamed_a),
                                               ("b", al.b, diff.b, diff.status_b, renamed_b)):
        lines.append(f"  subgraph cluster_{prefix} {{")
        cluster = _attrs(label=f"{prefix.upper()}: {side.name}  ({side.origin})", labeljust="l", style="rounded",
                         color="#bbbbbb", fontsize="14", id=f"cluster-{prefix}")
        lines.append(f"    graph {cluster}")
        lines += [f"    {line}" for line in _Painter(graph, prefix, status, notes).statements()]
        lines.append("  }")
    lines += [f"  {line}" for line in _legend()]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _legend() -> list[str]:
    cells = "".join(f'<TD BGCOLOR="{fill}" BORDER="1" COLOR="{border}">{status}</TD>'
                    for status, (fill, border) in _STATUS_STYLE.items())
    return ['legend [shape=plaintext id="legend" label=<<TABLE BORDER="0" CELLSPACING="4"><TR>'
            f"{cells}</TR></TABLE>>]"]


# --- running Graphviz ----------------------------------------------------------------------------------

def dot_binary() -> str:
    path = shutil.which("dot")
    if path is None:
        raise CellgenError("cannot draw a picture: Graphviz's `dot` program is not installed",
                           hint="install Graphviz (Debian/Ubuntu: `apt-get install graphviz`; macOS: "
                                "`brew install graphviz`), or ask for `--format dot` and render it elsewhere")
    return path


def run_dot(source: str, fmt: str) -> bytes:
    """`dot -T{fmt}` on DOT source; the rendered bytes."""
    try:
        done = subprocess.run([dot_binary(), f"-T{fmt}"], input=source.encode("utf-8"), capture_output=True,
                              timeout=120)
    except subprocess.TimeoutExpired:
        raise CellgenError("Graphviz `dot` took more than two minutes; giving up") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip()
        raise CellgenError(f"Graphviz `dot -T{fmt}` failed: {message or f'exit status {done.returncode}'}")
    return done.stdout


def emit(source: str, fmt: str, output: Optional[str], *, force: bool = False) -> None:
    """Write DOT source as `fmt` (dot, svg or png) to `output`, or to stdout."""
    data = source.encode("utf-8") if fmt == "dot" else run_dot(source, fmt)
    if output is None and fmt == "png" and sys.stdout.isatty():
        raise CellgenError("refusing to write a PNG to the terminal", hint="pass -o FILE.png, or redirect stdout")
    write_output(data, output, force=force)


def write_output(data, output: Optional[str], *, force: bool = False) -> None:
    """Text or bytes to stdout, or atomically to a file (refusing to replace one without --force)."""
    if output is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data.encode("utf-8") if isinstance(data, str) else data)
        sys.stdout.buffer.flush()
        return
    files.write_output_file(Path(output), data, force=force)
