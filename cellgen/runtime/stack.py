"""Unrolling cells over time and a stack of layers.

Within a step, each layer's output feeds the next layer's input. A zigzag state (PredRNN's
m) also goes up the stack within a step, and from the top layer at t-1 into the bottom
layer at t; every other state stays in its layer from step to step.

`CellStack.step` is one time step of every layer with the bottom input already formed;
`CellStack.forward` cuts that input out of a whole sequence (a window of frames for a 3D
cell) and calls `step` at every t. A caller that produces its inputs one step at a time (a
sequence model feeding back its own predictions) forms them itself and calls `step`, so
both go through the same code.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence

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
    """

    def __init__(self, cells: Sequence[nn.Module]):
        super().__init__()
        if not cells:
            raise ValueError("a stack needs at least one layer")
        self.layers = nn.ModuleList(cells)
        self.zigzag = list(cells[0].zigzag_states)
        self.window = getattr(cells[0], "input_window", 1)
        self._steps: Optional[list[Callable]] = None  # compiled layer steps (compile_layers)

    def forward(self, xs: torch.Tensor, states: Optional[States] = None):
        outputs = []
        for t in range(xs.shape[1]):
            y, states = self.step(self._input(xs, t), states)
            outputs.append(y)
        return torch.stack(outputs, dim=1), states

    def step(self, x: torch.Tensor, states: Optional[States] = None, extra: Sequence[torch.Tensor] = ()
             ) -> tuple[torch.Tensor, States]:
        """One time step of every layer: `y, states = stack.step(x, states)`.

        `x` is the bottom layer's input at this step as the cell takes it (for a 3D cell, the
        window (B, C, W, H, W') already formed); `states` one dict per layer (None: zeros),
        left unchanged. `extra` are the cell's further inputs (`cell(x, *extra, state)`:
        multi-kernel ConvLSTM's flow features), given to every layer. Returns the top layer's
        output and the new states, zigzag states moved as the class docstring says.
        """
        if states is None:
            states = [_in_layout_of(x, cell.zero_state(x)) for cell in self.layers]
        carried = {name: states[-1][name] for name in self.zigzag}
        new_states: States = []
        steps = self._steps or self.layers
        for cell, state in zip(steps, states):
            x, state = cell(x, *extra, {**state, **carried})
            new_states.append(state)
            carried = {name: state[name] for name in self.zigzag}
        return x, new_states

    @contextlib.contextmanager
    def weights_once(self):
        """Every layer's `weights_once()` (cellgen/codegen/prelude.py) for the block: a rollout's
        layers assemble and cast their fused weights once, not at every step. Compiled layers
        (`compile_layers`) run a template layer with each layer's parameters, so they keep
        their plain step."""
        with contextlib.ExitStack() as blocks:
            if self._steps is None:
                for cell in self.layers:
                    if hasattr(cell, "weights_once"):
                        blocks.enter_context(cell.weights_once())
            yield

    def compile_layers(self, **options) -> int:
        """torch.compile each layer's step, one compile per distinct layer; returns how many.

        The unit compiled is one step of one layer, not the unrolled rollout: a rollout of T
        steps traced whole would be a graph T·L times the size of a step, recompiled for every
        sequence length. Layers whose generated code and parameter shapes are the same (all
        layers above the first, usually) share one compiled function: it runs a template
        layer with each layer's own parameters (`torch.func.functional_call`), so dynamo sees
        the same code and the same guards, and compiles it once. `options` go to torch.compile.
        """
        from torch.func import functional_call

        templates: dict[tuple, tuple[nn.Module, Callable]] = {}
        steps = []
        for cell in self.layers:
            key = (getattr(cell, "code", id(cell)), type(cell).__name__,
                   tuple((name, tuple(p.shape)) for name, p in cell.named_parameters()),
                   tuple((name, tuple(b.shape)) for name, b in cell.named_buffers()))
            if key not in templates:
                templates[key] = (cell, torch.compile(_own_copy(_step_with, len(templates)), **options))
            template, compiled = templates[key]
            steps.append(_LayerStep(compiled, template, cell, functional_call))
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
