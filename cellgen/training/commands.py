"""`cellgen train`, `cellgen eval` and `cellgen export`: the command-line face of this package.

    cellgen train SPEC --steps N --out DIR [--data moving-digits | moving-mnist:PATH | npy:PATH | frames:DIR]
                  [--param NAME=VALUE]… [--layers L | SPEC,SPEC,…] [--between L:SPEC]… [--diff-chain SPEC]
                  [--patch P] [--embed C] [--batch-size B] [--lr LR]
                  [--lr-schedule constant|cosine|onecycle] [--clip-grad NORM] [--scheduled-sampling STEP]
                  [--ssim gaussian|skimage] [--log csv|tensorboard] [--config run.toml] [--resume | --force] …
    cellgen train --model predrnnpp|predrnnpp_ln|mim|mim_ln [--layers L] --steps N --out DIR …
    cellgen eval CHECKPOINT [--sequences N] [--json] [-o FILE]
    cellgen export CHECKPOINT --format onnx|torchscript -o FILE [--force] [--no-check]
                   [--step | --rollout] [--context N] [--future N]

Run `train` under `torchrun --nproc_per_node=N -m cellgen train …` (or `torchrun $(which
cellgen) train …`) for DistributedDataParallel. CHECKPOINT is a checkpoint file or a run
directory. Everything eval and export need (spec text, params, data) is in the checkpoint.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from cellgen.errors import CellgenError

MODEL_DEFAULTS = {"layers": 2, "patch": 4, "embed": None, "opt_level": 2}
DATA_DEFAULTS = {"frame_size": 64, "context": 10, "future": 10, "test_sequences": 1000, "data_seed": 0}
RUN_FILES = ("checkpoint.pt", "best.pt", "metrics.json", "metrics.csv", "config.toml", "predictions.png",
             "predictions.gif", "curves.png")


def register_with_cli() -> None:
    from cellgen.cli import register

    from cellgen.runtime.denormals import flushing_denormals

    register("train", "train a sequence model of a cell to predict video frames", configure_train,
             flushing_denormals(run_train))
    register("eval", "re-compute a checkpoint's test metrics (MSE, MAE, SSIM, PSNR per frame)", configure_eval,
             flushing_denormals(run_eval))
    register("export", "export a checkpoint's model (one step, or the whole rollout) to ONNX or TorchScript, "
                       "checked against PyTorch",
             configure_export, flushing_denormals(run_export))


# --- train -----------------------------------------------------------------------------------

def configure_train(parser: argparse.ArgumentParser) -> None:
    from cellgen.cli import add_spec_arguments

    add_spec_arguments(parser)
    run = parser.add_argument_group("run")
    run.add_argument("--config", type=Path, default=None, metavar="FILE",
                     help="a TOML file of any of these options (flags given here override it)")
    run.add_argument("--steps", type=int, required=True, metavar="N", help="optimizer steps in all")
    run.add_argument("--out", type=Path, required=True, metavar="DIR",
                     help="run directory: checkpoint.pt, best.pt, metrics.csv/json, config.toml, pictures")
    run.add_argument("--resume", action="store_true", help="continue the run in DIR from its checkpoint")
    run.add_argument("--force", action="store_true", help="start a new run in a DIR that holds files")
    from cellgen.training.execution import add_execution_arguments, parse_device

    run.add_argument("--device", type=parse_device, default="auto", metavar="auto|cpu|cuda|cuda:N",
                     help="auto: CUDA if available, else CPU; under torchrun each process takes cuda:LOCAL_RANK")
    run.add_argument("--threads", type=int, default=None, metavar="N",
                     help="CPU threads per process (default: torch's; 1 is often faster on a busy machine)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                     help="under torchrun: how long a process waits for a silent peer before the run stops with "
                          "an error (default 300)")
    model = parser.add_argument_group("model (fixed for a run)")
    model.add_argument("--layers", default=None, metavar="L|SPEC,SPEC,…",
                       help="stacked cells (default 2), or the spec of each layer, bottom first (SPEC then "
                            "not given): a heterogeneous stack, docs/stacks.md")
    model.add_argument("--model", default=None, metavar="NAME",
                       help="OpenSTL's PredRNN++ or MIM model (predrnnpp, predrnnpp_ln, mim, mim_ln) of --layers "
                            "layers (default 4), instead of SPEC")
    model.add_argument("--between", action="append", default=[], metavar="L:SPEC",
                       help="a cell after layer L whose output layer L+1 reads (repeatable): e.g. 0:ghu, "
                            "PredRNN++'s gradient highway")
    model.add_argument("--diff-chain", default=None, metavar="SPEC",
                       help="MIM's chain of SPEC cells (mimn) between layers, giving layers ≥ 1 their second input")
    model.add_argument("--patch", type=int, default=None,
                       help="patch size: 64×64×1 → 16×16×16 with 4 (default 4)")
    model.add_argument("--embed", type=int, default=None, metavar="C",
                       help="1×1 input projection to C channels (default: none, the cells read the patched frame)")
    model.add_argument("-O", dest="opt_level", type=int, choices=(0, 1, 2), default=None,
                       help="the cells' optimisation level (default 2)")
    data = parser.add_argument_group("data (fixed for a run)")
    data.add_argument("--data", default=None, metavar="NAME[:PATH]",
                      help="moving-digits (generated, default), moving-mnist:PATH/mnist_test_seq.npy, npy:PATH "
                           "((T, N, H, W) or (N, T, C, H, W)), or frames:DIR (a folder of PNG frames per sequence)")
    data.add_argument("--frame-size", type=int, default=None, metavar="N", help="moving-digits frame side (64)")
    data.add_argument("--context", type=int, default=None, metavar="T", help="observed frames (10)")
    data.add_argument("--future", type=int, default=None, metavar="T", help="predicted frames (10)")
    data.add_argument("--test-sequences", type=int, default=None, metavar="N", help="size of the test split (1000)")
    data.add_argument("--data-seed", type=int, default=None, metavar="S", help="seed of the generated data (0)")
    train = parser.add_argument_group("training")
    train.add_argument("--batch-size", type=int, default=None, metavar="B",
                       help="global batch, split over torchrun's processes (8)")
    train.add_argument("--lr", type=float, default=None, help="Adam learning rate (0.001)")
    train.add_argument("--seed", type=int, default=None, help="model init, batch order, sampling coins (0)")
    train.add_argument("--scheduled-sampling", type=int, default=None, metavar="STEP",
                       help="read true future frames with probability falling linearly from 1 to 0 at STEP "
                            "(default 0: off)")
    train.add_argument("--reverse-scheduled-sampling", action="store_true", default=None,
                       help="PredRNN-V2's schedule (OpenSTL's): context frames too are sometimes the model's own, "
                            "the truth ever more often from --r-sampling-step-1 to -2 (exp, --r-exp-alpha)")
    train.add_argument("--r-sampling-step-1", type=int, default=None, metavar="STEP", help="(25000)")
    train.add_argument("--r-sampling-step-2", type=int, default=None, metavar="STEP", help="(50000)")
    train.add_argument("--r-exp-alpha", type=float, default=None, metavar="STEPS", help="(5000)")
    train.add_argument("--decouple-beta", type=float, default=None, metavar="B",
                       help="PredRNN-V2: train on MSE + B × the decoupling loss of its memory increments "
                            "(a cell with `output h', delta_c, delta_m`; default 0: MSE)")
    train.add_argument("--eval-every", type=int, default=None, metavar="N", help="default: 5 evaluations per run")
    train.add_argument("--eval-sequences", type=int, default=None, metavar="N", help="test sequences per evaluation (128)")
    train.add_argument("--eval-batch-size", type=int, default=None, metavar="N")
    train.add_argument("--checkpoint-every", type=int, default=None, metavar="N", help="default: at every evaluation")
    train.add_argument("--lr-schedule", choices=("constant", "cosine", "onecycle"), default=None,
                       help="learning rate over the run (default constant)")
    train.add_argument("--clip-grad", type=float, default=None, metavar="NORM",
                       help="clip the gradient's 2-norm to NORM (default 0: off)")
    train.add_argument("--ssim", choices=("gaussian", "skimage"), default=None,
                       help="SSIM convention: gaussian (11x11, default) or skimage (7x7 uniform, as predrnn-pytorch "
                            "and OpenSTL)")
    train.add_argument("--log", choices=("csv", "tensorboard"), default=None,
                       help="metrics.csv always; tensorboard adds TensorBoard events (needs tensorboard)")
    add_execution_arguments(parser)
    from cellgen.training.runconfig import defer_defaults

    defer_defaults(parser, required=("steps", "out"))   # SPEC or --model or --layers SPEC,…: _model_config   # last: it sees every option above


def run_train(args: argparse.Namespace) -> int:
    from cellgen.training.checkpoint import check_resumable, load_checkpoint
    from cellgen.training.distributed import peer_timeout, setup_distributed
    from cellgen.training.execution import execution_of
    from cellgen.training.runlock import run_lock
    from cellgen.training.signals import Interrupted, stop_requests
    from cellgen.training.runconfig import apply_config
    from cellgen.training.trainer import Run, train

    apply_config(args)
    if args.resume and args.force:
        raise CellgenError("--resume continues the run in --out; --force starts a new one there: pick one")
    if args.threads is not None:
        if args.threads < 1:
            raise CellgenError(f"--threads must be positive, not {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    payload = None
    if args.resume:
        if not (args.out / "checkpoint.pt").is_file():
            raise CellgenError(f"nothing to resume: {args.out / 'checkpoint.pt'} does not exist",
                               hint="start the run without --resume")
        payload = load_checkpoint(args.out)
        check_resumable(payload, args.out / "checkpoint.pt")  # its parts fit each other: say which does not
        model_config, data_config, train_config = _resumed_configs(args, payload)
        if payload["step"] >= train_config.steps:
            print(f"{args.out}: already trained {payload['step']} steps (--steps {train_config.steps}); nothing to do")
            return 0
    else:
        _check_fresh_out_dir(args.out, args.force)
        model_config, data_config, train_config = _fresh_configs(args)
        # a model that cannot be built (a misspelt param) is said before config.toml exists:
        # a directory holding only the config of a run that never began would refuse the retry
        from cellgen.sequence import SequenceModel

        SequenceModel(model_config)
    if payload is not None and train_config.lr_schedule != "constant" and \
            train_config.steps != payload["train_config"].get("steps"):
        raise CellgenError(f"--steps {train_config.steps} differs from the run's {payload['train_config']['steps']}, "
                           f"over which its {train_config.lr_schedule} schedule is laid",
                           hint="a run with a learning-rate schedule resumes to its own --steps")
    dist = setup_distributed(args.device, timeout=args.dist_timeout)
    try:
        with run_lock(args.out) if dist.is_main else contextlib.nullcontext(), stop_requests():
            if dist.is_main and not args.resume and (args.force or _never_checkpointed(args.out)):
                if not args.force:
                    print(f"note: {args.out} holds a run that stopped before its first checkpoint; "
                          "starting it afresh", file=sys.stderr)
                _clear_run_files(args.out)
            if dist.is_main:
                _save_resolved_config(args, model_config, data_config, train_config)
            dist.barrier()
            document = train(Run(args.out, model_config, data_config, train_config, dist, payload,
                                 show_progress=not args.quiet, execution=execution_of(args)))
        if dist.is_main:
            print(format_final(document, args.out))
    except RuntimeError as error:  # gloo/nccl: a collective timed out on a frozen or lost peer
        if not dist.active or (timed_out := peer_timeout(error)) is None:
            raise
        raise timed_out from None
    except Interrupted as stop:  # see cellgen/training/signals.py
        print(f"{signal.Signals(stop.signum).name}: {stop}", file=sys.stderr)
        return 128 + stop.signum
    finally:
        dist.shutdown()
    return 0


def _save_resolved_config(args, model_config, data_config, train_config) -> None:
    """DIR/config.toml: every option's value for this run (runconfig.py)."""
    from cellgen.files import write_bytes_atomically
    from cellgen.training.runconfig import CONFIG_FILE, CONFIG_HEADER, dump_toml, resolved_config

    data = data_config.name + (f":{data_config.path}" if data_config.path else "")
    effective = {**train_config.to_dict(), **{k: getattr(model_config, k) for k in MODEL_DEFAULTS},
                 "frame_size": data_config.frame_size, "context": data_config.context, "future": data_config.future,
                 "test_sequences": data_config.test_sequences, "data_seed": data_config.seed, "data": data}
    if data_config.name != "moving-digits":
        effective.pop("frame_size")
    config = resolved_config(args, effective)
    config["params"] = {**model_config.params}
    args.out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(args.out / CONFIG_FILE, (CONFIG_HEADER + "\n" + dump_toml(config)).encode("utf-8"))


