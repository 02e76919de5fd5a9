"""Compile time of every shipped spec, parse → module, at each opt level.

    python bench/compile_time.py [--repeats 20]

Each figure is the median of `--repeats` cold compiles in one process (the grammar is
loaded once, before timing: that one-off cost is printed separately).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import cellgen  # noqa: E402
from cellgen.language.parser import _lark  # noqa: E402
from cellgen.resources import shipped_specs  # noqa: E402

SMALL = {"in_channels": 3, "hidden": 64}


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    _lark()
    print(f"grammar load (once per process): {(time.perf_counter() - start) * 1e3:.1f} ms")
    print(f"{'spec':<22}{'O0 ms':>10}{'O1 ms':>10}{'O2 ms':>10}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in shipped_specs():
            row = [_median_ms(lambda: cellgen.compile(name, opt_level=level, **SMALL), args.repeats)
                   for level in (0, 1, 2)]
            print(f"{name:<22}" + "".join(f"{ms:>10.1f}" for ms in row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
