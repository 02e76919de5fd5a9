"""Experiment: train ConvLSTM and PredRNN on generated moving digits for a few CPU minutes each,
and compare their test MSE with the copy-last-frame (and blank-frame) baselines.

Each model is trained by the real command, `cellgen train`, in a subprocess (so what is measured
is what a user runs); the numbers come from each run's metrics.json. The script then writes a
Markdown table of the final evaluation and copies each run's predictions.png to docs/img/.

    python bench/train_moving_digits.py                     # both cells, runs in out/moving-digits/
    python bench/train_moving_digits.py --specs convlstm --steps 300         # one, fewer steps

Defaults (the docs/training.md experiment): 64×64 frames, 10 → 10, patch 4 (16×16×16 maps),
2 layers, hidden 32, 3×3 kernels, batch 8, Adam 1e-3, scheduled sampling over the first half,
256 test sequences, one CPU thread.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def train(spec: str, steps: int, out: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "cellgen", "train", spec, "--out", str(out), "--steps", str(steps),
               "-p", f"hidden={args.hidden}", "-p", f"k={args.k}", "--layers", "2", "--patch", "4",
               "--frame-size", str(args.frame_size), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
               "--scheduled-sampling", str(steps // 2), "--eval-every", str(max(1, steps // 4)),
               "--eval-sequences", str(args.eval_sequences), "--seed", str(args.seed), "--threads", str(args.threads),
               "--force"]
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    print("$ " + " ".join(command[1:]), flush=True)
    began = time.perf_counter()
    subprocess.run(command, env=environment, check=True)
    wall = time.perf_counter() - began
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    metrics["wall_seconds"] = round(wall, 1)
    return metrics


def table(results: dict[str, dict]) -> str:
    lines = ["| cell | steps | train time | wall time | test MSE/frame | copy-last MSE | blank MSE | MAE/frame | SSIM "
             "| PSNR (dB) | copy-last SSIM |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for spec, metrics in results.items():
        final = metrics["evaluations"][-1]
        model, copy, blank = final["model"], final["copy_last_frame"], final["blank_frame"]
        lines.append(f"| {spec} | {metrics['step']} | {metrics['train_seconds']:.0f} s "
                     f"| {metrics['wall_seconds']:.0f} s "
                     f"| **{model['mse']:.1f}** | {copy['mse']:.1f} | {blank['mse']:.1f} | {model['mae']:.1f} "
                     f"| {model['ssim']:.3f} | {model['psnr']:.2f} | {copy['ssim']:.3f} |")
    return "\n".join(lines)


def per_frame_table(results: dict[str, dict]) -> str:
    specs = list(results)
    first = results[specs[0]]["evaluations"][-1]
    frames = len(first["model"]["per_frame"]["mse"])
    context = results[specs[0]]["data"]["context"]
    lines = ["| frame | " + " | ".join(f"{s} MSE" for s in specs) + " | copy-last MSE | blank MSE |",
             "| ---: |" + " ---: |" * (len(specs) + 2)]
    for i in range(frames):
        row = [f"{results[s]['evaluations'][-1]['model']['per_frame']['mse'][i]:.1f}" for s in specs]
        lines.append(f"| {context + i + 1} | " + " | ".join(row)
                     + f" | {first['copy_last_frame']['per_frame']['mse'][i]:.1f}"
                     + f" | {first['blank_frame']['per_frame']['mse'][i]:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--specs", nargs="+", default=["convlstm", "predrnn"])
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 150],
                        help="steps per spec (one number for all, or one per spec)")
    parser.add_argument("--out", type=Path, default=Path("out/moving-digits"),
                        help="run directories (out/ is git-ignored)")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--frame-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-sequences", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: steadier on a shared 2-core machine than 2 fighting threads)")
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "img",
                        help="where to copy each run's predictions.png as training_SPEC.png")
    args = parser.parse_args()
    steps = args.steps * len(args.specs) if len(args.steps) == 1 else args.steps
    if len(steps) != len(args.specs):
        parser.error("give one --steps for all specs or one per spec")
    results = {}
    for spec, count in zip(args.specs, steps):
        results[spec] = train(spec, count, args.out / spec, args)
        args.images.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.out / spec / "predictions.png", args.images / f"training_{spec}.png")
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {_torch_version()}",
              "summary": table(results), "per_frame": per_frame_table(results),
              "runs": {spec: {k: m[k] for k in ("step", "train_seconds", "eval_seconds", "wall_seconds", "parameters")}
                       for spec, m in results.items()}}
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print()
    print(report["summary"])
    print()
    print(report["per_frame"])
    return 0


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    raise SystemExit(main())