def _clear_run_files(out: Path) -> None:
    """Only this command's own files: a new run must not mix with the old."""
    from cellgen.training.logs import TENSORBOARD_DIR

    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    for event in (out / TENSORBOARD_DIR).glob("events.out.tfevents.*"):
        with contextlib.suppress(OSError):
            event.unlink()


def _check_fresh_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CellgenError(f"--out {out} is a file, not a directory")
    if not force and _never_checkpointed(out):
        return  # its files are replaced under the run lock (`_clear_run_files`)
    if out.is_dir() and any(not _ours(entry.name) for entry in out.iterdir()) and not force:
        ours = [name for name in RUN_FILES if (out / name).exists()]
        what = f"it holds a run ({', '.join(ours)})" if ours else "it holds files"
        raise CellgenError(f"--out {out} is not empty: {what}",
                           hint="pass --resume to continue that run, --force to start a new one there, "
                                "or choose another directory")


def _never_checkpointed(out: Path) -> bool:
    """DIR holds only the files of a run that wrote its config.toml (ours, by its first line)
    but no checkpoint: it stopped (a signal, a kill -9, a crash) before its first checkpoint,
    and nothing can resume it."""
    from cellgen.training.logs import TENSORBOARD_DIR
    from cellgen.training.runconfig import CONFIG_FILE, CONFIG_HEADER

    if not out.is_dir() or (out / "checkpoint.pt").exists():
        return False
    try:
        with open(out / CONFIG_FILE, encoding="utf-8") as config:
            if config.readline().rstrip("\n") != CONFIG_HEADER:
                return False
    except (OSError, UnicodeDecodeError):
        return False
    return all(_ours(entry.name) or entry.name in RUN_FILES or entry.name == TENSORBOARD_DIR
               for entry in out.iterdir())


