"""OpenSTL's PredRNN++ and MIM models in cellgen (heterogeneous stacks), against OpenSTL's unroll.

    python bench/stacks.py [--batch 2] [--hidden 64] [--layers 4] [--frames 20] [--repeats 5]

One process times, interleaved, under the same weights (OpenSTL's state_dict loaded with
`cellgen.load_openstl`), CPU time (time.process_time: the machine is shared):
  * `openstl`  tests/reference_openstl.py's PredRNNppModel / MIMModel (OpenSTL's forward,
               eager PyTorch), teacher-forced over the patched frames;
  * `O0`, `O2` `SequenceConfig.for_model(…)` at -O0 / -O2.
Two measures each: one time step of the model at t ≥ 1 (`step`, forward, no grad, warm carry;
for OpenSTL its 2-step unroll minus its 1-step one, since MIM's chain first steps at t = 1) and one
training step (forward over `--frames` frames and backward of the MSE). 64×64 frames in 4×4
patches (16×16 maps of 16 channels), k 5, as OpenSTL's Moving MNIST configs. Medians over
`--repeats`, and ratios of medians to `openstl`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import cellgen  # noqa: E402
import reference_openstl as ref  # noqa: E402
from cellgen.sequence import SequenceConfig, SequenceModel  # noqa: E402
from cellgen.sequence.patch import reshape_patch  # noqa: E402

PATCH, FRAME, K = 4, 64, 5


def cpu_ms(function) -> float:
    start = time.process_time()
    function()
    return (time.process_time() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    size = FRAME // PATCH
    fc = PATCH * PATCH
    video = torch.rand(args.batch, args.frames, 1, FRAME, FRAME)
    patched = reshape_patch(video, PATCH)
    print(f"batch {args.batch}, {args.layers} layers, hidden {args.hidden}, k {K}, {args.frames} frames of "
          f"{FRAME}×{FRAME} in {PATCH}×{PATCH} patches; CPU ms, medians of {args.repeats}, one thread")
    for name, make in (("predrnnpp", ref.PredRNNppModel), ("mim", ref.MIMModel)):
        openstl = make(fc, [args.hidden] * args.layers, size, size, K)
        runs = {"openstl": openstl}
        for level in (0, 2):
            model = SequenceModel(SequenceConfig.for_model(name, layers=args.layers, params={"hidden": args.hidden,
                                                                                            "k": K},
                                                           patch=PATCH, frame_size=(FRAME, FRAME), opt_level=level))
            cellgen.load_openstl(model, openstl.state_dict())
            runs[f"O{level}"] = model

        def one_step(label):
            model = runs.get(label)
            if label == "openstl":   # its unroll over 3 frames (2 steps); the 2-frame one is subtracted below
                return lambda: model(patched[:, :3])
            if label == "openstl t0":
                return lambda: runs["openstl"](patched[:, :2])
            with torch.no_grad():
                _, carry = model.step(patched[:, 0], None)
            return lambda: model.step(patched[:, 1], carry)

        def train_step(label):
            model = runs[label]
            if label == "openstl":
                def run():
                    loss = ((model(patched) - patched[:, 1:]) ** 2).mean()
                    loss.backward()
            else:
                def run():
                    loss = ((model(video, context=args.frames - 1) - video[:, 1:]) ** 2).mean()
                    loss.backward()
            return run

        for measure, make_run in (("one time step", one_step), ("training step", train_step)):
            labels = list(runs) + (["openstl t0"] if measure == "one time step" else [])
            times = {label: [] for label in labels}
            functions = {label: make_run(label) for label in labels}
            for label in runs:                      # warm-up
                with torch.no_grad() if measure == "one time step" else torch.enable_grad():
                    functions[label]()
            for _ in range(args.repeats):
                for label, function in functions.items():
                    with torch.no_grad() if measure == "one time step" else torch.enable_grad():
                        times[label].append(cpu_ms(function))
            medians = {label: statistics.median(values) for label, values in times.items()}
            if "openstl t0" in medians:   # OpenSTL's step at t = 1: MIM's chain steps from there on
                medians["openstl"] -= medians.pop("openstl t0")
            base = medians["openstl"]
            cells = "  ".join(f"{label} {value:8.1f} ({value / base:4.2f}×)" for label, value in medians.items())
            note = " (openstl: its 2-step unroll minus its 1-step one)" if measure == "one time step" else ""
            print(f"{name:10s} {measure:14s} {cells}{note}")


if __name__ == "__main__":
    main()
