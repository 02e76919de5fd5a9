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
exactly. `load_checkpoint` validates the fields' types (a pydantic schema) and `check_resumable`
that they fit one another, so a damaged or edited file is refused saying what is wrong, not
with a traceback from deep in torch. The write goes through a temp file and a rename: a run killed at any moment leaves the
previous checkpoint (or none) in place, never a torn one.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
    _check_schema(path, payload)
    return payload


class _Optimizer(BaseModel):
    state: dict[int, dict[str, Any]]
    param_groups: list[dict[str, Any]]


class _Schema(BaseModel):
    """The fields of a checkpoint, by type: what a truncated, hand-edited or foreign file gets wrong."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="allow", protected_namespaces=())

    step: int = Field(ge=0, strict=True)
    model_config_: dict[str, Any] = Field(alias="model_config")
    data_config: dict[str, Any]
    train_config: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: _Optimizer
    loss_history: list[tuple[int, float]]
    evaluations: list[dict[str, Any]]
    train_seconds: float = Field(default=0.0, ge=0)
    eval_seconds: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _steps_agree(self):
        if self.loss_history and self.loss_history[-1][0] != self.step:
            raise ValueError(f"its loss history ends at step {self.loss_history[-1][0]}, not at its step {self.step}")
        return self


def _check_schema(path: Path, payload: dict) -> None:
    try:
        _Schema.model_validate(payload)
    except ValidationError as error:
        problems = []
        for item in error.errors()[:4]:
            where = ".".join(str(part) for part in item["loc"]) or "the checkpoint"
            given = item.get("input")
            shown = "" if isinstance(given, (dict, list, torch.Tensor)) or given is None else f" (it holds {given!r:.40})"
            problems.append(f"`{where}`: {item['msg'].removeprefix('Value error, ')}{shown}")
        raise CellgenError(f"{path} is damaged or was edited: {'; '.join(problems)}",
                           hint="resume from an intact checkpoint, or start the run again with --force") from None


def check_resumable(payload: dict[str, Any], path: Path) -> None:
    """That a checkpoint's parts fit one another: its spec text compiles to the model it
    describes, its weights fit that model, and its optimizer state fits the weights."""
    try:
        model = model_from_checkpoint(payload)
    except CellgenError as error:
        what = "" if "weights do not fit" in error.message else \
            "the model it describes cannot be rebuilt (its spec text or model config): "
        raise CellgenError(f"{path}: {what}{error.message}") from None
    optimizer = torch.optim.Adam(model.parameters())
    try:
        optimizer.load_state_dict(payload["optimizer"])
        for parameter, state in zip(model.parameters(), (optimizer.state.get(p, {}) for p in model.parameters())):
            for name, value in state.items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != parameter.shape:
                    raise ValueError(f"its `{name}` has shape {tuple(value.shape)} for a weight of shape "
                                     f"{tuple(parameter.shape)}")
    except (ValueError, KeyError, RuntimeError, TypeError, IndexError) as error:
        raise CellgenError(f"{path}: its optimizer state does not fit the model's weights: "
                           f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None


def model_from_checkpoint(payload: dict[str, Any]):
    """The SequenceModel a checkpoint describes, with its trained weights, in eval mode."""
    from cellgen.sequence import SequenceConfig, SequenceModel

    try:
        config = SequenceConfig.from_dict(payload["model_config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CellgenError(f"the checkpoint's model config is not one cellgen wrote: {type(error).__name__}: "
                           f"{error}") from None
    model = SequenceModel(config)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise CellgenError(f"the checkpoint's weights do not fit the model it describes: "
                           f"{str(error).splitlines()[0]}") from None
    return model.eval()
