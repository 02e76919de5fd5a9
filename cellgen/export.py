"""Export one step of a trained sequence model to ONNX or TorchScript, and check it against PyTorch.

The exported step is the model's `step` with the patching folded in, in pixel space:

    inputs   frame (B, C, H, W)  and the carry: layers.{l}.{state}, window.{input}.{i}, …
    outputs  next_frame (B, C, H, W)  and the new carry, as `{name}.next`, in the same order

A caller runs it like the model: zeros for the carry at t = 0 (`StepSignature.zero_carry`),
the observed frames one by one, then each prediction fed back as the next frame. The batch
dimension is dynamic; the frame size is fixed at export.

ONNX goes through torch.export (the `dynamo=True` exporter; it needs `onnxscript`). It keeps
every carry input, even one the step never reads (the bottom layer's zigzag `m`, which
arrives from the top layer instead), so the names line up on both sides. `check_export`
rolls a test sequence through the exported file (onnxruntime, or torch.jit.load) and through
the PyTorch model from the same start, and reports the largest difference of any predicted
frame or carry tensor; it also confirms that a zero carry is what the model does at t = 0,
which a cell whose state is not fixed-size tensors (a growing history) would fail.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from cellgen.errors import CellgenError
from cellgen.sequence import SequenceModel, reshape_patch, reshape_patch_back
from cellgen.files import write_atomically

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4


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


@dataclass
class StepSignature:
    carry_names: list[str]
    carry_shapes: list[tuple[int, ...]]   # without the batch dimension
    frame_shape: tuple[int, ...]          # (C, H, W)

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


def step_signature(model: SequenceModel) -> StepSignature:
    """The carry's names and shapes, found by one probe step of the model."""
    config = model.config
    frame_shape = (config.frame_channels, *config.frame_size)
    probe = reshape_patch(torch.zeros((2,) + frame_shape), config.patch)
    carry = model.zero_carry(probe)
    return StepSignature(list(carry), [tuple(t.shape[1:]) for t in carry.values()], frame_shape)


# --- writing ----------------------------------------------------------------------------------

def export_onnx(model: SequenceModel, path: Path) -> StepSignature:
    """Write the step as an ONNX file (atomically); returns its signature."""
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; say so before torch does)
    except ImportError:
        raise CellgenError("ONNX export needs the `onnx` and `onnxscript` packages",
                           hint="pip install 'cellgen[export]'") from None
    model = model.eval()
    signature = step_signature(model)
    step = ExportableStep(model, signature.carry_names).eval()
    batch = torch.export.Dim("batch", min=1)
    dynamic = ({0: batch}, tuple({0: batch} for _ in signature.carry_names))
    example = signature.example(2)  # not 1: torch.export would specialise a size-1 batch

    def write(handle):
        with _quiet_exporter():
            program = torch.onnx.export(step, example, None, dynamo=True, input_names=signature.input_names,
                                        output_names=signature.output_names, dynamic_shapes=dynamic,
                                        external_data=False, verbose=False)
        handle.write(program.model_proto.SerializeToString())

    try:
        write_atomically(Path(path), write)
    except CellgenError:
        raise
    except Exception as error:  # the exporter's own failure: say which model and why, briefly
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CellgenError(f"ONNX export of this model's step failed: {first}") from None
    return signature


def export_torchscript(model: SequenceModel, path: Path) -> StepSignature:
    """Write the step as a traced TorchScript module (atomically); returns its signature."""
    model = model.eval()
    signature = step_signature(model)
    step = ExportableStep(model, signature.carry_names).eval()
    with _quiet_exporter(), torch.no_grad():
        traced = torch.jit.trace(step, signature.example(2), check_trace=False)
        write_atomically(Path(path), lambda handle: torch.jit.save(traced, handle))
    return signature


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


EXPORTERS: dict[str, Callable[[SequenceModel, Path], StepSignature]] = {
    "onnx": export_onnx, "torchscript": export_torchscript}


# --- checking --------------------------------------------------------------------------------

Runner = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]


def onnx_runner(path: Path, signature: StepSignature) -> Runner:
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


def torchscript_runner(path: Path, signature: StepSignature) -> Runner:
    with _quiet_exporter():
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            return list(module(*inputs))

    return run


def pytorch_runner(model: SequenceModel, signature: StepSignature) -> Runner:
    step = ExportableStep(model.eval(), signature.carry_names).eval()

    def run(inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            return list(step(*inputs))

    return run


def rollout(run: Runner, signature: StepSignature, video: torch.Tensor, context: int
            ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Feed `video`'s first `context` frames, then the predictions; all T-1 predictions and the last carry."""
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
    max_abs_diff: float          # exported file vs PyTorch, over every prediction and carry tensor
    start_diff: float            # zero carry vs the model's own t = 0 (its `predict`)
    steps: int
    sequences: int

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= TOLERANCE and self.start_diff <= TOLERANCE


def check_export(kind: str, path: Path, model: SequenceModel, signature: StepSignature, video: torch.Tensor,
                 context: int) -> CheckResult:
    """Roll `video` (B, T, C, H, W) through the exported file and through PyTorch; compare."""
    runner = onnx_runner(path, signature) if kind == "onnx" else torchscript_runner(path, signature)
    reference = pytorch_runner(model, signature)
    try:
        exported_frames, exported_carry = rollout(runner, signature, video, context)
        torch_frames, torch_carry = rollout(reference, signature, video, context)
    except Exception as error:  # noqa: BLE001 — onnxruntime and TorchScript raise their own types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CellgenError(f"the exported {kind} step cannot roll out a test sequence: {first[:300]}",
                           hint="a cell whose state changes shape from step to step (a growing history) "
                                "cannot be exported as a fixed-shape step") from None
    diffs = [float((exported_frames - torch_frames).abs().max())]
    diffs += [float((a - b).abs().max()) for a, b in zip(exported_carry, torch_carry)]
    own = model.predict(video[:, :context], video.shape[1] - context)
    start = float((own - torch_frames[:, context - 1:]).abs().max())
    return CheckResult(max(diffs), start, video.shape[1] - 1, video.shape[0])

