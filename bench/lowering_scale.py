"""Lowering time against spec length: is lowering linear in the number of statements?

    python bench/lowering_scale.py [--sizes 500 4000] [--repeats 3]

The spec is chains of 50 equations, each a gate of the one before (a single chain of
thousands would nest deeper than cellgen reads: docs/limits.md), their ends multiplied:

    a1 = σ(W_1 ⋆ x + b_1)
    a2 = a1 ⊙ σ(W_2 ⋆ a1 + b_2)
    …
    a51 = σ(W_51 ⋆ x + b_51)
    …
    h' = a50 ⊙ a100 ⊙ … ⊙ a_N ⊙ h

It is parsed and resolved once per size, outside the timing; only `lower` (AST → validated,
channel-annotated graph) is timed, as CPU time of this process (time.process_time: on a shared
machine, wall time mostly measures the other processes) and as wall time. Before each lowering
the bench collects its own garbage (the graph of the lowering before, freed outside the timing),
so that a full collection over what the bench keeps alive does not land on whichever size
happens to run; what the lowering itself leaves for the collector is still timed (it pauses
the collector and lets it run at its end). Sizes are timed
interleaved (size after size, round after round); the medians are printed with the ratio of
the largest to the smallest and what linear growth would give. Lowering is linear when that
ratio stays near the size ratio (issue 11 asks ≤ 12× for 4,000 against 500 statements).
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from cellgen.api import load_spec  # noqa: E402
from cellgen.ir.lower import lower  # noqa: E402


RUN = 50  # equations per chain: a longer chain nests deeper than cellgen reads (docs/limits.md)


def chain_spec(statements: int) -> str:
    """A cell of `statements` equations (the last is h'): chains of RUN equations, each reading
    the one before (the first of a chain reads x), and h' the product of the chains' ends."""
    lines = ["cell Chain", "  param hidden = 8", "  input x[4]", "  state h[hidden]", "",
             "  weights", "    W_*: conv 3×3", "    b_*: bias", ""]
    ends = []
    for i in range(1, statements):
        if (i - 1) % RUN == 0:
            lines.append(f"  a{i} = σ(W_{i} ⋆ x + b_{i})")
        else:
            lines.append(f"  a{i} = a{i - 1} ⊙ σ(W_{i} ⋆ a{i - 1} + b_{i})")
        if i % RUN == 0 or i == statements - 1:
            ends.append(f"a{i}")
    lines.append(f"  h' = {' ⊙ '.join(ends)} ⊙ h")
    return "\n".join(lines) + "\n"


def resolved(statements: int):
    return load_spec(chain_spec(statements)).resolved


def time_lowering(specs: dict[int, object], repeats: int) -> dict[int, tuple[float, float]]:
    """Median (CPU, wall) seconds of `lower` per size, the sizes interleaved round by round."""
    times: dict[int, list[tuple[float, float]]] = {size: [] for size in specs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(repeats):
            for size, spec in specs.items():
                gc.collect()  # the garbage of the bench itself (the graph before) is not this lowering's
                cpu, wall = time.process_time(), time.perf_counter()
                graph = lower(spec)
                times[size].append((time.process_time() - cpu, time.perf_counter() - wall))
                del graph
    return {size: (statistics.median(c for c, _ in values), statistics.median(w for _, w in values))
            for size, values in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", type=int, default=None, metavar="N",
                        help="instead: cProfile one lowering of an N-statement spec, top 25 by cumulative time")
    args = parser.parse_args(argv)
    if args.profile:
        import cProfile
        import pstats
        spec = resolved(args.profile)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            profile = cProfile.Profile()
            profile.runcall(lower, spec)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
        return 0
    sizes = sorted(set(args.sizes))
    specs = {size: resolved(size) for size in sizes}
    medians = time_lowering(specs, args.repeats)
    print(f"{'statements':>10}  {'CPU s':>8}  {'wall s':>8}  {'CPU ms/statement':>16}")
    for size in sizes:
        cpu, wall = medians[size]
        print(f"{size:>10}  {cpu:>8.3f}  {wall:>8.3f}  {cpu / size * 1e3:>16.3f}")
    small, large = sizes[0], sizes[-1]
    print(f"ratio {large}/{small}: CPU {medians[large][0] / medians[small][0]:.1f}x, wall "
          f"{medians[large][1] / medians[small][1]:.1f}x (linear: {large / small:.1f}x; median of {args.repeats}, "
          "interleaved)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