def _ours(name: str) -> bool:
    """The run lock, and temp files a killed run left (a kill -9 during the first checkpoint):
    they do not make a directory "hold files" a new run would mix with."""
    from cellgen.files import is_own_temp_file
    from cellgen.training.runlock import LOCK_FILE

    return name == LOCK_FILE or is_own_temp_file(name)


def _fresh_configs(args):
    from cellgen.api import load_spec
    from cellgen.cli import parse_params
    from cellgen.data.sources import DataConfig, open_splits, parse_data_argument
    from cellgen.sequence import SequenceConfig
    from cellgen.training.config import TrainConfig
    from cellgen.training.sizes import check_frame_size

    name, path = parse_data_argument(args.data or "moving-digits")
    data_values = {k: _given(args, k, DATA_DEFAULTS) for k in DATA_DEFAULTS}
    if name != "moving-digits" and args.frame_size is not None:
        raise CellgenError(f"--frame-size is for moving-digits; --data {name} has its own frame size")
    data_config = DataConfig(name, str(Path(path).resolve()) if path else None, seed=data_values["data_seed"],
                             frame_size=data_values["frame_size"], context=data_values["context"],
                             future=data_values["future"], test_sequences=data_values["test_sequences"])
    check_frame_size(data_config.frame_size, data_config.context + data_config.future)
    splits = open_splits(data_config)  # fails now, on every process, for a bad path or file
    model_values = {k: _given(args, k, MODEL_DEFAULTS) for k in MODEL_DEFAULTS if k != "layers"}
    common = dict(params=parse_params(args.params), frame_channels=splits.channels,
                  frame_size=tuple(splits.frame_size), **model_values)
    stack = _stack_arguments(args)
    if stack is None:
        loaded = load_spec(args.spec)
        model_config = SequenceConfig(spec=args.spec, spec_text=loaded.text, layers=stack_layers(args), **common)
    elif args.model is not None:
        model_config = SequenceConfig.for_model(args.model, layers=stack[0], **common)
    else:
        layers, between, diff_chain = stack
        model_config = SequenceConfig.for_stack(layers, between=between, diff_chain=diff_chain, name=args.spec,
                                                **common)
    train_config = TrainConfig(**_train_values(args, {}))
    if stack is not None:                      # a heterogeneous stack: its bottom layer's spec
        loaded = load_spec(model_config.spec_text)
    _check_increments(loaded, model_config.spec, train_config)
    return model_config, data_config, train_config


