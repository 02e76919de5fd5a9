"""Export a trained sequence model to ONNX or TorchScript, and check the file against PyTorch.

Two kinds of graph, both in pixel space with the patching folded in:

* **step** (`StepSignature`): one step of the model, the carry as named tensors,

      inputs   frame (B, C, H, W)  and the carry: layers.{l}.{state}, window.{input}.{i}, …
      outputs  next_frame (B, C, H, W)  and the new carry, as `{name}.next`, in the same order

  A caller runs it like the model: zeros for the carry at t = 0 (`StepSignature.zero_carry`),
  the observed frames one by one, then each prediction fed back as the next frame. It is the
  most flexible graph (any number of observed and predicted frames, streaming), but it exists
  only for a model whose carry is a fixed set of fixed-shape tensors that are all zero at
  t = 0 (`step_carry_problem` says why a model's is not).

* **rollout** (`RolloutSignature`): the whole prediction, `SequenceModel.predict`,

      inputs   context_frames (B, T_context, C, H, W)
      outputs  predicted_frames (B, T_future, C, H, W)

  The loop over time is unrolled while tracing, so every tensor inside has a static shape:
  this is how a cell whose state grows from step to step (E3D-LSTM's history of every past
  memory, ASTM's last τ memories, which grows from 1 to τ) is exported. The numbers of
  context and future frames are fixed at export.

`plan_export` picks the kind: the step when it can be exported, else the rollout (or what the
caller asks for). In both, the batch dimension is dynamic and the frame size fixed.

ONNX goes through torch.export (the `dynamo=True` exporter; it needs `onnxscript`). It keeps
every carry input, even one the step never reads (the bottom layer's zigzag `m`, which
arrives from the top layer instead), so the names line up on both sides. `check_export`
runs test sequences through the exported file (onnxruntime, or torch.jit.load) and through
the PyTorch model, and reports the largest difference of any predicted frame (and, for a
step, of any carry tensor).
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from cellgen.errors import CellgenError
from cellgen.files import write_atomically
from cellgen.sequence import SequenceModel, reshape_patch, reshape_patch_back

FORMATS = ("onnx", "torchscript")
MODES = ("auto", "step", "rollout")
TOLERANCE = 1e-4
PROBE_STEPS = 3   # steps `step_carry_problem` runs: a history grows from the first to the second


class ExportableStep(nn.Module):
    """`frame, *carry → next_frame, *new_carry`: a model step with flat tensor inputs and outputs."""

    def __init__(self, model: SequenceModel, carry_names: Sequence[str]):
        super().__init__()
        self.model = model
        self.carry_names = list(carry_names)

    def forward(self, frame: torch.Tensor, *carry: torch.Tensor):
        patch = self.model.config.patch
        prediction, new_carry = self.model.step(reshape_patch(frame, patch), dict(zip(self.carry_names, carry)))
        return (reshape_patch_back(prediction, patch),) + tuple(new_carry[name] for name in self.carry_names)


class ExportableRollout(nn.Module):
    """`context_frames → predicted_frames`: the model's whole prediction, as `SequenceModel.predict`."""

    def __init__(self, model: SequenceModel, future: int):
        super().__init__()
        self.model = model
        self.future = future

    def forward(self, context_frames: torch.Tensor) -> torch.Tensor:
        return self.model.rollout(context_frames, self.future)


@dataclass
class StepSignature:
    carry_names: list[str]
    carry_shapes: list[tuple[int, ...]]   # without the batch dimension
    frame_shape: tuple[int, ...]          # (C, H, W)
    kind = "step"

    @property
    def input_names(self) -> list[str]:
        return ["frame"] + self.carry_names

    @property
    def output_names(self) -> list[str]:
        return ["next_frame"] + [f"{name}.next" for name in self.carry_names]

    def zero_carry(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros((batch,) + shape) for shape in self.carry_shapes]

    def example(self, batch: int) -> tuple[torch.Tensor, ...]:
        return (torch.zeros((batch,) + self.frame_shape),) + tuple(self.zero_carry(batch))

    def module(self, model: SequenceModel) -> nn.Module:
        return ExportableStep(model, self.carry_names)

    def describe(self) -> str:
        return "one step (the carry in and out as named tensors, zeros at t = 0)"


