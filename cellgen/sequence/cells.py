"""The stack of compiled cells inside a sequence model, built from a spec and the frame geometry.

A sequence model knows things about its cells that the spec leaves to the caller: how many
channels reach the bottom layer (the patched, maybe projected, frame), and the size of the
maps they run on. This module turns those into the spec's params and compiles the layers:

- the param that sets the (first) input's channels (`input x[in_channels]`) is filled in;
  layer l > 0 reads layer l-1's output, as in `cellgen.compile_stack`;
- params named `height` and `width` (peephole shapes, CMS-LSTM's LayerNorm) are set to the
  size of the map the cells see, unless given; a given value that does not match is an error
  now rather than a broadcasting failure on the first step;
- a cell with more inputs than x (the flow features of multi-kernel ConvLSTM) is reported
  with its extra inputs' channels; the sequence model makes those inputs and hands them to
  `CellStack.step`, which gives them to every layer. The zigzag logic stays in `CellStack`,
  in one place; the windows of 3D cells are the sequence model's, which feeds one step at a
  time and so forms each step's window itself.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping

import cellgen
from cellgen.errors import CellgenError
from cellgen.runtime.stack import CellStack

SPATIAL_PARAMS = ("height", "width")


@dataclass(frozen=True)
class SpecInterface:
    """What the sequence model must know of a spec before compiling it."""

    channel_param: str             # the param naming the first input's channels
    declared_params: tuple[str, ...]


def spec_interface(source: str) -> SpecInterface:
    """Read the first input's channel param and the declared params (following `extends`)."""
    from cellgen.language import syntax as ast

    loaded = cellgen.load_spec(source)
    spec = getattr(loaded, "resolved", None) or loaded.ast  # `resolved`: a variant merged with its base
    declared = [p.name for p in spec.params]
    inputs = list(spec.inputs)
    seen = {spec.name}
    while not inputs and getattr(spec, "extends", None):  # a variant inherits its base's inputs
        base = cellgen.load_spec(spec.extends).ast
        if base.name in seen:
            break
        seen.add(base.name)
        inputs = list(base.inputs)
        declared += [p.name for p in base.params if p.name not in declared]
        spec = base
    if not inputs or not isinstance(inputs[0].channels, ast.DimName):
        raise CellgenError(f"cell {loaded.ast.name} cannot be used in a sequence model: its first input must take "
                           "its channels from a param (`input x[in_channels]`)", loaded.ast.span)
    return SpecInterface(inputs[0].channels.name, tuple(declared))


def layer_params(interface: SpecInterface, params: Mapping[str, int], in_channels: int,
                 map_size: tuple[int, int]) -> dict[str, int]:
    """The params of the bottom layer: the user's, plus input channels and map size."""
    if interface.channel_param in params:
        raise CellgenError(f"--param {interface.channel_param} is set by the sequence model (the channels of the "
                           f"patched frame reaching the bottom layer: {in_channels})",
                           hint=f"leave out --param {interface.channel_param}; change --patch or --embed instead")
    full = dict(params)
    full[interface.channel_param] = in_channels
    for name, size in zip(SPATIAL_PARAMS, map_size):
        if name not in interface.declared_params:
            continue
        if name in params and params[name] != size:
            raise CellgenError(f"--param {name}={params[name]} does not match the maps the cells run on: {size} "
                               f"(the frame size divided by the patch size)",
                               hint=f"leave out --param {name}: the sequence model sets it")
        full[name] = size
    return full


@dataclass
class BuiltStack:
    stack: CellStack
    extra_inputs: list[tuple[str, int]]  # (name, channels) of each input after the first
    window: int                          # frames per step (1 for 2D cells)
    spatial_dims: int                    # 2 or 3
    out_channels: int                    # channels of the top layer's output


def build_stack(source: str, layers: int, params: Mapping[str, int], in_channels: int,
                map_size: tuple[int, int], opt_level: int = 2) -> BuiltStack:
    """Compile `layers` copies of the spec for a bottom input of `in_channels` on `map_size` maps."""
    if layers < 1:
        raise CellgenError(f"a sequence model needs at least one layer, not {layers}")
    interface = spec_interface(source)
    bottom = layer_params(interface, params, in_channels, map_size)
    first = cellgen.compile(source, opt_level=opt_level, **bottom)
    names = list(first.cell_graph.inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the first layer already said it
        upper = {**bottom, interface.channel_param: first.out_channels}
        cells = [first] + [cellgen.compile(source, opt_level=opt_level, **upper) for _ in range(layers - 1)]
    extra = [(name, first.cell_graph[first.cell_graph.inputs[name]]["channels"]) for name in names[1:]]
    return BuiltStack(CellStack(cells), extra, int(getattr(first, "input_window", 1) or 1),
                      int(first.cell_graph.spatial_dims), int(cells[-1].out_channels))

