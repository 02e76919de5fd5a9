"""What the module-boundary check (cellgen/codegen/boundary.py) costs per call.

    python bench/boundary_overhead.py [--repeats N]

Times `boundary.check_call` alone on a compiled ConvLSTM (the hook's whole work), and one
step of that cell with the hook and with it removed, interleaved, and prints medians.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import cellgen
from cellgen.codegen import boundary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cell = cellgen.compile("convlstm", in_channels=4, hidden=8, k=3)
    x = torch.randn(2, 4, 16, 16)
    state = cell.zero_state(x)
    hooks = dict(cell._forward_pre_hooks)
    check, with_hook, without = [], [], []
    with torch.no_grad():
        for _ in range(args.repeats):
            began = time.perf_counter()
            boundary.check_call(cell, (x, state), {})
            check.append(time.perf_counter() - began)
            cell._forward_pre_hooks.update(hooks)
            began = time.perf_counter()
            cell(x, state)
            with_hook.append(time.perf_counter() - began)
            cell._forward_pre_hooks.clear()
            began = time.perf_counter()
            cell(x, state)
            without.append(time.perf_counter() - began)
    cell._forward_pre_hooks.update(hooks)
    us = lambda values: statistics.median(values) * 1e6  # noqa: E731
    print(f"load {os.getloadavg()[0]:.2f}; {args.repeats} interleaved repetitions, medians")
    print(f"check_call alone:          {us(check):8.1f} µs")
    print(f"step with the check:       {us(with_hook):8.1f} µs")
    print(f"step without the check:    {us(without):8.1f} µs")
    print(f"difference:                {us(with_hook) - us(without):8.1f} µs "
          f"({(us(with_hook) / us(without) - 1) * 100:.1f} %)")


if __name__ == "__main__":
    main()