@dataclass
class RolloutSignature:
    context: int                          # observed frames in
    future: int                           # predicted frames out
    frame_shape: tuple[int, ...]          # (C, H, W)
    kind = "rollout"

    @property
    def input_names(self) -> list[str]:
        return ["context_frames"]

    @property
    def output_names(self) -> list[str]:
        return ["predicted_frames"]

    def example(self, batch: int) -> tuple[torch.Tensor, ...]:
        return (torch.zeros((batch, self.context) + self.frame_shape),)

    def module(self, model: SequenceModel) -> nn.Module:
        return ExportableRollout(model, self.future)

    def describe(self) -> str:
        return f"the whole rollout: {self.context} observed frames in, {self.future} predicted frames out"


Signature = Union[StepSignature, RolloutSignature]


def _frame_shape(model: SequenceModel) -> tuple[int, ...]:
    return (model.config.frame_channels, *model.config.frame_size)


def _patched_probe(model: SequenceModel, batch: int = 2) -> torch.Tensor:
    return reshape_patch(torch.zeros((batch,) + _frame_shape(model)), model.config.patch)


def step_signature(model: SequenceModel) -> StepSignature:
    """The carry's names and shapes, found by one probe step of the model."""
    carry = model.zero_carry(_patched_probe(model))
    return StepSignature(list(carry), [tuple(t.shape[1:]) for t in carry.values()], _frame_shape(model))


def rollout_signature(model: SequenceModel, context: int, future: int) -> RolloutSignature:
    """The rollout of `context` observed frames into `future` predicted ones."""
    if context < 1 or future < 1:
        raise CellgenError(f"a rollout needs at least one observed and one predicted frame, not {context} → {future}")
    return RolloutSignature(context, future, _frame_shape(model))


# --- which graph -----------------------------------------------------------------------------

@torch.no_grad()
def step_carry_problem(model: SequenceModel, steps: int = PROBE_STEPS) -> Optional[str]:
    """Why the model's step cannot be exported with a fixed carry (None: it can).

    A step graph takes and returns the carry as tensors of fixed shapes, starting from zeros.
    That needs the carry's keys and shapes to stay the same from step to step (a state
    history that grows breaks it), and a zero carry to act as the model's own t = 0 (a
    history at t = 0 holds one entry; a zero carry of two entries would attend over an extra
    zero memory). Both are checked on `steps` steps of random frames.
    """
    model = model.eval()
    frames = torch.rand((steps,) + tuple(_patched_probe(model).shape), generator=torch.Generator().manual_seed(0))
    zero = model.zero_carry(frames[0])
    shapes = {key: tuple(value.shape[1:]) for key, value in zero.items()}
    own, from_zero = None, dict(zero)
    for t in range(steps):
        expected, own = model.step(frames[t], own)
        got, from_zero = model.step(frames[t], from_zero)
        changed = _shape_change(shapes, own, t + 1)
        if changed:
            return changed
        difference = float((expected - got).abs().max())
        if difference > TOLERANCE:
            return (f"a zero carry is not its state at t = 0 (predictions from the two differ by {difference:.3g} "
                    f"at step {t + 1})")
    return None


def _shape_change(shapes: dict[str, tuple], carry: dict[str, torch.Tensor], step: int) -> Optional[str]:
    """The first carry entry whose presence or shape differs from the probe's, said for a user."""
    for key in sorted(set(shapes) | set(carry)):
        if key not in carry or key not in shapes:
            where = "disappears" if key not in carry else "appears"
            return f"its carry entry `{key}` {where} at step {step}"
        now = tuple(carry[key].shape[1:])
        if now != shapes[key]:
            if key.endswith(".history"):
                return (f"its state history `{key}` grows from step to step ({shapes[key][0]} entries after "
                        f"step 1, {now[0]} after step {step})")
            return f"its carry entry `{key}` changes shape from {shapes[key]} after step 1 to {now} after step {step}"
    return None


@dataclass
class ExportPlan:
    signature: Signature
    reason: str          # why this kind of graph, for the user


def plan_export(model: SequenceModel, mode: str, context: int, future: int) -> ExportPlan:
    """The graph to export: `mode` "step", "rollout" (of `context` → `future` frames), or "auto"
    (the step if it can be exported, else the rollout)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if mode == "rollout":
        return ExportPlan(rollout_signature(model, context, future), "asked for (--rollout)")
    problem = step_carry_problem(model)
    if problem is None:
        return ExportPlan(step_signature(model), "its carry is a fixed set of tensors, zeros at t = 0")
    if mode == "step":
        raise CellgenError(f"this model's step cannot be exported on its own: {problem}",
                           hint="export the whole rollout instead: `cellgen export --rollout` (with --context N "
                                "--future N), or pass `rollout_signature(model, context, future)` in Python")
    return ExportPlan(rollout_signature(model, context, future), f"its step cannot be exported on its own: {problem}")


def _signature_for(model: SequenceModel, signature: Optional[Signature]) -> Signature:
    """The given signature, or the step's after checking that the step can be exported."""
    if signature is not None:
        return signature
    return plan_export(model, "step", 1, 1).signature


