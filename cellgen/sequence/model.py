"""A video predictor around any compiled cell: frames in, future frames out.

    frame ─reshape_patch─▶ [input projection] ─▶ [T-frame window] ─▶ L stacked cells ─▶ head ─▶ next frame

This is the model of the papers' code (predrnn-pytorch, google/e3d_lstm): at every step the
bottom layer reads one (patched) frame, the top layer's output goes through a head that
predicts the NEXT frame, and that prediction is fed back as the next input once the observed
frames run out. Over a sequence of T frames the model runs T-1 steps and returns predictions
of frames 1 … T-1; a loss over all of them is what predrnn-pytorch trains on.

- Patching: 64×64×1 frames become 16×16×16 maps with `patch=4` (see patch.py).
- Input projection (`embed`): an optional 1×1 conv from the patched frame to `embed` channels.
  Off by default, because the papers' models feed the patched frame to the bottom cell.
- Head: a bias-free 1×1 conv for 2D cells (predrnn-pytorch's `conv_last`); for 3D cells
  E3D-LSTM's decoder, a Conv3d with kernel and stride (T, 1, 1) that folds the window.
- 3D cells see a window of their last T inputs, stacked on a time axis, zero frames before
  the first (`cell.input_window`).
- States: every layer's state dict is passed back whole, whatever its keys (history buffers
  included); one step of all layers is `CellStack.step`, so zigzag states (PredRNN's m) move
  through the stack exactly as in `CellStack`'s own unroll over a sequence.
- Teacher forcing on observed frames; after them, the model's own prediction, or with
  scheduled sampling the true frame where `teacher_mask` is 1.
- Cells with several outputs (`output h', delta_c, delta_m`): the stack passes them on
  (`step(…, outputs=True)`); for PredRNN-V2's increments the model holds OpenSTL's shared
  1×1 `adapter` and `forward(…, decoupling=True)` also returns the decoupling loss
  (decoupling.py).
- Reverse scheduled sampling (PredRNN-V2): a mask may start at step 1 (`mask_start`), so that
  context frames too are sometimes replaced by the model's own predictions (sampling.py).
- A cell with extra inputs (multi-kernel ConvLSTM's optical-flow features) gets, for want of
  an optical-flow network, a 1×1 conv of the patched frame difference x_t − x_{t-1} (with
  a zero frame before the first): a learnable motion feature with the input's channels.

The recurrent carry between steps is one flat dict of tensors, `layers.{l}.{state}`,
`window.{input}.{i}`, `previous_frame`, so that a step can be exported with named inputs.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from torch import nn

from cellgen.errors import CellgenError
from cellgen.sequence.cells import build_stack
from cellgen.sequence.stacks import build_plan
from cellgen.sequence.decoupling import make_adapter, step_terms
from cellgen.sequence.patch import check_patchable, reshape_patch, reshape_patch_back

Carry = dict[str, torch.Tensor]


@dataclass(frozen=True)
class SequenceConfig:
    """Everything needed to rebuild a model; stored in checkpoints (spec text included)."""

    spec: str                         # the spec's name or path, as the user gave it (for display)
    spec_text: str                    # its source: a checkpoint does not depend on the file
    params: dict = field(default_factory=dict)  # the spec's params set by the user (hidden, k, …)
    layers: int = 2
    patch: int = 4
    frame_channels: int = 1
    frame_size: tuple = (64, 64)      # (H, W)
    embed: Optional[int] = None       # channels of the input projection; None: no projection
    opt_level: int = 2
    # a heterogeneous stack (docs/stacks.md; `for_model`, `for_stack`): the spec of each layer
    # (then `spec` names the model and `spec_text` is the bottom layer's), cells between layers,
    # MIM's difference chain, and the source of every spec they name (a checkpoint is whole)
    layer_specs: tuple = ()
    between: dict = field(default_factory=dict)
    diff_chain: Optional[str] = None
    spec_texts: dict = field(default_factory=dict)

    @property
    def heterogeneous(self) -> bool:
        return bool(self.layer_specs)

    def plan(self):
        """The heterogeneous stack's StackPlan (only for a heterogeneous config)."""
        from cellgen.sequence.stacks import StackPlan

        return StackPlan(tuple(self.layer_specs), dict(self.between), self.diff_chain)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["frame_size"] = list(self.frame_size)
        data["layer_specs"] = list(self.layer_specs)
        data["between"] = {str(index): spec for index, spec in self.between.items()}  # TOML/JSON keys are strings
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "SequenceConfig":
        data = dict(data)
        data["frame_size"] = tuple(data["frame_size"])
        data["layer_specs"] = tuple(data.get("layer_specs", ()))
        data["between"] = {int(index): spec for index, spec in data.get("between", {}).items()}
        return cls(**data)

    @classmethod
    def for_spec(cls, spec: str, **kwargs) -> "SequenceConfig":
        """A config for a spec named or given by path or text (the text is read now)."""
        import cellgen

        return cls(spec=spec if "\n" not in spec else "<string>", spec_text=cellgen.load_spec(spec).text, **kwargs)

    @classmethod
    def for_model(cls, model: str, layers: int = 4, **kwargs) -> "SequenceConfig":
        """OpenSTL's PredRNN++ or MIM model by name (`cellgen.sequence.stacks.MODELS`): e.g.
        `SequenceConfig.for_model("mim", layers=4, params={"hidden": 64, "k": 5})`."""
        from cellgen.sequence.stacks import model_plan

        plan = model_plan(model, layers)
        return cls.for_stack(plan.layers, between=plan.between, diff_chain=plan.diff_chain, name=model, **kwargs)

    @classmethod
    def for_stack(cls, layers, between: Optional[dict] = None, diff_chain: Optional[str] = None,
                  name: Optional[str] = None, **kwargs) -> "SequenceConfig":
        """A stack of the given specs, bottom first, with cells `between` layers ({l: spec}: after
        layer l, read by layer l+1) and MIM's `diff_chain`; spec texts are read now."""
        import cellgen
        from cellgen.sequence.stacks import StackPlan, check_plan_shape

        if isinstance(layers, str) or not all(isinstance(spec, str) for spec in layers):
            raise CellgenError(f"layers must be a list of spec names, not {layers!r}")
        plan = StackPlan(tuple(layers), dict(between or {}), diff_chain)
        check_plan_shape(plan)
        texts = {spec: cellgen.load_spec(spec).text for spec in plan.specs()}
        label = name or ",".join(plan.layers) + "".join(f" +{i}:{s}" for i, s in sorted(plan.between.items())) \
            + (f" +chain:{diff_chain}" if diff_chain else "")
        return cls(spec=label, spec_text=texts[plan.layers[0]], layers=len(plan.layers), layer_specs=plan.layers,
                   between=dict(plan.between), diff_chain=diff_chain, spec_texts=texts, **kwargs)


