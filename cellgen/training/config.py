"""How a run trains: the options of `cellgen train` that are not the model's or the data's."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from cellgen.errors import CellgenError


@dataclass(frozen=True)
class TrainConfig:
    steps: int                      # optimizer steps in all (a resumed run continues up to it)
    batch_size: int = 8             # the global batch: split over processes under torchrun
    lr: float = 1e-3                # Adam, constant, as predrnn-pytorch
    seed: int = 0                   # model init, batch order, scheduled-sampling coins
    scheduled_sampling: int = 0     # step at which η reaches 0; 0: off (always the model's own frames)
    eval_every: int = 0             # 0: five evaluations over the run
    eval_sequences: int = 128       # test sequences per evaluation (the first ones of the split)
    eval_batch_size: int = 16
    checkpoint_every: int = 0       # 0: at every evaluation
    picture_sequences: int = 3      # sequences in predictions.png and predictions.gif
    lr_schedule: str = "constant"   # constant, cosine or onecycle over `steps` (schedule.py)
    clip_grad: float = 0.0          # max 2-norm of the gradient; 0: no clipping
    ssim: str = "gaussian"          # the SSIM convention of evaluations (metrics.py)
    log: str = "csv"                # csv: metrics.csv; tensorboard: also TensorBoard events (logs.py)
    decouple_beta: float = 0.0      # PredRNN-V2: loss = MSE + β · decoupling loss (sequence/decoupling.py)
    reverse_scheduled_sampling: bool = False  # PredRNN-V2's, instead of `scheduled_sampling` (sequence/sampling.py)
    r_sampling_step_1: int = 25000  # its schedule, OpenSTL's names and defaults
    r_sampling_step_2: int = 50000
    r_exp_alpha: float = 5000.0

    # Options a resumed run must keep, or it would not continue the same run.
    LOCKED_ON_RESUME = ("batch_size", "lr", "seed", "scheduled_sampling", "lr_schedule", "clip_grad", "ssim",
                        "decouple_beta", "reverse_scheduled_sampling", "r_sampling_step_1", "r_sampling_step_2",
                        "r_exp_alpha")

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_sequences", "eval_batch_size", "picture_sequences"):
            if getattr(self, name) < 1:
                raise CellgenError(f"--{name.replace('_', '-')} must be positive, not {getattr(self, name)}")
        for name in ("eval_every", "checkpoint_every", "scheduled_sampling"):
            if getattr(self, name) < 0:
                raise CellgenError(f"--{name.replace('_', '-')} cannot be negative ({getattr(self, name)})")
        if not self.lr > 0:
            raise CellgenError(f"--lr must be positive, not {self.lr}")
        if not self.decouple_beta >= 0:
            raise CellgenError(f"--decouple-beta must be a weight ≥ 0 (0: plain MSE), not {self.decouple_beta}")
        if self.reverse_scheduled_sampling:
            if self.scheduled_sampling:
                raise CellgenError("--reverse-scheduled-sampling and --scheduled-sampling are two schedules of the "
                                   "same masks: pick one",
                                   hint="PredRNN-V2 trains with --reverse-scheduled-sampling alone")
            if not 0 <= self.r_sampling_step_1 < self.r_sampling_step_2:
                raise CellgenError(f"--r-sampling-step-1 {self.r_sampling_step_1} must be ≥ 0 and below "
                                   f"--r-sampling-step-2 {self.r_sampling_step_2}")
            if not self.r_exp_alpha > 0:
                raise CellgenError(f"--r-exp-alpha must be positive, not {self.r_exp_alpha}")
        if not self.clip_grad >= 0:
            raise CellgenError(f"--clip-grad must be a positive norm (or 0: no clipping), not {self.clip_grad}")
        from cellgen.training.logs import LOGS
        from cellgen.training.metrics import check_ssim_convention
        from cellgen.training.schedule import SCHEDULES

        if self.lr_schedule not in SCHEDULES:
            raise CellgenError(f"unknown --lr-schedule `{self.lr_schedule}`", hint=f"choose one of {', '.join(SCHEDULES)}")
        if self.log not in LOGS:
            raise CellgenError(f"unknown --log `{self.log}`", hint=f"choose {' or '.join(LOGS)}")
        check_ssim_convention(self.ssim)

    @property
    def evaluation_interval(self) -> int:
        return self.eval_every or max(1, self.steps // 5)

    @property
    def checkpoint_interval(self) -> int:
        return self.checkpoint_every or self.evaluation_interval

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
