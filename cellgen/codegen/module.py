"""The compiled cell: an fx GraphModule whose parameters are the spec's weight symbols."""
from __future__ import annotations

import contextlib
import copy
from typing import Optional

import torch
from torch import fx

from cellgen.codegen import boundary
from cellgen.codegen.fx import build_fx_graph
from cellgen.codegen.prelude import SplitStep, split_weight_prelude
from cellgen.ir.graph import CellGraph
from cellgen.runtime import ops as runtime_ops
from cellgen.runtime.init import init_weight_
from cellgen.runtime.threads import one_thread


class CellModule(fx.GraphModule):
    """One time step of a cell: `h, state = cell(x, state)`.

    `state` maps each state name to a tensor, or is None for zeros at t = 0. The generated
    code is in `cell.code`; the graph it was made from in `cell.cell_graph`. A cell with
    several outputs (`output h', delta_c, delta_m`) returns the others after the state, by
    their written names: `h, state, outputs = cell(x, state)` (docs/outputs.md).
    """

    cell_graph: CellGraph
    opt_level: int
    source_graph: Optional[CellGraph] = None   # the spec's graph before optimisation (summary())

    # In a REPL and a notebook (cellgen/codegen/notebook.py).
    def __repr__(self) -> str:
        from cellgen.codegen import notebook

        return notebook.describe(self)

    def summary(self, size=None):
        """The table of `cellgen compile --emit summary`: weights and parameters by gate, MACs at `size`."""
        from cellgen.codegen import notebook

        return notebook.summary(self, size)

    def _repr_svg_(self):
        from cellgen.codegen import notebook

        return notebook.svg(self)

    @property
    def state_names(self) -> list[str]:
        return list(self.cell_graph.states)

    @property
    def zigzag_states(self) -> list[str]:
        return [name for name, info in self.cell_graph.states.items() if info.zigzag]

    @property
    def extra_outputs(self) -> list[str]:
        """The outputs after the first, by their written names (`['delta_c', 'delta_m']`); [] for one output."""
        return list(self.cell_graph.extra_outputs)

    @property
    def out_channels(self) -> int:
        return self.cell_graph[self.cell_graph.output]["channels"]

    def zero_state(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The state at t = 0 for an input batch shaped like `x`."""
        spatial = tuple(x.shape[2:])
        return {name: x.new_zeros((x.shape[0], info.channels) + spatial)
                for name, info in self.cell_graph.states.items()}

    @property
    def input_window(self) -> int:
        """Frames per step of the first input: T for a 3D cell (`input x[C] window T`), else 1."""
        graph = self.cell_graph
        first = next(iter(graph.inputs), None)
        return graph.input_windows.get(first, 1)

    @contextlib.contextmanager
    def weights_once(self):
        """Within the block, what the step computes from its weights alone (the fused weights'
        concatenations and constant bias vectors: `cellgen/codegen/prelude.py`) is computed
        at the first call and reused by every later one, and under autocast each fused conv
        casts its weight once (`runtime.ops.casts_once`). For a rollout, whose steps all read
        the same parameters: they must not change inside the block. Values and gradients are
        those of calling the step plainly."""
        if "forward" in self.__dict__:  # already inside a block (or forward replaced): as it is
            yield
            return
        split = self._weight_prelude()
        if split is None:
            with runtime_ops.casts_once():
                yield
            return
        prepared_for: dict = {}
        plain = type(self).forward

        def forward(*args, **kwargs):
            if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
                return plain(self, *args, **kwargs)
            grad = torch.is_grad_enabled()
            if grad not in prepared_for:
                prepared_for[grad] = split.prelude(self)
            return split.step(self, prepared_for[grad], *args, **kwargs)

        self.forward = forward
        try:
            with runtime_ops.casts_once():
                yield
        finally:
            del self.forward

    def _weight_prelude(self) -> Optional[SplitStep]:
        known = self.__dict__.get("_split_step")
        if known is None or known[0] is not self.graph:
            known = (self.graph, split_weight_prelude(self))
            self.__dict__["_split_step"] = known
        return known[1]

    def reset_parameters(self) -> None:
        with one_thread():
            for symbol, info in self.cell_graph.weights.items():
                init_weight_(self.get_parameter(symbol), info.kind)

    # fx's own deepcopy drops our attributes, and its pickling re-traces the generated code
    # (which branches on `state is None`): rebuild from the cell graph instead.
    def __deepcopy__(self, memo):
        clone = _rebuild(copy.deepcopy(self.cell_graph, memo), self.opt_level, self.state_dict(keep_vars=True),
                         self.training, self.source_graph)  # the source graph never changes after compile: shared
        memo[id(self)] = clone
        return clone

    def __reduce__(self):
        return (_rebuild, (self.cell_graph, self.opt_level, self.state_dict(keep_vars=True), self.training,
                           self.source_graph))


def _rebuild(graph: CellGraph, opt_level: int, state: dict, training: bool,
             source_graph: Optional[CellGraph] = None) -> CellModule:
    # The copy takes each weight as it is (dtype, device, requires_grad): load_state_dict would
    # cast a float64 cell's weights back to the default dtype. No fresh initialisation either, so
    # that copying a cell does not draw from the global RNG.
    module = build_module(graph, opt_level, initialise=False)
    module.train(training)
    module.source_graph = source_graph
    for symbol, tensor in state.items():
        parameter = module.get_parameter(symbol)
        parameter.data = tensor.detach().clone()
        parameter.requires_grad_(tensor.requires_grad)
    return module


def build_module(graph: CellGraph, opt_level: int, fx_graph: Optional[fx.Graph] = None, *,
                 initialise: bool = True) -> CellModule:
    """Wrap `graph` (already optimised to `opt_level`) as a CellModule with fresh weights
    (uninitialised memory with `initialise=False`, for a caller that fills every weight)."""
    boundary.check_weight_budget(graph)  # before allocating: hidden=10**12 is a mistake, not a request
    root = torch.nn.Module()
    for symbol, info in graph.weights.items():
        register_dotted(root, symbol, torch.nn.Parameter(torch.empty(info.shape)))
    module = CellModule(root, fx_graph or build_fx_graph(graph), class_name=graph.name)
    # Every weight is a parameter even if the step does not read it, so that state_dict keys
    # are the spec's symbols at every opt level.
    for symbol in graph.weights:
        try:
            module.get_parameter(symbol)
        except AttributeError:
            register_dotted(module, symbol, root.get_parameter(symbol))
    module.cell_graph = graph
    module.opt_level = opt_level
    module.register_forward_pre_hook(boundary.check_call, with_kwargs=True)  # wrong x or state: say so
    if initialise:
        module.reset_parameters()
    return module


def register_dotted(module: torch.nn.Module, name: str, parameter: torch.nn.Parameter) -> None:
    """Register `SE.W_A` as parameter `W_A` of a child module `SE` (made if missing), so that
    state_dict keys are block- and kernel-qualified symbols (`SE.W_A`, `W_xi.3x3`)."""
    *path, leaf = name.split(".")
    for part in path:
        child = module._modules.get(part)
        if child is None:
            child = torch.nn.Module()
            module.add_module(part, child)
        module = child
    module.register_parameter(leaf, parameter)