def _check_increments(loaded, spec: str, train_config) -> None:
    """--decouple-beta reads the cell's `delta_c` and `delta_m` outputs: say so before the run
    directory is made (the trainer checks the model too, for cellgen.training.train)."""
    from cellgen.sequence.decoupling import INCREMENTS

    declared = loaded.resolved.output
    names = {ref.text for ref in declared.refs[1:]} if declared is not None else set()
    if train_config.decouple_beta and not set(INCREMENTS) <= names:
        raise CellgenError(f"--decouple-beta needs a cell that outputs its memory increments, `output h', delta_c, "
                           f"delta_m`; {spec} does not",
                           hint="PredRNN-V2's cells do: train predrnnv2 or predrnnv2_ln (docs/outputs.md)")


def _resumed_configs(args, payload):
    from cellgen.cli import parse_params
    from cellgen.data.sources import DataConfig, parse_data_argument
    from cellgen.sequence import SequenceConfig
    from cellgen.training.config import TrainConfig

    model_config = SequenceConfig.from_dict(payload["model_config"])
    data_config = DataConfig.from_dict(payload["data_config"])
    stored_train = payload["train_config"]
    _same_model_on_resume(args, model_config)
    params = parse_params(args.params)
    if any(model_config.params.get(name) != value for name, value in params.items()):
        raise CellgenError(f"--param {_params_text(params)} differs from the run's {_params_text(model_config.params)}",
                           hint="a resumed run keeps its model; leave out --param")
    for key in MODEL_DEFAULTS:
        if key != "layers":
            _same_on_resume(args, key, getattr(model_config, key), "model")
    if args.data is not None:
        name, path = parse_data_argument(args.data)
        stored = (data_config.name, data_config.path)
        if (name, str(Path(path).resolve()) if path else None) != stored:
            raise CellgenError(f"--data {args.data} differs from the run's data ({data_config.describe()})",
                               hint="a resumed run keeps its data; leave out --data")
    for key, field_name in (("frame_size", "frame_size"), ("context", "context"), ("future", "future"),
                            ("test_sequences", "test_sequences"), ("data_seed", "seed")):
        _same_on_resume(args, key, getattr(data_config, field_name), "data")
    for key in TrainConfig.LOCKED_ON_RESUME:
        _same_on_resume(args, key, stored_train.get(key, getattr(TrainConfig, key)), "training")
    train_config = TrainConfig(**_train_values(args, stored_train))
    return model_config, data_config, train_config


