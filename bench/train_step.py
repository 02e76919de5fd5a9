"""One PredRNN training step: cellgen's SequenceModel against a hand-written zoo-style model, fp32 and bf16.

    python bench/train_step.py                       # the issue-13 table (interleaved, medians, ratios)
    python bench/train_step.py --reps 12 --variants cellgen-bf16 cellgen-bf16-cl hand-bf16
    python bench/train_step.py --memory              # peak memory with and without activation checkpointing

Sizes (issue 13): 2 layers of ST-LSTM, hidden 64, k 5, batch 4, 20 frames of 64×64, patch 4
(16×16 maps, 16 channels), 10 context frames, Adam 1e-3, MSE over frames 1 … 19. A step is
what `cellgen train` runs (`cellgen.training.precision.TrainStep`): forward under autocast
(bf16) or not (fp32), fp32 loss, backward, Adam on fp32 weights; both models go through it.

The hand-written model (bench/zoo_predrnn.py) is OpenSTL's layout: one fused conv per operand.
Before timing, both are loaded with the same weights and must agree (outputs and gradients,
fp32) or the script stops. Variants run round-robin in one process, one step each per round,
after warm-up rounds; medians over rounds, IQR in parentheses. GFLOP/s counts 3× the forward
convs' FLOPs per step (forward, input gradient, weight gradient), the same count for every
variant, against this machine's conv peak, measured here on the largest conv of the model
(conv_x of the upper layer, [64 → 448], k 5) and a larger one, forward only, in each dtype.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cellgen.runtime.denormals import flush_denormals  # noqa: E402

flush_denormals()  # before torch's thread pool starts (see cellgen/runtime/denormals.py)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cellgen.sequence import SequenceConfig, SequenceModel  # noqa: E402
from cellgen.training.precision import TrainStep, resolve_precision  # noqa: E402
from zoo_predrnn import ZooPredRNN  # noqa: E402

LAYERS, HIDDEN, K, BATCH, FRAMES, SIZE, PATCH, CONTEXT = 2, 64, 5, 4, 20, 64, 4, 10
VARIANTS = ("hand-fp32", "hand-bf16", "cellgen-fp32", "cellgen-bf16", "cellgen-fp32-cl", "cellgen-bf16-cl",
            "cellgen-fp32-compile", "cellgen-bf16-compile", "cellgen-fp32-ckpt", "cellgen-bf16-ckpt")
DEFAULT_VARIANTS = ("hand-fp32", "hand-bf16", "cellgen-fp32", "cellgen-bf16")


def cellgen_model(opt_level: int = 2) -> SequenceModel:
    torch.manual_seed(0)
    return SequenceModel(SequenceConfig.for_spec("predrnn", params={"hidden": HIDDEN, "k": K}, layers=LAYERS,
                                                 patch=PATCH, frame_size=(SIZE, SIZE), opt_level=opt_level))


def hand_model(weights: dict) -> ZooPredRNN:
    model = ZooPredRNN(LAYERS, HIDDEN, 1, PATCH, K)
    model.load_from_cellgen(weights)
    return model


def video_batch(seed: int = 1) -> torch.Tensor:
    return torch.rand(BATCH, FRAMES, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def check_same_function(cellgen: SequenceModel, hand: ZooPredRNN, video: torch.Tensor) -> tuple[float, float]:
    """Max |difference| of the predictions and of the weight gradients (fp32), mapped by name."""
    outputs, grads = [], []
    for model in (cellgen, hand):
        model.zero_grad(set_to_none=True)
        out = model(video, CONTEXT)
        F.mse_loss(out, video[:, 1:]).backward()
        outputs.append(out.detach())
    mapped = ZooPredRNN(LAYERS, HIDDEN, 1, PATCH, K)
    mapped.load_from_cellgen({name: p.grad for name, p in cellgen.named_parameters()})
    for (name, mine), theirs in zip(mapped.named_parameters(), hand.parameters()):
        grads.append(float((mine.detach() - theirs.grad).abs().max() / theirs.grad.abs().max().clamp_min(1e-30)))
    cellgen.zero_grad(set_to_none=True)
    hand.zero_grad(set_to_none=True)
    return float((outputs[0] - outputs[1]).abs().max()), max(grads)


def step_flops(hand: ZooPredRNN, video: torch.Tensor) -> float:
    """3 × the forward convs' FLOPs (2 per MAC) of one step, counted on the hand-written model."""
    macs = [0]

    def count(module, inputs, output):
        macs[0] += output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]

    handles = [m.register_forward_hook(count) for m in hand.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        hand(video, CONTEXT)
    for h in handles:
        h.remove()
    return 3 * 2 * macs[0]


def conv_peak(dtype: torch.dtype, reps: int = 5) -> float:
    """Best GFLOP/s of a few large forward convs in `dtype` (median of `reps` each)."""
    best = 0.0
    for batch, cin, cout, size, k in ((BATCH, HIDDEN, 7 * HIDDEN, SIZE // PATCH, K), (16, 128, 512, 32, 3)):
        x = torch.randn(batch, cin, size, size).to(dtype)
        w = torch.randn(cout, cin, k, k).to(dtype)
        F.conv2d(x, w, padding=k // 2)
        times = []
        for _ in range(reps):
            began = time.perf_counter()
            F.conv2d(x, w, padding=k // 2)
            times.append(time.perf_counter() - began)
        flops = 2 * batch * cout * cin * k * k * size * size
        best = max(best, flops / statistics.median(times) / 1e9)
    return best


def build_variants(names) -> dict:
    base = cellgen_model()
    weights = {k: v.detach().clone() for k, v in base.state_dict().items()}
    steps = {}
    for name in names:
        kind, precision, *how = name.split("-")
        if kind == "hand":
            model = hand_model(weights)
        else:
            model = cellgen_model()
            model.load_state_dict(weights)
            model.set_execution(channels_last="cl" in how, compile_layers="compile" in how,
                                checkpoint_activations="ckpt" in how)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        steps[name] = TrainStep(model, optimizer, resolve_precision(precision, torch.device("cpu")), CONTEXT)
    return steps


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "(uptime unavailable)"


def run_table(args) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {uptime()}")
    video = video_batch()
    base = cellgen_model()
    hand = hand_model(base.state_dict())
    out_diff, grad_diff = check_same_function(base, hand, video)
    print(f"same function: max |Δ prediction| {out_diff:.2e}, max relative |Δ weight gradient| {grad_diff:.2e}")
    if out_diff > 1e-4 or grad_diff > 1e-3:
        raise SystemExit("cellgen's PredRNN and the hand-written one disagree: the timings would compare two functions")
    flops = step_flops(hand, video)
    steps = build_variants(args.variants)
    peaks = {"fp32": [], "bf16": []}
    times = {name: [] for name in steps}
    first = {}
    for round_ in range(args.warmup + args.reps):
        for name, step in steps.items():
            began = time.perf_counter()
            step(video)
            elapsed = time.perf_counter() - began
            first.setdefault(name, elapsed)
            if round_ >= args.warmup:
                times[name].append(elapsed)
        print(f"  round {round_ + 1}: " + ", ".join(f"{n} {t[-1] * 1e3:.0f} ms" for n, t in times.items() if t),
              flush=True)
        if round_ >= args.warmup and (round_ - args.warmup) % 3 == 0:  # the peak, interleaved with the steps too
            peaks["fp32"].append(conv_peak(torch.float32))
            peaks["bf16"].append(conv_peak(torch.bfloat16))
    peak = {k: statistics.median(v) for k, v in peaks.items()}
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.reps} rounds after {args.warmup} warm-up; step = {flops / 1e9:.1f} GFLOP (3 × forward convs); "
          f"measured conv peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s; {uptime()}")
    print()
    header = ["variant", "ms (median)", "IQR ms", "× hand fp32", "× hand bf16", "GFLOP/s", "% of peak"]
    rows = [header]
    for name, median in medians.items():
        q = statistics.quantiles(times[name], n=4) if len(times[name]) > 1 else [median, median, median]
        dtype = "bf16" if "bf16" in name else "fp32"
        rate = flops / median / 1e9
        rows.append([name, f"{median * 1e3:.0f}", f"{(q[2] - q[0]) * 1e3:.0f}",
                     f"{median / medians['hand-fp32']:.2f}" if "hand-fp32" in medians else "-",
                     f"{median / medians['hand-bf16']:.2f}" if "hand-bf16" in medians else "-",
                     f"{rate:.0f}", f"{100 * rate / peak[dtype]:.0f} % ({dtype})"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    # the load on a shared machine moves whole rounds: a ratio within each round, then its median
    for base in ("hand-fp32", "hand-bf16"):
        if base in times:
            ratios = ", ".join(f"{name} {statistics.median(a / b for a, b in zip(times[name], times[base])):.2f}"
                               for name in times if name != base)
            print(f"median of per-round ratios to {base}: {ratios}")
    for name in medians:
        if "compile" in name:
            print(f"{name}: first step (compiles) {first[name]:.1f} s, {first[name] - medians[name]:.1f} s more "
                  "than a compiled step")
    if args.json:
        print(json.dumps({"medians_ms": {k: v * 1e3 for k, v in medians.items()}, "peak": peak, "flops": flops}))


def memory_child(mode: str) -> None:
    """One step's peak resident memory above the model's, in a fresh process (ru_maxrss only grows)."""
    precision, checkpointed = mode.split("-")
    model = cellgen_model()
    model.set_execution(checkpoint_activations=checkpointed == "ckpt")
    step = TrainStep(model, torch.optim.Adam(model.parameters(), lr=1e-3),
                     resolve_precision(precision, torch.device("cpu")), CONTEXT)
    video = video_batch()
    with torch.no_grad():
        model(video, CONTEXT)  # the allocator's and oneDNN's caches, before the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    times = []
    for i in range(3):
        began = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if i == 0 else _null():
            step(video)
        times.append(time.perf_counter() - began)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": mode, "peak_mib": (peak - base) / 1024, "saved_mib": saved[0] / 2 ** 20,
                      "ms": statistics.median(times[1:]) * 1e3}))


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run_memory(args) -> None:
    print(f"peak memory of one training step (above the model's), fresh process per mode; {uptime()}")
    modes = ["fp32-full", "fp32-ckpt", "bf16-full", "bf16-ckpt"]
    results = {mode: [] for mode in modes}
    for _ in range(args.memory_reps):
        for mode in modes:
            out = subprocess.run([sys.executable, __file__, "--memory-child", mode], capture_output=True, text=True,
                                 check=True, env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
            results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| mode | peak RSS above model MiB | saved for backward MiB | step ms (median) |")
    print("|---|---|---|---|")
    for mode, rs in results.items():
        print(f"| {mode} | {statistics.median(r['peak_mib'] for r in rs):.0f} | "
              f"{statistics.median(r['saved_mib'] for r in rs):.0f} | {statistics.median(r['ms'] for r in rs):.0f} |")
    print(uptime())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--memory", action="store_true", help="peak memory with and without activation checkpointing")
    parser.add_argument("--memory-reps", type=int, default=2)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child)
    elif args.memory:
        run_memory(args)
    else:
        run_table(args)


if __name__ == "__main__":
    main()
