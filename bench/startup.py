"""Start-up time of the commands that compile nothing, as a user runs them: a fresh Python per run.

    python bench/startup.py [--repeats 15] [--baseline DIR]

Times `cellgen --version`, `list`, `check convlstm -p in_channels=1` and `diff` (text), and, as
the yardstick they must stay clear of, `python -c "import torch"`. With `--baseline DIR` (an
unpacked older checkout, e.g. `git archive REV | tar -x -C DIR`) each command also runs from
there, so the two are measured side by side in one run. Runs are interleaved round-robin
(baseline and this checkout alternate, command by command), so a change in the machine's
load hits both alike; each figure is the median wall clock and CPU (user + sys) of the child.
The load average is printed before and after: on a busy machine wall clock is well above CPU.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "--version": ["--version"],
    "list": ["list"],
    "check convlstm": ["check", "convlstm", "-p", "in_channels=1"],
    "diff (text)": ["diff", "convlstm", "convlstm_peephole", "-p", "in_channels=1", "--color", "never"],
}


def _run(argv: list[str], tree: Path) -> tuple[float, float]:
    """(wall, cpu) seconds of one fresh `python -c …` with `tree` first on sys.path."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from cellgen.cli import main; "
            "sys.exit(main(sys.argv[2:]))") if argv else "import torch"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(tree), *argv], cwd="/", stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR")
    args = parser.parse_args(argv)
    trees = {"this": ROOT} if args.baseline is None else {"baseline": args.baseline.resolve(), "this": ROOT}
    cases = [(name, tree_name) for name in COMMANDS for tree_name in trees] + [("import torch", "this")]
    times: dict[tuple[str, str], list[tuple[float, float]]] = {case: [] for case in cases}
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for repeat in range(args.repeats):
        order = cases[repeat % len(cases):] + cases[:repeat % len(cases)]  # rotate: no case always first
        for name, tree_name in order:
            times[(name, tree_name)].append(_run(COMMANDS.get(name, []), trees[tree_name]))
    print(f"load average at end:   {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"median of {args.repeats} runs, each a fresh Python (wall s / cpu s)")
    width = max(len(name) for name, _ in cases)
    for name in [*COMMANDS, "import torch"]:
        cells = []
        for tree_name in trees if name in COMMANDS else ["this"]:
            wall = statistics.median(t[0] for t in times[(name, tree_name)])
            cpu = statistics.median(t[1] for t in times[(name, tree_name)])
            cells.append(f"{tree_name} {wall:6.3f} / {cpu:5.3f}")
        if len(cells) == 2:
            base = statistics.median(t[0] for t in times[(name, "baseline")])
            this = statistics.median(t[0] for t in times[(name, "this")])
            cells.append(f"wall ratio this/baseline {this / base:5.2f}")
        print(f"  {name.ljust(width)}  " + "   ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
