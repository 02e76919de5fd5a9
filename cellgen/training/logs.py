"""A run's logs: metrics.csv (always) and TensorBoard event files (`--log tensorboard`).

metrics.csv has one row per optimizer step and one per evaluation, in step order, with the
columns of `COLUMNS`; a cell that does not apply to a row's kind is empty:

    kind   step  lr     loss    grad_norm  mse   mae   ssim  psnr  copy_last_mse  blank_mse  sequences  ssim_convention
    train  1     0.001  0.0712  0.41
    …
    eval   40                               212.3 …                                          256        gaussian

It is rewritten whole (atomically) at every checkpoint from the run's state, so it always
matches checkpoint.pt: a run killed between checkpoints and resumed has exactly one row per
step. `ssim_convention` names the SSIM convention of each evaluation (cellgen/training/
metrics.py), so the file says how its numbers were computed.

TensorBoard needs the `tensorboard` package (pip install tensorboard, or the extra
`.[tensorboard]`); torch writes the events (`torch.utils.tensorboard`), under DIR/tensorboard/:
train/loss, train/lr, train/grad_norm at every step, eval/{mse,mae,ssim,psnr} and the
baselines' MSE at every evaluation. Events are appended as the run goes (TensorBoard's own
way); a resumed run purges the events after its checkpoint's step.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional

from cellgen.errors import CellgenError
from cellgen.files import write_bytes_atomically

CSV_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
LOGS = ("csv", "tensorboard")
COLUMNS = ("kind", "step", "lr", "loss", "grad_norm", "mse", "mae", "ssim", "psnr", "copy_last_mse", "blank_mse",
           "sequences", "ssim_convention")


def csv_rows(loss_history: list, step_log: list, evaluations: list) -> list[dict]:
    """The rows of metrics.csv: each step's loss, learning rate and gradient norm, then each
    evaluation after the step it followed."""
    extra = {int(step): (lr, norm) for step, lr, norm in step_log}
    rows = []
    for step, loss in loss_history:
        lr, norm = extra.get(int(step), (None, None))
        rows.append({"kind": "train", "step": int(step), "lr": lr, "loss": loss, "grad_norm": norm})
    for evaluation in evaluations:
        model = evaluation["model"]
        rows.append({"kind": "eval", "step": evaluation["step"], **{k: model[k] for k in ("mse", "mae", "ssim", "psnr")},
                     "copy_last_mse": evaluation["copy_last_frame"]["mse"],
                     "blank_mse": evaluation["blank_frame"]["mse"], "sequences": model["sequences"],
                     "ssim_convention": model.get("ssim_convention", "gaussian")})
    return sorted(rows, key=lambda row: (row["step"], row["kind"] == "eval"))


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else (f"{v:.9g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_bytes_atomically(Path(path), text.getvalue().encode("utf-8"))


class TensorBoardLog:
    """Scalars of a run as TensorBoard events, written by torch's SummaryWriter."""

    def __init__(self, out: Path, resume_step: int, conventions: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CellgenError("--log tensorboard needs the tensorboard package, which is not installed",
                               hint="pip install tensorboard (or pip install -e '.[tensorboard]' in a checkout); "
                                    "metrics.csv is written either way") from None
        self.writer = SummaryWriter(str(Path(out) / TENSORBOARD_DIR), purge_step=resume_step or None)
        if not resume_step:
            self.writer.add_text("metric_conventions", conventions, 0)

    def step(self, step: int, loss: float, lr: float, grad_norm: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)
        self.writer.add_scalar("train/grad_norm", grad_norm, step)

    def evaluation(self, evaluation: dict) -> None:
        step, model = evaluation["step"], evaluation["model"]
        for name in ("mse", "mae", "ssim", "psnr"):
            self.writer.add_scalar(f"eval/{name}", model[name], step)
        self.writer.add_scalar("eval/copy_last_frame_mse", evaluation["copy_last_frame"]["mse"], step)
        self.writer.add_scalar("eval/blank_frame_mse", evaluation["blank_frame"]["mse"], step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_tensorboard(log: str, out: Path, resume_step: int, conventions: str) -> Optional[TensorBoardLog]:
    if log not in LOGS:
        raise CellgenError(f"unknown --log `{log}`", hint=f"choose {' or '.join(LOGS)}")
    return TensorBoardLog(out, resume_step, conventions) if log == "tensorboard" else None
