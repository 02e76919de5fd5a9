"""Step time over a run of `cellgen train` (no denormal growth), and a default run's share of evaluation.

    python bench/step_stability.py stability [--steps 50] [--no-flush]
    python bench/step_stability.py eval-share [--steps 200]

`stability` runs `cellgen train predrnn --layers 4 -p hidden=64 …` in this process, through the
command's own code (cellgen.cli.main), timing every call of the training step it makes, and
prints the step times by step. With `--no-flush` the command's flush-to-zero is switched off
(to show what it prevents: after a few Adam steps denormal states slow every op).

`eval-share` runs `cellgen train convlstm --steps 200 -p hidden=32` (every other option at its
default) and prints its wall time, training and evaluation seconds from metrics.json.
Run it from two checkouts to compare before/after (PYTHONPATH=<checkout> python …).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def stability(args) -> None:
    import cellgen.runtime.denormals as denormals
    from cellgen.cli import main
    from cellgen.training import precision

    if args.no_flush:
        denormals.flush_denormals = lambda: False
    times = []
    original = precision.TrainStep.__call__

    def timed(self, *a, **k):
        began = time.perf_counter()
        try:
            return original(self, *a, **k)
        finally:
            times.append(time.perf_counter() - began)

    precision.TrainStep.__call__ = timed
    print(f"{uptime()}")
    with tempfile.TemporaryDirectory() as out:
        command = ["train", "predrnn", "--layers", "4", "-p", "hidden=64", "--steps", str(args.steps),
                   "--out", str(Path(out) / "run"), "--eval-every", str(args.steps), "--eval-sequences", "16",
                   "--quiet", *args.extra]
        print("cellgen " + " ".join(command))
        main(command)
    print(uptime())
    blocks = [times[i:i + 5] for i in range(0, len(times), 5)]
    print("| steps | median s | min s | max s |")
    print("|---|---|---|---|")
    for i, block in enumerate(blocks):
        print(f"| {5 * i + 1}-{5 * i + len(block)} | {statistics.median(block):.2f} | {min(block):.2f} | "
              f"{max(block):.2f} |")
    first, last = statistics.median(times[1:11]), statistics.median(times[-10:])
    print(f"median of steps 2-11: {first:.2f} s, of the last 10: {last:.2f} s (ratio {last / first:.2f})")


def eval_share(args) -> None:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "cellgen", "train", "convlstm", "--steps", str(args.steps), "-p",
                   "hidden=32", "--out", str(Path(out) / "run"), "--quiet", *args.extra]
        print(uptime())
        print(" ".join(command[2:]))
        began = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - began
        metrics = json.loads((Path(out) / "run" / "metrics.json").read_text())
        print(uptime())
    train, evaluation = metrics["train_seconds"], metrics["eval_seconds"]
    print(json.dumps({"wall_s": round(wall, 1), "train_s": train, "eval_s": evaluation,
                      "eval_share_of_wall": round(evaluation / wall, 3),
                      "final_mse": metrics["evaluations"][-1]["model"]["mse"]}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("stability", "eval-share"))
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--no-flush", action="store_true")
    parser.add_argument("extra", nargs="*", help="more `cellgen train` options (after --)")
    args = parser.parse_args()
    if args.what == "stability":
        args.steps = args.steps or 50
        stability(args)
    else:
        args.steps = args.steps or 200
        eval_share(args)


if __name__ == "__main__":
    main()
