"""Unrolling cells over time and a stack of layers.

Within a step, each layer's output feeds the next layer's input. A zigzag state (PredRNN's
m) also goes up the stack within a step, and from the top layer at t-1 into the bottom
layer at t; every other state stays in its layer from step to step.

`CellStack.step` is one time step of every layer with the bottom input already formed;
`CellStack.forward` cuts that input out of a whole sequence (a window of frames for a 3D
cell) and calls `step` at every t. A caller that produces its inputs one step at a time (a
sequence model feeding back its own predictions) forms them itself and calls `step`, so
both go through the same code.

A heterogeneous stack (docs/stacks.md) adds two things around the layers, neither of which
touches the zigzag: cells *between* two layers (`between={0: ghu}`: PredRNN++'s gradient
highway, whose output layer 1 reads instead of layer 0's), and a *difference chain* (MIM's
MIM-N cells): chain cell l-1 steps on the temporal difference of layer 0's output (l = 1) or
on the chain cell below (l > 1), and its output is layer l's second input; it first steps at
t = 1, giving zeros at t = 0, as OpenSTL's MIM_Model.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Mapping, Optional, Sequence

import torch
from torch import nn

States = list[dict[str, torch.Tensor]]


class CellStack(nn.Module):
    """L stacked cells run over T steps: `ys, states = stack(xs, states)`.

    xs is (B, T, C, *spatial); ys holds the top layer's output at every step, and `states`
    is one dict per layer of its last states (None: zeros). A zigzag state `m` of the bottom
    layer at the first step is read from `states[-1]["m"]`, the top layer's last value.
    A 3D cell whose input is a window of W frames (`input x[C] window W`) gets, at step t,
    the frames t-W+1 … t of xs on a new time axis (B, C, W, H, W'), zeros before the first;
    the layers above read the NCTHW output of the layer below. Histories (`c.history`) stay
    in their layer's state dict, from step to step.

    Cells with several outputs (`output h', delta_c, delta_m`): the first is what the layer
    above reads; the others are passed on, one dict per layer ({} for a layer without them),
    as a third element: `ys, states, outputs = stack(xs, states)` with `outputs[l][name]`
    (B, T, C, *spatial), and `y, states, outputs = stack.step(x, states)` with one step's.
    A stack of single-output cells returns two elements, as it always has.
    """

    def __init__(self, cells: Sequence[nn.Module], between: Optional[Mapping[int, nn.Module]] = None,
                 diff_chain: Sequence[nn.Module] = ()):
        super().__init__()
        if not cells:
            raise ValueError("a stack needs at least one layer")
        self.layers = nn.ModuleList(cells)
        self.zigzag = list(cells[0].zigzag_states)
        self.window = getattr(cells[0], "input_window", 1)
        if any(list(cell.zigzag_states) != self.zigzag for cell in cells):
            raise ValueError("the layers of a stack must have the same zigzag states: "
                             + ", ".join(str(list(cell.zigzag_states)) for cell in cells))
        between = dict(between or {})
        if any(not 0 <= index < len(cells) - 1 for index in between):
            raise ValueError(f"cells between layers go after layers 0 … {len(cells) - 2}, not {sorted(between)}")
        if diff_chain and len(diff_chain) != len(cells) - 1:
            raise ValueError(f"a difference chain of {len(cells)} layers has {len(cells) - 1} cells, not {len(diff_chain)}")
        # parameters `between.{l}.…` and `diff_chain.{i}.…`; absent (no keys) in a plain stack
        self.between = nn.ModuleDict({str(index): cell for index, cell in sorted(between.items())})
        self.diff_chain = nn.ModuleList(diff_chain)
        self._steps: Optional[dict[str, Callable]] = None  # compiled steps by slot (compile_layers)

    @property
    def slots(self) -> list[str]:
        """The name of each entry of `states`: `layers.{l}`, then `between.{l}`, `diff_chain.{i}`
        and `diff_chain.source` (layer 0's previous output, and whether the chain has started)."""
        names = [f"layers.{index}" for index in range(len(self.layers))]
        names += [f"between.{index}" for index in self.between]
        if len(self.diff_chain):
            names += [f"diff_chain.{index}" for index in range(len(self.diff_chain))] + ["diff_chain.source"]
        return names

    def _cells(self) -> dict[str, nn.Module]:
        cells = {f"layers.{index}": cell for index, cell in enumerate(self.layers)}
        cells.update({f"between.{index}": cell for index, cell in self.between.items()})
        cells.update({f"diff_chain.{index}": cell for index, cell in enumerate(self.diff_chain)})
        return cells

    def zero_states(self, x: torch.Tensor) -> States:
        """Every slot's state at t = 0, in x's layout (x: the bottom input)."""
        states = [_in_layout_of(x, cell.zero_state(x)) for cell in self._cells().values()]
        if len(self.diff_chain):
            previous = x.new_zeros((x.shape[0], self.layers[0].out_channels) + tuple(x.shape[2:]))
            states.append(_in_layout_of(x, {"previous": previous,
                                            "started": x.new_zeros((x.shape[0],) + (1,) * (x.dim() - 1))}))
        return states

    @property
    def extra_outputs(self) -> bool:
        """Whether some layer has outputs beyond its first (then results have a third element)."""
        return any(getattr(cell, "extra_outputs", None) for cell in self.layers)

    def forward(self, xs: torch.Tensor, states: Optional[States] = None):
        ys, per_step = [], []
        for t in range(xs.shape[1]):
            y, states, *extra = self.step(self._input(xs, t), states)
            ys.append(y)
            per_step.append(extra)
        if not self.extra_outputs:
            return torch.stack(ys, dim=1), states
        outputs = [{name: torch.stack([step[0][layer][name] for step in per_step], dim=1) for name in layer_outputs}
                   for layer, layer_outputs in enumerate(per_step[0][0])]
        return torch.stack(ys, dim=1), states, outputs

    def step(self, x: torch.Tensor, states: Optional[States] = None, extra: Sequence[torch.Tensor] = ()
             ) -> tuple[torch.Tensor, States]:
        """One time step of every layer: `y, states = stack.step(x, states)`.

        `x` is the bottom layer's input at this step as the cell takes it (for a 3D cell, the
        window (B, C, W, H, W') already formed); `states` one dict per layer (None: zeros),
        left unchanged. `extra` are the cell's further inputs (`cell(x, *extra, state)`:
        multi-kernel ConvLSTM's flow features), given to every layer. Returns the top layer's
        output and the new states, zigzag states moved as the class docstring says (and, when
        a layer has several outputs, the others: one dict per layer).
        """
        slots = self.slots
        if states is None:
            states = self.zero_states(x)
        if len(states) != len(slots):
            raise ValueError(f"the stack's states are {len(slots)} dicts ({', '.join(slots)}), not {len(states)}")
        by_slot = dict(zip(slots, states))
        steps = self._steps or self._cells()
        carried = {name: states[len(self.layers) - 1][name] for name in self.zigzag}
        new: dict[str, dict[str, torch.Tensor]] = {}
        outputs: list[dict[str, torch.Tensor]] = []      # each layer's further outputs ({}: none)
        chain = _DiffChain(self, by_slot, steps, new) if len(self.diff_chain) else None
        for index in range(len(self.layers)):
            side = tuple(extra) if chain is None or index == 0 else (chain.step(index - 1),)
            x, state, *others = steps[f"layers.{index}"](x, *side, {**by_slot[f"layers.{index}"], **carried})
            new[f"layers.{index}"] = state
            outputs.append(others[0] if others else {})
            carried = {name: state[name] for name in self.zigzag}
            if chain is not None and index == 0:
                chain.saw_bottom(x)
            if str(index) in self.between:
                # a cell between layers passes on its first output only
                x, new[f"between.{index}"], *_ = steps[f"between.{index}"](x, by_slot[f"between.{index}"])
        if self.extra_outputs:
            return x, [new[slot] for slot in slots], outputs
        return x, [new[slot] for slot in slots]

    @contextlib.contextmanager
    def weights_once(self):
        """Every cell's `weights_once()` (cellgen/codegen/prelude.py) for the block: a rollout's
        cells assemble and cast their fused weights once, not at every step. Compiled cells
        (`compile_layers`) run a template cell with each cell's parameters, so they keep
        their plain step."""
        with contextlib.ExitStack() as blocks:
            if self._steps is None:
                for cell in self._cells().values():
                    if hasattr(cell, "weights_once"):
                        blocks.enter_context(cell.weights_once())
            yield

    def compile_layers(self, **options) -> int:
        """torch.compile each layer's step (and each between or chain cell's), one compile per
        distinct cell; returns how many.

        The unit compiled is one step of one layer, not the unrolled rollout: a rollout of T
        steps traced whole would be a graph T·L times the size of a step, recompiled for every
        sequence length. Layers whose generated code and parameter shapes are the same (all
        layers above the first, usually) share one compiled function: it runs a template
        layer with each layer's own parameters (`torch.func.functional_call`), so dynamo sees
        the same code and the same guards, and compiles it once. `options` go to torch.compile.
        """
        from torch.func import functional_call

        templates: dict[tuple, tuple[nn.Module, Callable]] = {}
        steps = {}
        for slot, cell in self._cells().items():
            key = (getattr(cell, "code", id(cell)), type(cell).__name__,
                   tuple((name, tuple(p.shape)) for name, p in cell.named_parameters()),
                   tuple((name, tuple(b.shape)) for name, b in cell.named_buffers()))
            if key not in templates:
                templates[key] = (cell, torch.compile(_own_copy(_step_with, len(templates)), **options))
            template, compiled = templates[key]
            steps[slot] = _LayerStep(compiled, template, cell, functional_call)
        self._steps = steps
        return len(templates)

    def _input(self, xs: torch.Tensor, t: int) -> torch.Tensor:
        """The bottom layer's input at step t: frame t, or the window of frames ending at t."""
        if self.window == 1:
            return xs[:, t]
        first = t - self.window + 1
        frames = xs[:, max(first, 0): t + 1]
        if first < 0:
            frames = torch.cat([frames.new_zeros((frames.shape[0], -first) + frames.shape[2:]), frames], 1)
        return frames.transpose(1, 2)  # (B, W, C, H, W') → (B, C, W, H, W')


class _DiffChain:
    """MIM's MIM-N chain within one step of a CellStack (see the module docstring).

    Before the chain has started (t = 0: `started` 0) its cells' outputs are zeros and their
    states stay as they were — OpenSTL steps them on zeros and throws the result away. The
    choice is made per sample with `torch.where`, so an explicit zero carry means t = 0 too and
    gradients are those of the branch taken."""

    def __init__(self, stack: CellStack, by_slot: dict, steps: dict, new: dict):
        self.stack, self.by_slot, self.steps, self.new = stack, by_slot, steps, new
        source = by_slot["diff_chain.source"]
        self.previous, self.started = source["previous"], source["started"]
        self.bottom: Optional[torch.Tensor] = None
        self.outputs: list[torch.Tensor] = []

    def saw_bottom(self, y: torch.Tensor) -> None:
        self.bottom = y
        self.new["diff_chain.source"] = {"previous": y, "started": torch.ones_like(self.started)}

    def step(self, index: int) -> torch.Tensor:
        """Chain cell `index`'s output at this step: the second input of layer index + 1."""
        slot = f"diff_chain.{index}"
        below = self.bottom - self.previous if index == 0 else self.outputs[index - 1]
        old = self.by_slot[slot]
        y, state, *_ = self.steps[slot](below, old)
        on = self.started > 0
        y = torch.where(on, y, torch.zeros_like(y))
        self.new[slot] = {name: torch.where(on, value, old[name]) for name, value in state.items()}
        self.outputs.append(y)
        return y


def _in_layout_of(x: torch.Tensor, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A zero state in x's layout (channels-last when x is): see `initial_state`."""
    if x.dim() != 4 or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return state
    return {name: value.contiguous(memory_format=torch.channels_last) for name, value in state.items()}


def _own_copy(function, index: int):
    """`function` with a code object of its own. Dynamo keeps its compiled graphs, and its limit
    of 8 recompiles, per code object: one shared by every template (and every model in the
    process) ran out of it (x and states with and without gradients, fp32 and bf16 states at
    t = 0 and after), and the steps past the limit fell back to eager without a word."""
    import types

    code = function.__code__.replace(co_name=f"{function.__name__}_{index}")
    return types.FunctionType(code, function.__globals__, code.co_name, function.__defaults__,
                              function.__closure__)


def _step_with(functional_call, template: nn.Module, tensors: dict, args: tuple):
    return functional_call(template, tensors, args)


class _LayerStep:
    """One layer's compiled step: the shared compiled function, given this layer's tensors."""

    def __init__(self, compiled, template, cell, functional_call):
        self.compiled, self.template, self.cell, self.functional_call = compiled, template, cell, functional_call

    def __call__(self, *args):
        tensors = {**dict(self.cell.named_parameters()), **dict(self.cell.named_buffers())}
        return self.compiled(self.functional_call, self.template, tensors, args)