def _stack_arguments(args):
    """None for a stack of SPEC; `(layers,)` for --model; else (layer specs, between, diff chain)."""
    from cellgen.sequence.stacks import parse_between, parse_layers

    layers = parse_layers(args.layers) if args.layers is not None else None
    between = parse_between(args.between or [])
    if args.model is not None:
        if args.spec is not None:
            raise CellgenError(f"--model {args.model} names its own cells: leave out SPEC `{args.spec}`",
                               hint=f"cellgen train --model {args.model} --layers 4 …")
        if isinstance(layers, tuple) or between or args.diff_chain:
            raise CellgenError(f"--model {args.model} says what its layers are: --layers takes a number with it, "
                               "and --between and --diff-chain are for a stack of your own")
        return (4 if layers is None else layers,)
    if isinstance(layers, tuple):
        if args.spec is not None:
            raise CellgenError(f"--layers {args.layers} names the spec of every layer: leave out SPEC `{args.spec}`")
        return layers, between, args.diff_chain
    if args.spec is None:
        raise CellgenError("`cellgen train` needs SPEC (or --model NAME, or --layers SPEC,SPEC,…): on the command "
                           "line, or as `spec` in --config")
    if between or args.diff_chain:
        return (args.spec,) * (MODEL_DEFAULTS["layers"] if layers is None else layers), between, args.diff_chain
    return None


