#!/usr/bin/env python3
"""One step of a cell: O0, O2, O2 + torch.compile, the hand-written step and the floor.

    python bench/bench_step.py                       # ConvLSTM, B=8, 64 channels, 64×64, k=5
    python bench/bench_step.py predrnn --forward-only --json out.json

A thin wrapper around `cellgen.tools.bench.main` (same as `cellgen bench`); see that module
for what each variant is and how it is timed.
"""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, _ROOT)

from cellgen.tools.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
