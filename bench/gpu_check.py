"""The CUDA code paths of `cellgen train`, measured on a machine that has a GPU.

    python bench/gpu_check.py [--device cuda:0] [--steps 10]
    torchrun --standalone --nproc_per_node=2 bench/gpu_check.py --ddp     # nccl, one GPU per process

NOT RUN on the development machine (it has no GPU; torch there is a CPU build): this script
exits with a message there. On a GPU machine it checks and times, side by side:

- `--device cuda:N` picks that GPU (`choose_device`), and a PredRNN training step runs there in
  fp32, bf16 (autocast) and fp16 (autocast + GradScaler), channels-last or not; step medians
  and ratios to fp32, each precision's loss after the steps (they must stay finite and close);
- host→device copies of a batch from pageable memory and through pinned memory
  (`cellgen.training.batches.to_device`), median µs each;
- with --ddp under torchrun: the nccl process group cellgen joins (`setup_distributed`), one
  all-reduce of a gradient-sized tensor, and a DDP training step.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cellgen.runtime.denormals import flush_denormals  # noqa: E402

flush_denormals()

import torch  # noqa: E402


def timed(fn, reps: int, device: torch.device) -> float:
    times = []
    for _ in range(reps):
        torch.cuda.synchronize(device)
        began = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--ddp", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"no CUDA device (torch {torch.__version__}): nothing measured; run this on a GPU machine")
        return 1
    from cellgen.sequence import SequenceConfig, SequenceModel
    from cellgen.training.batches import to_device
    from cellgen.training.distributed import setup_distributed
    from cellgen.training.precision import TrainStep, resolve_precision

    dist = setup_distributed(args.device)
    device = dist.device
    print(f"device {device} ({torch.cuda.get_device_name(device)}), backend {dist.backend}, world {dist.world}")
    batch = torch.rand(4, 20, 1, 64, 64)
    pageable = timed(lambda: batch.to(device), 20, device)
    pinned = timed(lambda: to_device(batch, device), 20, device)
    print(f"batch copy to the GPU: pageable {pageable * 1e6:.0f} µs, through pinned memory {pinned * 1e6:.0f} µs")
    if dist.active:
        grad = torch.ones(10_000_000, device=device)
        reduce = timed(lambda: torch.distributed.all_reduce(grad), 10, device)
        print(f"nccl all-reduce of 40 MB: {reduce * 1e3:.2f} ms")
    video = batch.to(device)
    results = {}
    for precision in ("fp32", "bf16", "fp16"):
        for channels_last in (False, True):
            torch.manual_seed(0)
            model = SequenceModel(SequenceConfig.for_spec("predrnn", params={"hidden": 64, "k": 5}, layers=2,
                                                          patch=4, frame_size=(64, 64))).to(device)
            model.set_execution(channels_last=channels_last)
            step = TrainStep(dist.wrap(model), torch.optim.Adam(model.parameters(), lr=1e-3),
                             resolve_precision(precision, device), 10)
            step(video)
            median = timed(lambda: step(video), args.steps, device)
            loss = float(step(video))
            results[(precision, channels_last)] = (median, loss)
    base = results[("fp32", False)][0]
    print("| precision | channels-last | step ms | × fp32 | loss after the steps |")
    print("|---|---|---|---|---|")
    for (precision, channels_last), (median, loss) in results.items():
        print(f"| {precision} | {channels_last} | {median * 1e3:.1f} | {median / base:.2f} | {loss:.5f} |")
    dist.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
