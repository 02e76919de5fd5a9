"""The training loop: steps, periodic evaluation, checkpoints, metrics.json and predictions.png.

Step s (0-based) reads the sequences `BatchSchedule.indices(s)`, the scheduled-sampling coins
of (seed, s), runs the sequence model over all T frames (teacher forcing on the context) and
takes an Adam step on the MSE of its predictions of frames 1 … T-1, predrnn-pytorch's loss.
Nothing else carries randomness, so the loss at step s depends only on the weights and the
optimizer state before it: a checkpoint restores both, and a resumed run continues the same
trajectory.

Files in the run directory (process 0 writes them, each atomically):
    checkpoint.pt      the latest checkpoint (every `checkpoint_interval` steps and at the end)
    best.pt            the checkpoint of the evaluation with the lowest test MSE so far
    metrics.json       configuration, loss at every step, every evaluation so far
    metrics.csv        one row per step and per evaluation (logs.py)
    curves.png         loss and test MSE against the step (curves.png)
    predictions.png    ground truth vs prediction of the latest evaluation
    predictions.gif    the same, animated frame by frame (animation.py)
    tensorboard/       TensorBoard events, with `--log tensorboard`
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from cellgen.data.sources import DataConfig, Splits, open_splits
from cellgen.errors import CellgenError
from cellgen.sequence import ReverseScheduledSampling, ScheduledSampling, SequenceConfig, SequenceModel
from cellgen.training.batches import BatchSchedule, check_batch_size, dataset_length, load_batch, to_device
from cellgen.training.checkpoint import FILENAME, save_checkpoint
from cellgen.training.config import TrainConfig
from cellgen.training.distributed import Distributed
from cellgen.training.evaluate import Evaluation, MadeOnce, evaluate
from cellgen.training.execution import Execution
from cellgen.training.precision import TrainStep
from cellgen.files import remove_stale_temp_files, write_json_atomically
from cellgen.training import signals
from cellgen.training.progress import Progress
from cellgen.training.strip import write_prediction_strip
from cellgen.training import logs
from cellgen.training.animation import write_prediction_animation
from cellgen.training.curves import write_curves
from cellgen.training.metrics import describe_conventions
from cellgen.training.schedule import clip_gradients, learning_rate, set_learning_rate

METRICS_FILE = "metrics.json"
PICTURE_FILE = "predictions.png"
ANIMATION_FILE = "predictions.gif"
CURVES_FILE = "curves.png"
BEST_FILE = "best.pt"


@dataclass
class RunState:
    """What a checkpoint restores besides weights: where the run is and what it measured."""

    step: int = 0
    loss_history: list = field(default_factory=list)
    evaluations: list = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    step_log: list = field(default_factory=list)    # [step, learning rate, gradient norm] per step


@dataclass
class Run:
    out: Path
    model_config: SequenceConfig
    data_config: DataConfig
    train_config: TrainConfig
    dist: Distributed
    resume: Optional[dict] = None      # a loaded checkpoint to continue from
    show_progress: bool = True
    splits: Optional[Splits] = None    # datasets given in Python (cellgen.training.train), else from data_config
    execution: Execution = field(default_factory=Execution)  # precision, layout, checkpointing, compile


def train(run: Run) -> dict:
    """Train to `train_config.steps`; returns the final metrics.json content."""
    cfg, data, dist = run.train_config, run.data_config, run.dist
    check_batch_size(cfg.batch_size, dist.world)
    splits = run.splits or open_splits(data)
    test, baselines = MadeOnce(splits.test), {}
    if tuple(run.model_config.frame_size) != tuple(splits.frame_size) or \
            run.model_config.frame_channels != splits.channels:
        raise CellgenError(f"the model is built for {run.model_config.frame_size} frames with "
                           f"{run.model_config.frame_channels} channel(s), the data has {splits.frame_size} with "
                           f"{splits.channels}")
    torch.manual_seed(cfg.seed)
    model = SequenceModel(run.model_config).to(dist.device)
    if cfg.decouple_beta and model.adapter is None:
        raise CellgenError(f"--decouple-beta needs a cell that outputs its memory increments, `output h', delta_c, "
                           f"delta_m`; {run.model_config.spec} does not",
                           hint="PredRNN-V2's cells do: train predrnnv2 or predrnnv2_ln (docs/outputs.md)")
    if model.adapter is not None and not cfg.decouple_beta:
        model.adapter.requires_grad_(False)  # outside the loss: DDP must not wait for its gradient
    precision = run.execution.prepare(model, dist.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state = RunState()
    if run.resume is not None:
        model.load_state_dict(run.resume["model"])
        optimizer.load_state_dict(run.resume["optimizer"])
        state = RunState(int(run.resume["step"]), list(run.resume["loss_history"]), list(run.resume["evaluations"]),
                         float(run.resume.get("train_seconds", 0.0)), float(run.resume.get("eval_seconds", 0.0)),
                         list(run.resume.get("step_log", [])))
    if dist.is_main:
        run.out.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(run.out)
    board = logs.open_tensorboard(cfg.log, run.out, state.step, describe_conventions(cfg.ssim)) if dist.is_main else None
    network = dist.wrap(model)
    train_step = TrainStep(network, optimizer, precision, data.context,
                           on_gradients=lambda: clip_gradients(model.parameters(), cfg.clip_grad),
                           decouple_beta=cfg.decouple_beta)
    schedule = BatchSchedule(cfg.batch_size, cfg.seed, dataset_length(splits.train))
    sampling = ScheduledSampling(cfg.scheduled_sampling)
    reverse = ReverseScheduledSampling(cfg.r_sampling_step_1, cfg.r_sampling_step_2, cfg.r_exp_alpha) \
        if cfg.reverse_scheduled_sampling else None
    per_process = cfg.batch_size // dist.world
    rows = slice(dist.rank * per_process, (dist.rank + 1) * per_process)
    progress = Progress(cfg.steps, state.step, sequences_per_step=cfg.batch_size,
                        enabled=run.show_progress and dist.is_main)
    if dist.is_main:
        progress.message(f"training {model.describe()} on {data.describe()}; "
                         f"{cfg.steps - state.step} steps to go, global batch {cfg.batch_size}"
                         + (f" over {dist.world} processes ({dist.backend})" if dist.active else ""))
    model.train()
    try:
        for step in range(state.step, cfg.steps):
            began = time.perf_counter()
            video = to_device(load_batch(splits.train, schedule.shard(step, dist.rank, dist.world)), dist.device)
            if reverse is None:
                mask, mask_start = sampling.mask(step, cfg.batch_size, data.future - 1, cfg.seed), None
            else:   # steps 1 … T-2, context steps included (PredRNN-V2)
                mask, mask_start = reverse.mask(step, cfg.batch_size, data.context, data.future, cfg.seed), 1
            mask = None if mask is None else mask[rows].to(dist.device)
            rate = learning_rate(cfg.lr_schedule, cfg.lr, step, cfg.steps)
            set_learning_rate(optimizer, rate)
            value = dist.average(train_step(video, mask, mask_start))
            grad_norm = train_step.gradients_result
            state.step = step + 1
            state.train_seconds += time.perf_counter() - began
            if not math.isfinite(value):
                raise CellgenError(f"the training loss became {value} at step {state.step}",
                                   hint="lower --lr, or resume from the last checkpoint with a smaller one")
            state.loss_history.append([state.step, value])
            state.step_log.append([state.step, rate, grad_norm])
            if board is not None:
                board.step(state.step, value, rate, grad_norm)
            progress.update(state.step, value)
            last = state.step == cfg.steps
            evaluated = last or state.step % cfg.evaluation_interval == 0
            if evaluated and dist.is_main:
                began = time.perf_counter()
                result = evaluate(model, test, context=data.context, future=data.future,
                                  sequences=cfg.eval_sequences, batch_size=cfg.eval_batch_size,
                                  device=dist.device, keep=cfg.picture_sequences, ssim=cfg.ssim,
                                  baselines=baselines)
                state.eval_seconds += time.perf_counter() - began
                state.evaluations.append({"step": state.step, **result.results})
                write_prediction_strip(run.out / PICTURE_FILE, result.truth, result.prediction, data.context)
                write_prediction_animation(run.out / ANIMATION_FILE, result.truth, result.prediction, data.context)
                if board is not None:
                    board.evaluation(state.evaluations[-1])
                if result.results["model"]["mse"] <= min(e["model"]["mse"] for e in state.evaluations):
                    save_checkpoint(run.out / BEST_FILE, checkpoint_payload(model, optimizer, run, state))
                progress.message(f"step {state.step}: {result.summary_line()}")
            stopping = signals.stop_agreed(dist)  # SIGINT/SIGTERM: checkpoint this step, then stop
            if (evaluated or last or stopping or state.step % cfg.checkpoint_interval == 0) and dist.is_main:
                save_checkpoint(run.out / FILENAME, checkpoint_payload(model, optimizer, run, state))
                write_json_atomically(run.out / METRICS_FILE, metrics_document(model, run, state))
                logs.write_metrics_csv(run.out / logs.CSV_FILE,
                                       logs.csv_rows(state.loss_history, state.step_log, state.evaluations))
                write_curves(run.out / CURVES_FILE, state.loss_history, state.evaluations)
            if stopping and not last:
                raise signals.stopped_at(state.step, run.out / FILENAME)
    finally:
        progress.close()
        if board is not None:
            board.close()
    return metrics_document(model, run, state)


def checkpoint_payload(model: SequenceModel, optimizer, run: Run, state: RunState) -> dict:
    return {
        "step": state.step,
        "model_config": run.model_config.to_dict(),
        "data_config": run.data_config.to_dict(),
        "train_config": run.train_config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "loss_history": state.loss_history,
        "evaluations": state.evaluations,
        "train_seconds": state.train_seconds,
        "eval_seconds": state.eval_seconds,
        "step_log": state.step_log,
    }


def metrics_document(model: SequenceModel, run: Run, state: RunState) -> dict:
    """metrics.json: how the run was set up, its loss at every step, and every evaluation."""
    model_config = {k: v for k, v in run.model_config.to_dict().items() if k != "spec_text"}
    graph = getattr(model.stack.layers[0], "cell_graph", None)
    return {
        "spec": run.model_config.spec,
        # a heterogeneous stack names every cell (`CausalLSTM, GHU, CausalLSTM ×3`), not its bottom one
        "cell": model.cell_names() if model.config.heterogeneous else getattr(graph, "name", None),
        "model": model_config,
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": run.data_config.to_dict(),
        "train": run.train_config.to_dict(),
        "execution": run.execution.to_dict(),
        "processes": run.dist.world,
        "step": state.step,
        "train_seconds": round(state.train_seconds, 3),
        "eval_seconds": round(state.eval_seconds, 3),
        "metric_conventions": describe_conventions(run.train_config.ssim),
        "ssim_convention": run.train_config.ssim,
        "loss": state.loss_history,
        "evaluations": state.evaluations,
    }


def evaluation_of(model: SequenceModel, data: DataConfig, sequences: int, batch_size: int, keep: int = 3,
                  device: torch.device = torch.device("cpu"), ssim: str = "gaussian") -> Evaluation:
    """One evaluation of a model on a data config's test split (`cellgen eval`)."""
    splits = open_splits(data)
    return evaluate(model, splits.test, context=data.context, future=data.future, sequences=sequences,
                    batch_size=batch_size, device=device, keep=keep, ssim=ssim)
