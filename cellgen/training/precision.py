"""How a training step computes: `--precision fp32|bf16|fp16`, `--channels-last`, and the step itself.

Mixed precision is torch.autocast around the model's forward: convs and matmuls compute in
bf16 (or fp16), everything autocast keeps in fp32 (losses, reductions, norms) stays there, and
the weights stay fp32 — the master copy Adam updates; every gradient reaches them in fp32
(cellgen's fused conv returns each gradient in its input's dtype). The loss is taken in fp32.

- bf16 has fp32's exponent range, so it needs no loss scaling.
- fp16 does: on CUDA the step runs under a `torch.amp.GradScaler` (scaled loss, unscaled and
  checked gradients, a skipped step on inf/NaN). On a CPU without fp16 kernels (oneDNN reports
  none here, and a 5×5 conv took ~700× longer in fp16 than in fp32) it is refused.

`--channels-last` stores the weights, the frames and so every activation NHWC, the layout
oneDNN's (and cuDNN's tensor-core) convs compute in; 2D cells only.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from cellgen.errors import CellgenError

from cellgen.training.execution import PRECISIONS

DTYPES = dict(zip(PRECISIONS, (torch.float32, torch.bfloat16, torch.float16)))


@dataclass(frozen=True)
class Precision:
    name: str                 # fp32, bf16 or fp16
    device_type: str          # cpu or cuda

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def mixed(self) -> bool:
        return self.name != "fp32"

    def autocast(self):
        """The context a forward runs in: autocast to bf16/fp16, or nothing for fp32."""
        if not self.mixed:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> Optional["torch.amp.GradScaler"]:
        """fp16's loss scaler; None where no scaling is needed (fp32, bf16)."""
        if self.name != "fp16":
            return None
        return torch.amp.GradScaler(self.device_type)


def resolve_precision(name: str, device: torch.device) -> Precision:
    """The precision `--precision NAME` asks for on `device`, or a clear error where it cannot work."""
    if name not in DTYPES:
        raise CellgenError(f"unknown --precision `{name}`", hint=f"choose one of {', '.join(PRECISIONS)}")
    if device.type == "cpu":
        if name == "fp16" and not torch.backends.mkldnn.is_available() or \
                name == "fp16" and not torch.ops.mkldnn._is_mkldnn_fp16_supported():
            raise CellgenError("--precision fp16 cannot train on this CPU: it has no fp16 conv kernels (oneDNN "
                               "reports none), so every conv would run emulated, hundreds of times slower",
                               hint="use --precision bf16 (same speed-up where the CPU has bf16 kernels, and no "
                                    "loss scaling) or fp32; fp16 is for CUDA")
    elif device.type != "cuda":
        if name != "fp32":
            raise CellgenError(f"--precision {name} is implemented for CPU and CUDA, not {device.type}")
    return Precision(name, device.type)


class TrainStep:
    """One optimizer step on a batch: forward under the precision's autocast, fp32 MSE loss on
    frames 1 … T-1, backward (scaled for fp16), then `on_gradients` (e.g. clipping; for fp16 it
    sees the gradients unscaled), then the optimizer. Returns the loss (a 0-d fp32 tensor);
    `on_gradients`' result is kept as `gradients_result`. With `decouple_beta` > 0 (PredRNN-V2)
    the loss is MSE + β · the model's decoupling loss (cellgen/sequence/decoupling.py), in fp32."""

    def __init__(self, network: torch.nn.Module, optimizer: torch.optim.Optimizer, precision: Precision,
                 context: int, on_gradients: Optional[Callable[[], object]] = None, decouple_beta: float = 0.0):
        self.network, self.optimizer, self.precision, self.context = network, optimizer, precision, context
        self.on_gradients = on_gradients
        self.decouple_beta = decouple_beta
        self.scaler = precision.grad_scaler()
        self.gradients_result = None

    def __call__(self, video: torch.Tensor, mask: Optional[torch.Tensor] = None,
                 mask_start: Optional[int] = None) -> torch.Tensor:
        options = {} if mask_start is None else {"mask_start": mask_start}   # reverse scheduled sampling: 1
        with self.precision.autocast():
            if self.decouple_beta:
                predictions, decoupling = self.network(video, self.context, mask, decoupling=True, **options)
            else:
                predictions = self.network(video, self.context, mask, **options)
        loss = F.mse_loss(predictions.float(), video[:, 1:].float())
        if self.decouple_beta:
            loss = loss + self.decouple_beta * decoupling.float()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self._gradients_done()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            self._gradients_done()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return loss.detach()

    def _gradients_done(self) -> None:
        if self.on_gradients is not None:
            self.gradients_result = self.on_gradients()
