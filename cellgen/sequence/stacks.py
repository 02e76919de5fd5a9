"""Heterogeneous stacks: layers of different specs, and cells between layers (docs/stacks.md).

Two OpenSTL models are not stacks of one cell:

- PredRNN++ runs its first Causal LSTM, then a gradient highway unit (GHU) whose output z the
  second layer reads instead of h⁰: `StackPlan(("predrnnpp",) * 4, between={0: "ghu"})`;
- MIM's first layer is an ST-LSTM, the others MIM blocks, and a chain of MIM-N cells gives
  each block its second input d (the first reads h⁰_t − h⁰_{t−1}, each next one the chain
  below; nothing before t = 1): `StackPlan(("predrnn_openstl", "mim", "mim"), diff_chain="mimn")`.

A plan names specs; `build_plan` compiles them for the sequence model's geometry. Each cell
gets the user's params that its spec declares (a param no spec of the plan declares is an
error), its input channels from what it reads, and `height`/`width` from the map size, as a
plain stack does (cells.py). `MODELS` holds the two models by name, with their LayerNorm
variants, so that a user says `--model predrnnpp` rather than the plan.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence, Union

import cellgen
from cellgen.errors import CellgenError, did_you_mean
from cellgen.runtime.stack import CellStack
from cellgen.sequence.cells import SPATIAL_PARAMS, BuiltStack, spec_interface


@dataclass(frozen=True)
class StackPlan:
    """What a heterogeneous stack is made of, by spec name (or path, or text)."""

    layers: tuple[str, ...]                               # the spec of each layer, bottom first
    between: Mapping[int, str] = field(default_factory=dict)  # {l: spec}: after layer l, read by layer l+1
    diff_chain: Optional[str] = None                      # MIM's MIM-N chain: layer l ≥ 1's second input

    def specs(self) -> list[str]:
        """Every spec the plan names, once, in order of appearance."""
        names = list(self.layers) + [self.between[i] for i in sorted(self.between)]
        if self.diff_chain:
            names.append(self.diff_chain)
        return list(dict.fromkeys(names))


def _predrnnpp(suffix: str) -> Callable[[int], StackPlan]:
    return lambda layers: StackPlan((f"predrnnpp{suffix}",) * layers, {0: "ghu"})


def _mim(suffix: str) -> Callable[[int], StackPlan]:
    return lambda layers: StackPlan((f"predrnn_openstl{suffix}",) + (f"mim{suffix}",) * (layers - 1),
                                    diff_chain=f"mimn{suffix}")


# OpenSTL's PredRNNpp_Model and MIM_Model; `_ln`: configs.layer_norm = 1 (OpenSTL's GHU has no
# working LayerNorm, so PredRNN++'s highway is `ghu` in both)
MODELS: dict[str, Callable[[int], StackPlan]] = {
    "predrnnpp": _predrnnpp(""), "predrnnpp_ln": _predrnnpp("_ln"),
    "mim": _mim(""), "mim_ln": _mim("_ln"),
}


def model_plan(name: str, layers: int) -> StackPlan:
    """The plan of the model `name` (MODELS) with `layers` layers."""
    if name not in MODELS:
        raise CellgenError(f"no model named `{name}`",
                           hint=did_you_mean(name, list(MODELS)) or f"models: {', '.join(MODELS)}")
    if layers < 2:
        raise CellgenError(f"model {name} needs at least 2 layers, not {layers}",
                           hint="its cells between layers sit between layers 0 and 1 (OpenSTL's model fails with one)")
    return MODELS[name](layers)


# --- the command line's words for a plan ----------------------------------------------------

def parse_layers(text: Union[str, int]) -> Union[int, tuple[str, ...]]:
    """`--layers 4` → 4; `--layers predrnn_openstl,mim,mim` → the specs of the layers."""
    if isinstance(text, int):
        return text
    text = text.strip()
    if text.isdigit():
        return int(text)
    names = tuple(name.strip() for name in text.split(","))
    if not text or any(not name for name in names):
        raise CellgenError(f"--layers expects a number of layers or a comma-separated list of specs, not `{text}`",
                           hint="e.g. --layers 4, or --layers predrnn_openstl,mim,mim")
    return names


def parse_between(items: Sequence[str]) -> dict[int, str]:
    """`["0:ghu"]` → {0: "ghu"}: the cell after layer 0, which layer 1 reads."""
    between: dict[int, str] = {}
    for item in items:
        index, sep, spec = item.partition(":")
        if not sep or not index.strip().isdigit() or not spec.strip():
            raise CellgenError(f"--between expects LAYER:SPEC, not `{item}`",
                               hint="e.g. --between 0:ghu (a GHU after layer 0, read by layer 1)")
        if int(index) in between:
            raise CellgenError(f"--between names two cells after layer {int(index)}: "
                               f"{between[int(index)]} and {spec.strip()}")
        between[int(index)] = spec.strip()
    return between


# --- compiling a plan ------------------------------------------------------------------------

@dataclass
class _Spec:
    source: str                 # what cellgen.compile reads (a name, path or text)
    name: str                   # for messages
    interface: object           # SpecInterface


def build_plan(plan: StackPlan, texts: Mapping[str, str], params: Mapping[str, int], in_channels: int,
               map_size: Optional[tuple[int, int]], opt_level: int = 2) -> BuiltStack:
    """Compile the plan's cells for a bottom input of `in_channels` on `map_size` maps (None:
    `height` and `width` are params like any other, as `compile_stack` takes them).

    `texts` maps each spec name of the plan to its source (a checkpoint's copy); a name
    missing there is loaded as `cellgen.load_spec` finds it."""
    check_plan_shape(plan)
    specs = {name: _Spec(texts.get(name, name), name, spec_interface(texts.get(name, name))) for name in plan.specs()}
    declared = {p for spec in specs.values() for p in spec.interface.declared_params}
    for name in params:
        if name not in declared:
            raise CellgenError(f"--param {name}: no spec of this stack ({', '.join(specs)}) has a param `{name}`",
                               hint=did_you_mean(name, sorted(declared)) or f"params: {', '.join(sorted(declared))}")

    def compile_one(name: str, channels: int, role: str):
        spec = specs[name]
        own = {k: v for k, v in params.items() if k in spec.interface.declared_params}
        if spec.interface.channel_param in own:
            raise CellgenError(f"--param {spec.interface.channel_param} is set by the stack (the channels {role} "
                               f"reads: {channels})", hint=f"leave out --param {spec.interface.channel_param}")
        own[spec.interface.channel_param] = channels
        for param, size in zip(SPATIAL_PARAMS, map_size or ()):
            if param in spec.interface.declared_params:
                if param in params and params[param] != size:
                    raise CellgenError(f"--param {param}={params[param]} does not match the maps the cells run on: "
                                       f"{size} (the frame size divided by the patch size)",
                                       hint=f"leave out --param {param}: the sequence model sets it")
                own[param] = size
        return cellgen.compile(spec.source, opt_level=opt_level, **own)

    layers, between, chain = [], {}, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a warning would repeat for every layer of a spec
        channels = in_channels
        for index, name in enumerate(plan.layers):
            layer = compile_one(name, channels, f"layer {index}")
            layers.append(layer)
            channels = layer.out_channels
            if index in plan.between:
                cell = compile_one(plan.between[index], channels, f"the cell between layers {index} and {index + 1}")
                between[index] = cell
                channels = cell.out_channels
        if plan.diff_chain:
            channels = layers[0].out_channels
            for index in range(len(layers) - 1):
                cell = compile_one(plan.diff_chain, channels, f"difference-chain cell {index}")
                chain.append(cell)
                channels = cell.out_channels
    extra = _check_wiring(plan, layers, between, chain)
    first = layers[0]
    return BuiltStack(CellStack(layers, between, chain), extra, int(getattr(first, "input_window", 1) or 1),
                      int(first.cell_graph.spatial_dims), int(layers[-1].out_channels))


def check_plan_shape(plan: StackPlan) -> None:
    """The plan's indices fit its layers (before anything is compiled)."""
    count = len(plan.layers)
    if count < 1:
        raise CellgenError("a stack needs at least one layer")
    for index in sorted(plan.between):
        if not 0 <= index < count - 1:
            raise CellgenError(f"a cell between layers {index} and {index + 1}: the stack has layers 0 … {count - 1}",
                               hint=f"--between takes LAYER:SPEC with LAYER in 0 … {count - 2}" if count > 1 else
                               "a cell between layers needs at least 2 layers")
    if plan.diff_chain and count < 2:
        raise CellgenError("a difference chain runs between layers: the stack needs at least 2 layers")


def _inputs(cell) -> list[tuple[str, int]]:
    graph = cell.cell_graph
    return [(name, graph[node]["channels"]) for name, node in graph.inputs.items()]


def _name(cell) -> str:
    return cell.cell_graph.name


def _check_wiring(plan: StackPlan, layers: list, between: dict, chain: list) -> list[tuple[str, int]]:
    """Every input of every cell has a source, zigzags agree; returns the stack's extra inputs."""
    zigzag = list(layers[0].zigzag_states)
    for index, layer in enumerate(layers):
        if list(layer.zigzag_states) != zigzag:
            raise CellgenError(f"layer {index} ({_name(layer)}) has zigzag states {list(layer.zigzag_states) or 'none'}, "
                               f"layer 0 ({_name(layers[0])}) {zigzag or 'none'}: one zigzag memory runs through "
                               "every layer, so the layers must agree on it")
        if layer.cell_graph.spatial_dims != layers[0].cell_graph.spatial_dims:
            raise CellgenError(f"layer {index} ({_name(layer)}) is {layer.cell_graph.spatial_dims}D, layer 0 "
                               f"{layers[0].cell_graph.spatial_dims}D")
    for role, cell in [(f"the cell between layers {i} and {i + 1}", c) for i, c in between.items()] + \
                      [(f"difference-chain cell {i}", c) for i, c in enumerate(chain)]:
        if len(_inputs(cell)) != 1:
            raise CellgenError(f"{role} ({_name(cell)}) takes inputs {', '.join(n for n, _ in _inputs(cell))}: "
                               "a cell between layers reads one tensor")
        if list(cell.zigzag_states):
            raise CellgenError(f"{role} ({_name(cell)}) has a zigzag state: only layers carry the zigzag memory")
    bottom_extra = _inputs(layers[0])[1:]
    if chain:
        if bottom_extra:
            raise CellgenError(f"layer 0 ({_name(layers[0])}) takes inputs beyond x "
                               f"({', '.join(n for n, _ in bottom_extra)}); with a difference chain it reads x only")
        for index, layer in enumerate(layers[1:], start=1):
            inputs = _inputs(layer)
            width = chain[index - 1].out_channels
            if len(inputs) != 2 or inputs[1][1] != width:
                raise CellgenError(f"layer {index} ({_name(layer)}) takes inputs "
                                   f"{', '.join(f'{n}[{c}]' for n, c in inputs)}; the difference chain gives "
                                   f"layers ≥ 1 a second input of {width} channels",
                                   hint="a MIM stack is predrnn_openstl, then mim blocks (--model mim)")
        return []
    for index, layer in enumerate(layers[1:], start=1):
        if _inputs(layer)[1:] != bottom_extra:
            inputs = ", ".join(n for n, _ in _inputs(layer))
            unfed = [n for n, _ in _inputs(layer)[1:] if n not in dict(bottom_extra)] or ["its inputs beyond x"]
            hint = ("its second input d comes from a MIM-N chain: --diff-chain mimn (or --model mim)"
                    if _name(layer) == "MIMBlock" else "give every layer the same inputs")
            raise CellgenError(f"layer {index} ({_name(layer)}) takes inputs {inputs}, layer 0 "
                               f"({_name(layers[0])}) {', '.join(n for n, _ in _inputs(layers[0]))}: nothing "
                               f"feeds {', '.join(unfed)}", hint=hint)
    return bottom_extra
