"""Checkpoints: one self-contained file per run directory, `DIR/checkpoint.pt`, replaced atomically.

A checkpoint is a `torch.save`d dict of plain values and tensors (loadable with
`weights_only=True`, so opening one never runs code from it):

    format, version       "cellgen-sequence-checkpoint", 1
    step                  optimizer steps done
    model_config          SequenceConfig.to_dict(): spec name AND spec text, params, layers, patch, …
    data_config           DataConfig.to_dict(): which frames, seed, context/future
    train_config          TrainConfig.to_dict(): batch, lr, seed, scheduled sampling, …
    model, optimizer      state_dicts
    loss_history          [[step, loss], …] since step 1, so metrics.json survives a resume
    evaluations           every evaluation so far (metrics.json's list)
    train_seconds         seconds spent in optimizer steps so far
    eval_seconds          seconds spent evaluating so far

The spec's text is stored, not just its name: `cellgen eval` and `--resume` rebuild the same
cell even if the spec file has changed or is gone. All randomness of a run is derived from
(seed, step) (model init, data, scheduled-sampling coins), so no RNG state is needed to resume
exactly. The write goes through a temp file and a rename: a run killed at any moment leaves the
previous checkpoint (or none) in place, never a torn one.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from cellgen.errors import CellgenError
from cellgen.files import write_atomically

FORMAT = "cellgen-sequence-checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"
REQUIRED = ("step", "model_config", "data_config", "train_config", "model", "optimizer", "loss_history",
            "evaluations")


def checkpoint_path(target: Path) -> Path:
    """A run directory → its checkpoint file; a file path stays as it is."""
    target = Path(target)
    return target / FILENAME if target.is_dir() else target


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` (plus format and version) to `path` atomically."""
    payload = {"format": FORMAT, "version": VERSION, **payload}
    write_atomically(Path(path), lambda handle: torch.save(payload, handle))


def load_checkpoint(target: Path) -> dict[str, Any]:
    """Read a checkpoint file (or a run directory's); every failure is a CellgenError saying why."""
    path = checkpoint_path(target)
    if not path.exists():
        where = f"{target} has no {FILENAME}" if Path(target).is_dir() else f"no such checkpoint: {path}"
        raise CellgenError(where, hint="give a checkpoint file or the --out directory of a `cellgen train` run")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CellgenError(f"{path} is not a readable checkpoint: it is truncated, corrupt or not a torch file "
                           f"({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CellgenError(f"{path} is a torch file but not a cellgen training checkpoint",
                           hint="checkpoints are written by `cellgen train` as DIR/checkpoint.pt")
    if payload.get("version") != VERSION:
        raise CellgenError(f"{path} is a version {payload.get('version')} checkpoint; this cellgen reads version "
                           f"{VERSION}")
    missing = [key for key in REQUIRED if key not in payload]
    if missing:
        raise CellgenError(f"{path} lacks {', '.join(missing)}: not a complete cellgen checkpoint")
    return payload


def model_from_checkpoint(payload: dict[str, Any]):
    """The SequenceModel a checkpoint describes, with its trained weights, in eval mode."""
    from cellgen.sequence import SequenceConfig, SequenceModel

    model = SequenceModel(SequenceConfig.from_dict(payload["model_config"]))
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise CellgenError(f"the checkpoint's weights do not fit the model it describes: "
                           f"{str(error).splitlines()[0]}") from None
    return model.eval()