def stack_layers(args) -> int:
    from cellgen.sequence.stacks import parse_layers

    return MODEL_DEFAULTS["layers"] if args.layers is None else parse_layers(args.layers)


def _same_model_on_resume(args, model_config) -> None:
    """A resumed run keeps its model: what SPEC, --model, --layers, --between, --diff-chain say
    (those given) must be what the run was built from."""
    from cellgen.sequence.stacks import parse_between, parse_layers

    hint = f"a resumed run keeps its model ({model_config.spec}); leave out SPEC and the stack's flags"
    if args.spec is not None and args.spec != model_config.spec:
        raise CellgenError(f"{args.out} is a run of `{model_config.spec}`, not `{args.spec}`",
                           hint=f"resume it with `cellgen train {model_config.spec} --resume …`"
                           if not model_config.heterogeneous else hint)
    if args.model is not None and args.model != model_config.spec:
        raise CellgenError(f"{args.out} is a run of `{model_config.spec}`, not --model {args.model}", hint=hint)
    if args.layers is not None:
        layers = parse_layers(args.layers)
        stored = tuple(model_config.layer_specs) if isinstance(layers, tuple) else model_config.layers
        if layers != stored:
            raise CellgenError(f"--layers {args.layers} differs from the run's "
                               f"{','.join(stored) if isinstance(stored, tuple) else stored}", hint=hint)
    if args.between and parse_between(args.between) != dict(model_config.between):
        raise CellgenError(f"--between {' '.join(args.between)} differs from the run's "
                           f"{' '.join(f'{i}:{s}' for i, s in model_config.between.items()) or 'none'}", hint=hint)
    if args.diff_chain is not None and args.diff_chain != model_config.diff_chain:
        raise CellgenError(f"--diff-chain {args.diff_chain} differs from the run's {model_config.diff_chain}", hint=hint)


def _same_on_resume(args, key: str, stored, what: str) -> None:
    given = getattr(args, key)
    if given is not None and given != stored:
        flag = "-O" if key == "opt_level" else "--" + key.replace("_", "-")
        raise CellgenError(f"{flag} {given} differs from the run's {stored}",
                           hint=f"a resumed run keeps its {what} settings; leave out {flag}")


