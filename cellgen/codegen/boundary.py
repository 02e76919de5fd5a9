"""What a compiled cell checks at its edge: the weights it is asked to allocate, and each call.

The generated forward is torch code; called with the wrong thing it fails deep inside a conv
("weight of size [16, 9, 3, 3], expected input[2, 7, 8, 8] to have 9 channels") or with a
bare `KeyError`. `check_call` runs first (a forward pre-hook, see codegen/module.py) and says
what the *cell* expected, in the spec's terms: input `x` has 5 channels, state `c` is missing.
It only compares a handful of Python ints and dtypes (a few microseconds a call, measured in
tests/test_boundary.py), so it stays on.

`check_weight_budget` runs before any parameter is allocated: `hidden=10**12` is refused with
the bytes it would need instead of the allocator's failure (or, worse, an allocation that
succeeds and swaps the machine to a halt).
"""
from __future__ import annotations

from collections.abc import Mapping
from math import prod

import torch

from cellgen.errors import CellgenError

# The most weight elements one cell may have: 2**31 (8 GiB in float32). The largest shipped
# cell at its default params has under 10**7.
MAX_WEIGHT_ELEMENTS = 2 ** 31


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if size < 1000 or unit == "PB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.3g} {unit}"
        size /= 1000
    return f"{count} bytes"


def check_weight_budget(graph) -> None:
    """Refuse a cell whose weights cannot be meant: over MAX_WEIGHT_ELEMENTS elements in all."""
    sizes = {symbol: prod(info.shape) for symbol, info in graph.weights.items()}
    total = sum(sizes.values())
    if total <= MAX_WEIGHT_ELEMENTS:
        return
    biggest = max(sizes, key=sizes.get)
    shape = " × ".join(str(n) for n in graph.weights[biggest].shape)
    params = ", ".join(f"{k}={v}" for k, v in graph.params.items())
    raise CellgenError(f"cell {graph.name} would need {total:,} weight elements ({_bytes(4 * total)} in float32); "
                       f"cellgen allocates at most {MAX_WEIGHT_ELEMENTS:,}",
                       hint=f"the largest is `{biggest}`: {shape}; the params are {params or '(none)'}")


def _where(name: str) -> str:
    return f"input `{name}`"


def check_call(module, args: tuple, kwargs: dict) -> None:
    """Validate one call `cell(x, …, state)` of a CellModule against its cell graph."""
    if torch.compiler.is_compiling():  # torch.compile / export trace the step: checked by their own guards
        return
    graph = module.cell_graph
    facts = module.__dict__.get("_boundary_facts")
    if facts is None or facts[0] is not graph:  # read once per cell graph: the graph lookups cost more than the check
        facts = (graph, list(graph.inputs), {n: graph[node]["channels"] for n, node in graph.inputs.items()})
        module.__dict__["_boundary_facts"] = facts
    _, names, input_channels = facts
    inputs = list(args[: len(names)])
    for name in names[len(inputs):]:
        if name in kwargs:
            inputs.append(kwargs[name])
    if len(inputs) < len(names):
        missing = ", ".join(f"`{n}`" for n in names[len(inputs):])
        raise CellgenError(f"cell {graph.name} takes {len(names)} input(s) before the state; {missing} not given",
                           hint=f"call it as `h, state = cell({', '.join(names)}, state)`")
    state = args[len(names)] if len(args) > len(names) else kwargs.get("state")
    rank = 2 + graph.spatial_dims
    layout = "batch × channels × height × width" if graph.spatial_dims == 2 else \
        "batch × channels × time × height × width"
    first = None
    for name, x in zip(names, inputs):
        if not isinstance(x, torch.Tensor):
            raise CellgenError(f"{_where(name)} of cell {graph.name} must be a tensor, not {type(x).__name__}")
        if x.dim() != rank:
            raise CellgenError(f"{_where(name)} of cell {graph.name} has {x.dim()} dimensions "
                               f"{tuple(x.shape)}; it needs {rank} ({layout})")
        channels = input_channels[name]
        if x.shape[1] != channels:
            raise CellgenError(f"{_where(name)} of cell {graph.name} has {x.shape[1]} channels; the cell declares "
                               f"{channels}", hint=f"its shape is {tuple(x.shape)}; dimension 1 is the channels")
        _check_dtype(module, f"{_where(name)}", x)
        if first is None:
            first = x
    if state is None:
        return
    if not isinstance(state, Mapping):
        raise CellgenError(f"the state of cell {graph.name} must be a dict of tensors by state name (or None at "
                           f"t = 0), not a {type(state).__name__}",
                           hint=f"e.g. {{{', '.join(repr(s) + ': …' for s in graph.states)}}}, as the cell returns it")
    for name, info in graph.states.items():
        if name not in state:
            raise CellgenError(f"the state of cell {graph.name} has no `{name}`",
                               hint=f"it holds {', '.join(map(repr, state)) or 'nothing'}; the cell's states are "
                                    f"{', '.join(map(repr, graph.states))} (pass None for zeros at t = 0)")
        value = state[name]
        if not isinstance(value, torch.Tensor):
            raise CellgenError(f"state `{name}` of cell {graph.name} must be a tensor, not "
                               f"{type(value).__name__}", hint="pass state=None for zeros at t = 0")
        expected = (first.shape[0], info.channels) + tuple(first.shape[2:])
        if tuple(value.shape) != expected:
            what = ("batch" if value.dim() == len(expected) and value.shape[0] != expected[0] else
                    "channels" if value.dim() == len(expected) and value.shape[1] != expected[1] else "shape")
            raise CellgenError(f"state `{name}` of cell {graph.name} is {tuple(value.shape)}, but the input makes "
                               f"it {expected} (its {what} differs)",
                               hint="a state is batch × its channels × the input's spatial size")
        _check_dtype(module, f"state `{name}`", value)


def _check_dtype(module, what: str, value: torch.Tensor) -> None:
    weight = next(module.parameters(), None)
    if weight is None or value.dtype == weight.dtype or torch.is_autocast_enabled(value.device.type):
        return
    raise CellgenError(f"{what} of cell {module.cell_graph.name} is {str(value.dtype).replace('torch.', '')}, but "
                       f"its weights are {str(weight.dtype).replace('torch.', '')}",
                       hint=f"convert one of them: `x.to({weight.dtype})`, or `cell.to({value.dtype})`, "
                            "or run under torch.autocast")