# --- writing ----------------------------------------------------------------------------------

def export_onnx(model: SequenceModel, path: Path, signature: Optional[Signature] = None) -> Signature:
    """Write the model's step (or the graph `signature` describes) as an ONNX file, atomically."""
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; say so before torch does)
    except ImportError:
        raise CellgenError("ONNX export needs the `onnx` and `onnxscript` packages",
                           hint="pip install 'cellgen[export]'") from None
    model = model.eval()
    signature = _signature_for(model, signature)
    module = signature.module(model).eval()
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} for _ in signature.input_names)
    if isinstance(signature, StepSignature):  # forward(frame, *carry): the carry is one argument
        dynamic = (dynamic[0], dynamic[1:])
    example = signature.example(2)  # not 1: torch.export would specialise a size-1 batch

    def write(handle):
        with _quiet_exporter(), _exact_no_op_rules():
            program = torch.onnx.export(module, example, None, dynamo=True, input_names=signature.input_names,
                                        output_names=signature.output_names, dynamic_shapes=dynamic,
                                        external_data=False, verbose=False)
        handle.write(program.model_proto.SerializeToString())

    try:
        write_atomically(Path(path), write)
    except CellgenError:
        raise
    except Exception as error:  # the exporter's own failure: say which graph and why, briefly
        raise CellgenError(f"ONNX export of this model's {signature.kind} failed: {_first_line(error)}",
                           hint=_other_kind_hint(signature)) from None
    return signature


def export_torchscript(model: SequenceModel, path: Path, signature: Optional[Signature] = None) -> Signature:
    """Write the model's step (or the graph `signature` describes) as traced TorchScript, atomically."""
    model = model.eval()
    signature = _signature_for(model, signature)
    module = signature.module(model).eval()
    try:
        with _quiet_exporter(), torch.no_grad():
            traced = torch.jit.trace(module, signature.example(2), check_trace=False)
    except Exception as error:  # noqa: BLE001 — the tracer raises many types
        raise CellgenError(f"TorchScript tracing of this model's {signature.kind} failed: {_first_line(error)}",
                           hint=_other_kind_hint(signature)) from None
    with _quiet_exporter():
        write_atomically(Path(path), lambda handle: torch.jit.save(traced, handle))
    return signature


def _first_line(error: Exception, limit: int = 300) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]


def _other_kind_hint(signature: Signature) -> Optional[str]:
    return "try exporting the whole rollout: --rollout" if isinstance(signature, StepSignature) else None


@contextlib.contextmanager
def _exact_no_op_rules():
    """Export without onnxscript's `x + 0 → x` rewrites, which also match constants within 1e-8
    of zero (onnxscript 0.7's pattern tolerance): they delete the `+ 1e-12` of a LayerNorm's
    variance (E3D-LSTM's official code, `layernorm eps 1e-12`), and a constant map then
    normalises to 0/0 = NaN under onnxruntime. The rules are dropped from the optimizer's
    default list while exporting, then put back. Should onnxscript rename them, this does
    nothing, and `check_export` still catches a graph that computes something else."""
    try:
        from onnxscript import rewriter
        from onnxscript.rewriter.rules.common import _no_op
        default = rewriter._DEFAULT_REWRITE_RULES
        no_op = {id(rule) for rule in _no_op.rules}
    except (ImportError, AttributeError):
        yield
        return
    rewriter._DEFAULT_REWRITE_RULES = tuple(rule for rule in default if id(rule) not in no_op)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = default