def _train_values(args, stored: dict) -> dict:
    from dataclasses import fields

    from cellgen.training.config import TrainConfig

    values = {}
    for f in fields(TrainConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
        elif f.name in stored:
            values[f.name] = stored[f.name]
    return values


def _given(args, key: str, defaults: dict):
    value = getattr(args, key)
    return defaults[key] if value is None else value


def _params_text(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items()) or "(none)"


def format_final(document: dict, out: Path) -> str:
    lines = [f"{document['cell']} ({document['spec']}), {document['parameters']} parameters, "
             f"{document['step']} steps in {document['train_seconds']:.1f} s of training "
             f"(+ {document['eval_seconds']:.1f} s of evaluation)"]
    if document["evaluations"]:
        lines += [""] + format_comparison(document["evaluations"][-1])
    lines += ["", f"wrote {out}/: checkpoint.pt, best.pt, metrics.csv, metrics.json, config.toml, curves.png, "
                  "predictions.png, predictions.gif" + (", tensorboard/" if document["train"].get("log") ==
                                                         "tensorboard" else "")]
    return "\n".join(lines)


# --- eval ------------------------------------------------------------------------------------

def configure_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a checkpoint file or a run directory")
    parser.add_argument("--sequences", type=int, default=None, metavar="N",
                        help="test sequences to measure (default: as many as the run's evaluations)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N")
    parser.add_argument("--data", default=None, metavar="moving-mnist:PATH",
                        help="where the run's Moving MNIST file is now, if it moved")
    parser.add_argument("--ssim", choices=("gaussian", "skimage"), default=None,
                        help="SSIM convention (default: the run's)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="FILE", help="also write the JSON here")
    parser.add_argument("--force", action="store_true", help="let -o replace an existing file")


def run_eval(args: argparse.Namespace) -> int:
    import dataclasses

    from cellgen.cli import _check_writable, write_atomically
    from cellgen.data.sources import DataConfig, parse_data_argument
    from cellgen.training.checkpoint import load_checkpoint, model_from_checkpoint
    from cellgen.training.trainer import evaluation_of

    if args.batch_size < 1 or (args.sequences is not None and args.sequences < 1):
        flag, value = ("--batch-size", args.batch_size) if args.batch_size < 1 else ("--sequences", args.sequences)
        raise CellgenError(f"{flag} must be a positive whole number, not {value}")
    if args.output is not None:
        _check_writable(args.output, args.force)
    payload = load_checkpoint(args.checkpoint)
    data = DataConfig.from_dict(payload["data_config"])
    if args.data is not None:
        name, path = parse_data_argument(args.data)
        if name != data.name:
            raise CellgenError(f"the run was tested on {data.name}, not {name}")
        data = dataclasses.replace(data, path=str(Path(path).resolve()) if path else None)
    sequences = payload["train_config"].get("eval_sequences", 256) if args.sequences is None else args.sequences
    model = model_from_checkpoint(payload)
    ssim = args.ssim or payload["train_config"].get("ssim", "gaussian")
    result = evaluation_of(model, data, sequences, args.batch_size, ssim=ssim)
    document = {"checkpoint": str(args.checkpoint), "spec": payload["model_config"]["spec"],
                "step": payload["step"], "data": data.to_dict(), **result.results}
    text = json.dumps(document, indent=2) + "\n"
    if args.json:
        sys.stdout.write(text)
    else:
        print(f"{payload['model_config']['spec']} after {payload['step']} steps, {data.describe()}; "
              f"SSIM convention {ssim}")
        print()
        print("\n".join(format_per_frame(result.results["model"], data.context)))
        print()
        print("\n".join(format_comparison({"step": payload["step"], **result.results})))
    if args.output is not None:
        write_atomically(args.output, text, force=args.force)
    return 0


def format_per_frame(result: dict, context: int) -> list[str]:
    per = result["per_frame"]
    rows = [["frame", "MSE", "MAE", "SSIM", "PSNR"]]
    for i in range(len(per["mse"])):
        rows.append([str(context + i + 1), f"{per['mse'][i]:.2f}", f"{per['mae'][i]:.2f}", f"{per['ssim'][i]:.4f}",
                     f"{per['psnr'][i]:.2f}"])
    return _table(rows)


def format_comparison(evaluation: dict) -> list[str]:
    rows = [[f"step {evaluation['step']}, {evaluation['model']['sequences']} test sequences", "MSE/frame",
             "MAE/frame", "SSIM", "PSNR (dB)"]]
    for name, label in (("model", "model"), ("copy_last_frame", "copy last frame"), ("blank_frame", "blank frame")):
        r = evaluation[name]
        rows.append([label, f"{r['mse']:.2f}", f"{r['mae']:.2f}", f"{r['ssim']:.4f}", f"{r['psnr']:.2f}"])
    return _table(rows)


def _table(rows: list[list[str]]) -> list[str]:
    from cellgen.table import numbers_right

    return numbers_right(rows)


# --- export ----------------------------------------------------------------------------------

def configure_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a checkpoint file or a run directory")
    parser.add_argument("--format", choices=("onnx", "torchscript"), required=True)
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    parser.add_argument("--force", action="store_true", help="replace an existing FILE")
    graph = parser.add_argument_group("graph (default: one step if the cell's carry is fixed-size, else the "
                                      "whole rollout)")
    kinds = graph.add_mutually_exclusive_group()
    kinds.add_argument("--step", dest="mode", action="store_const", const="step",
                       help="export one step (frame and carry in, next frame and carry out); an error for a "
                            "cell whose state grows")
    kinds.add_argument("--rollout", dest="mode", action="store_const", const="rollout",
                       help="export the whole prediction: --context frames in, --future frames out")
    graph.add_argument("--context", type=int, default=None, metavar="N",
                       help="observed frames a rollout reads (default: the run's)")
    graph.add_argument("--future", type=int, default=None, metavar="N",
                       help="frames a rollout predicts (default: the run's)")
    parser.set_defaults(mode="auto")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="do not run the exported file against PyTorch")
    parser.add_argument("--check-sequences", type=int, default=2, metavar="N",
                        help="test sequences run through both for the check (2)")


def run_export(args: argparse.Namespace) -> int:
    from cellgen import export
    from cellgen.cli import _check_writable
    from cellgen.data.sources import DataConfig
    from cellgen.staging import staged
    from cellgen.training.checkpoint import load_checkpoint, model_from_checkpoint
    from cellgen.training.signals import terminate_raises

    _check_writable(args.output, args.force)
    payload = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(payload)
    data = DataConfig.from_dict(payload["data_config"])
    context = data.context if args.context is None else args.context
    future = data.future if args.future is None else args.future
    plan = export.plan_export(model, args.mode, context, future)
    if plan.signature.kind == "step" and (args.context is not None or args.future is not None):
        raise CellgenError("--context and --future set the length of an exported rollout, but this model's step "
                           "is exported (its carry is fixed-size)", hint="add --rollout to export the whole rollout")
    # staged beside the target under a name of its own, removed however this ends (cellgen/staging.py)
    with terminate_raises(), staged(_check_writable(args.output, args.force)) as staged_path:
        export.EXPORTERS[args.format](model, staged_path, plan.signature)
        report = _check_exported(args.format, staged_path, model, plan.signature, data, args.check_sequences) \
            if args.check else "not checked (--no-check)"
        os.replace(staged_path, _check_writable(args.output, args.force))
    print(f"wrote {args.output} ({args.format}, {args.output.stat().st_size} bytes): {plan.signature.describe()}")
    print(f"  why this graph: {plan.reason}")
    print("\n".join(_interface_lines(plan.signature)))
    print(f"  {report}")
    return 0


def _check_exported(kind: str, path: Path, model, signature, data, sequences: int) -> str:
    """Run the first `sequences` test sequences through the staged file and through PyTorch;
    the report line, or an error saying what differs."""
    import dataclasses

    from cellgen import export
    from cellgen.data.sources import open_splits
    from cellgen.training.batches import load_batch

    if signature.kind == "rollout":  # the test split must hold the rollout's observed frames
        data = dataclasses.replace(data, context=max(1, signature.context - 1), future=1)
    try:
        test = open_splits(data).test
    except CellgenError as error:  # the run's data moved, or a file too short for --context
        raise CellgenError(f"cannot check the export on the run's test data: {error.message}",
                           hint="pass --no-check to write the file unchecked") from None
    video = load_batch(test, list(range(max(1, min(sequences, len(test))))))
    result = export.check_export(kind, path, model, signature, video, data.context)
    if signature.kind == "rollout":
        what = f"{signature.context} → {signature.future} frames"
    else:
        what = f"{result.steps} steps"
    report = (f"checked against PyTorch over {what} × {result.sequences} test sequences: "
              f"max abs difference {result.max_abs_diff:.3g} (tolerance {export.TOLERANCE:g})")
    if result.start_diff > export.TOLERANCE:
        raise CellgenError(f"this model's state at t = 0 is not a fixed set of zero tensors (difference "
                           f"{result.start_diff:.3g}): its step cannot be exported with a fixed carry",
                           hint="export the whole rollout instead: --rollout")
    if not result.ok:
        raise CellgenError(f"the exported {kind} {signature.kind} does not match PyTorch: {report}")
    return report


def _interface_lines(signature) -> list[str]:
    """The exported graph's inputs and outputs, with the shapes of the frames."""
    frame = " × ".join(map(str, signature.frame_shape))
    if signature.kind == "rollout":
        return [f"  inputs:  context_frames (batch × {signature.context} × {frame})",
                f"  outputs: predicted_frames (batch × {signature.future} × {frame})"]
    return [f"  inputs:  {', '.join(signature.input_names)}  (frame: batch × {frame})",
            f"  outputs: {', '.join(signature.output_names)}"]
