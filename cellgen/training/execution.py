"""How `cellgen train` runs a model, as opposed to what it computes: device, precision, layout,
activation checkpointing, compilation. None of it changes the function trained (up to float
rounding), so a resumed run may change any of it, and none of it is locked in a checkpoint.

This module imports no torch: the CLI builds every subcommand's parser (`cellgen check`
included) from it. What the options do is in precision.py (autocast, the step),
SequenceModel.set_execution (layout, checkpointing, compile) and distributed.py (device).
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICE_FORMS = "auto, cpu, cuda or cuda:N"


@dataclass(frozen=True)
class Execution:
    """`--precision`, `--channels-last`, `--checkpoint-activations`, `--compile`. The defaults are
    chosen by measurement: docs/training.md, "Precision and speed"."""

    precision: str = "fp32"
    channels_last: bool = False
    checkpoint_activations: bool = False
    compile: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def prepare(self, model, device):
        """Set the model up to run this way on `device`; returns the step's `Precision` (its
        errors, e.g. fp16 on a CPU, come before any work)."""
        from cellgen.training.precision import resolve_precision

        precision = resolve_precision(self.precision, device)
        model.set_execution(channels_last=self.channels_last, checkpoint_activations=self.checkpoint_activations,
                            compile_layers=self.compile)
        return precision


def add_execution_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("execution (how the steps run; may change on --resume)")
    group.add_argument("--precision", choices=PRECISIONS, default=Execution.precision,
                       help="fp32, or autocast to bf16 / fp16 with fp32 master weights (fp16: CUDA only, with a "
                            "grad scaler) (default fp32)")
    group.add_argument("--channels-last", action="store_true",
                       help="NHWC weights and activations (2D cells)")
    group.add_argument("--checkpoint-activations", action="store_true",
                       help="keep only each time step's carry for backward and recompute the rest: less memory "
                            "for long rollouts, one more forward per step")
    group.add_argument("--compile", action="store_true",
                       help="torch.compile one step of each distinct layer (identical layers share it)")


def execution_of(args: argparse.Namespace) -> Execution:
    return Execution(args.precision, args.channels_last, args.checkpoint_activations, args.compile)


def parse_device(text: str) -> str:
    """`--device`'s argparse type: auto, cpu, cuda or cuda:N. Whether the machine has that device
    is checked later (distributed.choose_device), so a typo is a usage error and a missing GPU
    a clear one of its own."""
    kind, sep, index = text.partition(":")
    if text in ("auto", "cpu", "cuda") or (kind == "cuda" and sep and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected {DEVICE_FORMS} (N: a GPU's index), not {text!r}")