@contextlib.contextmanager
def _quiet_exporter():
    """Silence what the exporters print for every model: progress lines on stdout, log lines about
    torchvision ops, tracer warnings, and TorchScript's deprecation notices (documented in
    docs/training.md instead)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


EXPORTERS: dict[str, Callable[..., Signature]] = {"onnx": export_onnx, "torchscript": export_torchscript}


# --- checking --------------------------------------------------------------------------------

Runner = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]


def onnx_runner(path: Path, signature: Signature) -> Runner:
    try:
        import onnxruntime
    except ImportError:
        raise CellgenError("checking an ONNX export needs onnxruntime", hint="pip install 'cellgen[export]', "
                           "or pass --no-check") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    declared = [i.name for i in session.get_inputs()]
    if declared != signature.input_names:
        raise CellgenError(f"{path}: its inputs are {declared}, expected {signature.input_names}")

    def run(inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        feeds = {name: tensor.detach().cpu().numpy() for name, tensor in zip(signature.input_names, inputs)}
        return [torch.from_numpy(out) for out in session.run(signature.output_names, feeds)]

    return run


def torchscript_runner(path: Path, signature: Signature) -> Runner:
    with _quiet_exporter():
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            outputs = module(*inputs)
        return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]

    return run


def pytorch_runner(model: SequenceModel, signature: Signature) -> Runner:
    module = signature.module(model.eval()).eval()

    def run(inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            outputs = module(*inputs)
        return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]

    return run


def rollout(run: Runner, signature: StepSignature, video: torch.Tensor, context: int
            ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Feed a step `video`'s first `context` frames, then its predictions; all T-1 predictions and the last carry."""
    carry = signature.zero_carry(video.shape[0])
    predictions, frame = [], None
    for t in range(video.shape[1] - 1):
        frame = video[:, t] if t < context else frame
        outputs = run([frame] + carry)
        frame, carry = outputs[0], outputs[1:]
        predictions.append(frame)
    return torch.stack(predictions, dim=1), carry


@dataclass
class CheckResult:
    max_abs_diff: float          # exported file vs PyTorch, over every prediction (and carry tensor)
    start_diff: float            # a step's zero carry vs the model's own t = 0 (its `predict`); 0 for a rollout
    steps: int                   # model steps per sequence
    sequences: int

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= TOLERANCE and self.start_diff <= TOLERANCE


def check_export(kind: str, path: Path, model: SequenceModel, signature: Signature, video: torch.Tensor,
                 context: int) -> CheckResult:
    """Run `video` (B, T, C, H, W) through the exported file and through PyTorch; compare.

    A step is rolled out over all T frames (the first `context` observed, then its own
    predictions); a rollout reads the first `signature.context` frames (`context` is ignored).
    """
    runner = onnx_runner(path, signature) if kind == "onnx" else torchscript_runner(path, signature)
    try:
        if isinstance(signature, RolloutSignature):
            return _check_rollout(runner, model, signature, video)
        return _check_step(runner, model, signature, video, context)
    except CellgenError:
        raise
    except Exception as error:  # noqa: BLE001 — onnxruntime and TorchScript raise their own types
        hint = ("a cell whose state changes shape from step to step (a growing history) cannot be exported as "
                "a fixed-shape step: export the whole rollout (--rollout)"
                if isinstance(signature, StepSignature) else None)
        raise CellgenError(f"the exported {kind} {signature.kind} cannot run a test sequence: {_first_line(error)}",
                           hint=hint) from None


def _check_step(runner: Runner, model: SequenceModel, signature: StepSignature, video: torch.Tensor,
                context: int) -> CheckResult:
    """Both step graphs rolled out from a zero carry; then that rollout against the model's own `predict`."""
    exported_frames, exported_carry = rollout(runner, signature, video, context)
    torch_frames, torch_carry = rollout(pytorch_runner(model, signature), signature, video, context)
    diffs = [float((exported_frames - torch_frames).abs().max())]
    diffs += [float((a - b).abs().max()) for a, b in zip(exported_carry, torch_carry)]
    own = model.predict(video[:, :context], video.shape[1] - context)
    start = float((own - torch_frames[:, context - 1:]).abs().max())
    return CheckResult(max(diffs), start, video.shape[1] - 1, video.shape[0])


def _check_rollout(runner: Runner, model: SequenceModel, signature: RolloutSignature, video: torch.Tensor
                   ) -> CheckResult:
    """The exported rollout against `model.predict` on the same observed frames."""
    if video.shape[1] < signature.context:
        raise CellgenError(f"the check needs {signature.context} observed frames; the test sequences have "
                           f"{video.shape[1]}", hint="pass --no-check, or a smaller --context")
    observed = video[:, :signature.context]
    exported = runner([observed])[0]
    expected = model.predict(observed, signature.future)
    if exported.shape != expected.shape:
        raise CellgenError(f"the exported rollout returned {tuple(exported.shape)}, expected {tuple(expected.shape)}")
    difference = float((exported - expected).abs().max())
    return CheckResult(difference, 0.0, signature.context + signature.future - 1, video.shape[0])