def _weights_once(method):
    """Run a whole-sequence method inside the stack's `weights_once()`: every step of it reads
    the same parameters, so each layer assembles (and, under autocast, casts) its fused weights
    once. Not with activation checkpointing, whose backward recomputes steps after the block."""
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        if self.checkpoint_activations and torch.is_grad_enabled():
            return method(self, *args, **kwargs)
        with self.stack.weights_once():
            return method(self, *args, **kwargs)
    return wrapped


class SequenceModel(nn.Module):
    """Predicts frames with L stacked compiled cells; see the module docstring for the layout."""

    def __init__(self, config: SequenceConfig):
        super().__init__()
        self.config = config
        height, width = config.frame_size
        check_patchable(height, width, config.patch)
        if config.embed is not None and config.embed < 1:
            raise CellgenError(f"--embed must be a positive number of channels, not {config.embed}")
        self.patched_channels = config.frame_channels * config.patch ** 2
        self.map_size = (height // config.patch, width // config.patch)
        cell_in = config.embed or self.patched_channels
        if config.heterogeneous:
            built = build_plan(config.plan(), config.spec_texts, config.params, cell_in, self.map_size,
                               config.opt_level)
        else:
            built = build_stack(config.spec_text, config.layers, config.params, cell_in, self.map_size,
                                config.opt_level)
        self.stack = built.stack
        self.window = built.window
        self.spatial_dims = built.spatial_dims
        self.extra_inputs = [name for name, _ in built.extra_inputs]
        if self.spatial_dims == 2 and self.window != 1:
            raise CellgenError(f"a 2D cell cannot take a window of {self.window} frames")
        self.embed = (nn.Conv2d(self.patched_channels, config.embed, 1) if config.embed is not None
                      else nn.Identity())
        self.motion = nn.ModuleDict({name: nn.Conv2d(self.patched_channels, channels, 1)
                                     for name, channels in built.extra_inputs})
        if self.spatial_dims == 3:
            self.head = nn.Conv3d(built.out_channels, self.patched_channels, (self.window, 1, 1),
                                  stride=(self.window, 1, 1))
        else:
            self.head = nn.Conv2d(built.out_channels, self.patched_channels, 1, bias=False)
        self.adapter = make_adapter(self.stack.layers[0])  # PredRNN-V2's decoupling loss; None for other cells
        # how it runs, not what it computes (so not in the config): see `set_execution`
        self.channels_last = False
        self.checkpoint_activations = False

    def set_execution(self, *, channels_last: Optional[bool] = None, checkpoint_activations: Optional[bool] = None,
                      compile_layers: bool = False) -> "SequenceModel":
        """How the model runs; none of it changes what it computes (up to float rounding).

        - channels_last: weights and frames NHWC (2D cells), the layout oneDNN's convs use;
        - checkpoint_activations: keep only each time step's carry for backward and recompute
          the step's inside (`torch.utils.checkpoint`): activation memory of a rollout falls
          from all its steps' intermediates to its carries, for one more forward per step;
        - compile_layers: torch.compile one step of each distinct layer (`CellStack.compile_layers`).
        """
        if channels_last is not None:
            if channels_last and self.spatial_dims != 2:
                raise CellgenError("--channels-last is for 2D cells; a 3D cell's NCTHW tensors have no such layout")
            self.channels_last = channels_last
            self.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        if checkpoint_activations is not None:
            self.checkpoint_activations = checkpoint_activations
        if compile_layers:
            self.stack.compile_layers()
        return self

    # --- one step ----------------------------------------------------------------------------

    def step(self, frame: torch.Tensor, carry: Optional[Carry] = None, *, outputs: bool = False):
        """Read one patched frame (B, C·p², H/p, W/p); predict the next one. `carry` None: t = 0.
        Returns (prediction, carry); with `outputs`, also each layer's further outputs (a dict per
        layer, {} for a cell with one output)."""
        streams = {"x": self.embed(frame)}
        new_carry: Carry = {}
        if self.extra_inputs:
            previous = torch.zeros_like(frame) if carry is None else carry["previous_frame"]
            motion = frame - previous
            streams.update({name: self.motion[name](motion) for name in self.extra_inputs})
            new_carry["previous_frame"] = frame
        inputs = {name: self._windowed(name, tensor, carry, new_carry) for name, tensor in streams.items()}
        y, states, *others = self.stack.step(inputs["x"], self._layer_states(carry),
                                             extra=[inputs[name] for name in self.extra_inputs])
        for slot, state in zip(self.stack.slots, states):
            new_carry.update({f"{slot}.{key}": value for key, value in state.items()})
        prediction = self.head(y)
        if self.spatial_dims == 3:
            prediction = prediction.squeeze(2)
        if outputs:
            return prediction, new_carry, (others[0] if others else [{} for _ in self.stack.layers])
        return prediction, new_carry

    def _layout(self, frame: torch.Tensor) -> torch.Tensor:
        return frame.contiguous(memory_format=torch.channels_last) if self.channels_last else frame

    def _windowed(self, name: str, x: torch.Tensor, carry: Optional[Carry], new_carry: Carry) -> torch.Tensor:
        """The cell's input: x itself (2D), or the last `window` inputs on a time axis (3D)."""
        if self.spatial_dims == 2:
            return x
        past = ([torch.zeros_like(x)] * (self.window - 1) if carry is None
                else [carry[f"window.{name}.{i}"] for i in range(self.window - 1)])
        frames = past + [x]
        for i, kept in enumerate(frames[1:]):
            new_carry[f"window.{name}.{i}"] = kept
        return torch.stack(frames, dim=2)

    def _layer_states(self, carry: Optional[Carry]) -> Optional[list[dict]]:
        if carry is None:
            return None
        slots = self.stack.slots
        states: dict[str, dict] = {slot: {} for slot in slots}
        for key, value in carry.items():
            for slot in slots:          # a slot is `kind.index` (or diff_chain.source): two dotted words
                if key.startswith(slot + "."):
                    states[slot][key[len(slot) + 1:]] = value
                    break
        return [states[slot] for slot in slots]

    @torch.no_grad()
    def zero_carry(self, frame: torch.Tensor) -> Carry:
        """An explicit carry for t = 0 (what `carry=None` means), for a patched frame batch like `frame`.

        It has the keys and shapes of the carry a running model passes on (one probe step
        finds them, unknown state entries included), all zeros.
        """
        _, carry = self.step(torch.zeros_like(frame), None)
        return {key: torch.zeros_like(value) for key, value in carry.items()}

    def cell_names(self) -> str:
        """`CausalLSTM, GHU, CausalLSTM ×3`: the cells of a heterogeneous stack, bottom first."""
        names = []
        for index, cell in enumerate(self.stack.layers):
            names.append(cell.cell_graph.name)
            if str(index) in self.stack.between:
                names.append(self.stack.between[str(index)].cell_graph.name)
        runs: list[list] = []
        for name in names:
            if runs and runs[-1][0] == name:
                runs[-1][1] += 1
            else:
                runs.append([name, 1])
        text = ", ".join(name if count == 1 else f"{name} ×{count}" for name, count in runs)
        if len(self.stack.diff_chain):
            text += f"; {self.stack.diff_chain[0].cell_graph.name} chain ×{len(self.stack.diff_chain)}"
        return text

    # --- whole sequences ---------------------------------------------------------------------

    @_weights_once
    def forward(self, frames: torch.Tensor, context: int, teacher_mask: Optional[torch.Tensor] = None,
                mask_start: Optional[int] = None, decoupling: bool = False):
        """Predictions of frames 1 … T-1 of `frames` (B, T, C, H, W), as (B, T-1, C, H, W).

        The first `context` frames are read as given (teacher forcing). After them the model
        reads its own previous prediction; with scheduled sampling, `teacher_mask` (B, T-1-context)
        holds 1 where the true frame is read instead. Frames after `context` are read only there.
        `mask_start` (default `context`) is the step of the mask's first column: reverse
        scheduled sampling passes 1 and a mask (B, T-2) over steps 1 … T-2, so that from step 1
        on every frame read is the truth or the model's prediction as the mask says.
        With `decoupling` (a PredRNN-V2 cell), returns (predictions, decoupling loss).
        """
        total = frames.shape[1]
        if not 1 <= context < total:
            raise ValueError(f"context must be in 1 … {total - 1}, not {context}")
        start = context if mask_start is None else mask_start
        if teacher_mask is not None and not (1 <= start <= context and teacher_mask.shape[1] == total - 1 - start):
            raise ValueError(f"a mask starting at step {start} of {total - 1} steps has {total - 1 - start} columns, "
                             f"not {teacher_mask.shape[1]} (and starts in 1 … {context})")
        if decoupling and self.adapter is None:
            raise CellgenError("the decoupling loss needs a cell that outputs its memory increments "
                               "(`output h', delta_c, delta_m`, as predrnnv2 does)")
        terms: list[torch.Tensor] = []
        patched = reshape_patch(frames, self.config.patch)
        carry: Optional[Carry] = None
        predictions = []
        prediction = None
        checkpointed = self.checkpoint_activations and torch.is_grad_enabled()
        for t in range(total - 1):
            if t < (context if teacher_mask is None else start):
                frame = self._layout(patched[:, t])
            elif teacher_mask is None:
                frame = prediction
            else:
                use_truth = teacher_mask[:, t - start].to(patched.dtype).view(-1, 1, 1, 1)
                frame = use_truth * self._layout(patched[:, t]) + (1 - use_truth) * prediction
            if checkpointed:
                from torch.utils.checkpoint import checkpoint

                prediction, carry, outputs = checkpoint(self.step, frame, carry, use_reentrant=False, outputs=True)
            else:
                prediction, carry, outputs = self.step(frame, carry, outputs=True)
            if decoupling:
                terms += step_terms(self.adapter, outputs)
            predictions.append(prediction)
        predicted = reshape_patch_back(torch.stack(predictions, dim=1), self.config.patch)
        if decoupling:
            return predicted, torch.stack(terms).mean()
        return predicted

    @torch.no_grad()
    def predict(self, context_frames: torch.Tensor, future: int) -> torch.Tensor:
        """The `future` frames after `context_frames` (B, T, C, H, W), predicted autoregressively."""
        return self.rollout(context_frames, future)

    @_weights_once
    def rollout(self, context_frames: torch.Tensor, future: int) -> torch.Tensor:
        """`predict` with gradients: read every context frame, then feed back each prediction.

        The loop runs `T + future - 1` steps, a number fixed by the input's shape, so a trace of
        this method (`cellgen export --rollout`) unrolls it into a graph whose every shape is
        static, whatever the carry does from step to step (a growing history).
        """
        if future < 1 or context_frames.shape[1] < 1:
            raise ValueError(f"a rollout needs at least one context frame and one future frame, "
                             f"not {context_frames.shape[1]} → {future}")
        patched = reshape_patch(context_frames, self.config.patch)
        carry: Optional[Carry] = None
        prediction = None
        for t in range(patched.shape[1]):
            prediction, carry = self.step(self._layout(patched[:, t]), carry)
        predictions = [prediction]
        for _ in range(future - 1):
            prediction, carry = self.step(prediction, carry)
            predictions.append(prediction)
        return reshape_patch_back(torch.stack(predictions, dim=1), self.config.patch)

    def describe(self) -> str:
        cell = self.stack.layers[0]
        name = getattr(getattr(cell, "cell_graph", None), "name", "?")
        count = sum(p.numel() for p in self.parameters())
        if self.config.heterogeneous:
            name = f"{self.config.spec} ({self.cell_names()})"
        return (f"{name} × {len(self.stack.layers)} layers on {self.map_size[0]}×{self.map_size[1]} maps "
                f"(patch {self.config.patch}), {count} parameters")
