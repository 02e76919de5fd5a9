"""Compile time of every shipped spec, parse → module, at each opt level: this checkout against
another revision (main by default), side by side.

    python bench/compile_time.py [--before main] [--repeats 7] [--specs convlstm predrnn …]
    python bench/compile_time.py --before none          # this checkout alone

The other revision is exported (`git archive`) into a temporary directory. Each side runs in
a subprocess of its own that imports cellgen from its tree, loads the grammar (that one-off
cost is printed separately) and compiles once at each level before any timing; the parent asks both for one compile at a
time, interleaved (spec by spec, level by level, the side that goes first alternating), so
that load from other processes falls on both alike. Each figure is the median of
`--repeats` compiles; ratios are of medians. Two tables: wall-clock time, and the CPU time
of the compiling process (time.process_time), which time slices lost to other processes on
a loaded machine do not inflate. `uptime` is printed before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"in_channels": 3, "hidden": 64}
# OpenSTL's MAUCell reads its input with num_hidden-input convs: its S is as wide as its T
AS_WIDE_AS_HIDDEN = {"mau"}
LEVELS = (0, 1, 2)

# The worker: imports cellgen from the tree given as argv[1], then compiles what it is asked
# (one JSON request per line on stdin) and answers with the milliseconds it took.
WORKER = r"""
import json, sys, time, warnings
sys.path.insert(0, sys.argv[1])
import cellgen
from cellgen.resources import shipped_specs
start = time.perf_counter()
from cellgen.language.parser import _lark
_lark()
grammar = (time.perf_counter() - start) * 1e3
print(json.dumps({"file": cellgen.__file__, "grammar_ms": grammar, "specs": list(shipped_specs())}), flush=True)
warnings.simplefilter("ignore")
for line in sys.stdin:
    request = json.loads(line)
    start, cpu = time.perf_counter(), time.process_time()
    cellgen.compile(request["spec"], opt_level=request["level"], **request["params"])
    print(json.dumps({"ms": (time.perf_counter() - start) * 1e3, "cpu_ms": (time.process_time() - cpu) * 1e3}),
          flush=True)
"""


class Side:
    def __init__(self, label: str, tree: Path):
        self.label = label
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.process = subprocess.Popen([sys.executable, "-c", WORKER, str(tree)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env, cwd=tree)
        hello = json.loads(self.process.stdout.readline())
        if not Path(hello["file"]).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"{label}: imported cellgen from {hello['file']}, not from {tree}")
        self.grammar_ms, self.specs = hello["grammar_ms"], hello["specs"]

    def compile_ms(self, spec: str, level: int) -> tuple[float, float]:
        """Wall-clock and CPU milliseconds of one compile."""
        params = dict(SMALL, in_channels=SMALL["hidden"]) if spec in AS_WIDE_AS_HIDDEN else SMALL
        self.process.stdin.write(json.dumps({"spec": spec, "level": level, "params": params}) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        return answer["ms"], answer["cpu_ms"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def export(revision: str, into: Path) -> Path:
    """The tree of `revision` of this repository, written under `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _table(sides: list[Side], specs: list[str], median: dict) -> None:
    width = 9 * len(sides)
    header = f"{'spec':<22}" + "".join(f"{f'O{level}':>{width}}" for level in LEVELS) + f"{'O2/O0':>{width}}"
    if len(sides) == 2:
        header += f"{'O2 after/before':>17}"
    print(header)
    print(f"{'':<22}" + "".join(f"{s.label.split()[0]:>9}" for _ in range(len(LEVELS) + 1) for s in sides))
    for spec in specs:  # a spec the revision before does not ship has "—" on its side
        def cell(ms):
            return f"{'—':>9}" if ms is None else f"{ms:>9.1f}"

        def ratio(r, width):
            return f"{'—':>{width + 1}}" if r is None else f"{r:>{width}.{1 if width == 8 else 2}f}×"

        def over(a, b):
            return None if a is None or b is None else a / b

        row = [median.get((s.label, spec, level)) for level in LEVELS for s in sides]
        ratios = [over(median.get((s.label, spec, 2)), median.get((s.label, spec, 0))) for s in sides]
        line = f"{spec:<22}" + "".join(cell(ms) for ms in row) + "".join(ratio(r, 8) for r in ratios)
        if len(sides) == 2:
            line += ratio(over(median.get((sides[1].label, spec, 2)), median.get((sides[0].label, spec, 2))), 16)
        print(line)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="git revision to compare with, or `none`")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--specs", nargs="*", help="shipped specs to measure (default: all)")
    args = parser.parse_args(argv)
    print(uptime())
    with tempfile.TemporaryDirectory(prefix="cellgen-before-") as tmp:
        sides = [Side("after", ROOT)]
        if args.before != "none":
            sides.insert(0, Side(f"before ({args.before})", export(args.before, Path(tmp))))
        specs = args.specs or sides[-1].specs
        times = {(side.label, spec, level): [] for side in sides for spec in specs for level in LEVELS
                 if spec in side.specs}
        try:
            for side in sides:  # the first compile imports what compiling needs: not timed
                for level in LEVELS:
                    side.compile_ms(specs[0], level)
            for repeat in range(args.repeats):
                for spec in specs:
                    for level in LEVELS:
                        for side in (sides if repeat % 2 == 0 else sides[::-1]):
                            if spec in side.specs:
                                times[(side.label, spec, level)].append(side.compile_ms(spec, level))
        finally:
            for side in sides:
                side.close()
    for side in sides:
        print(f"{side.label}: grammar load (once per process) {side.grammar_ms:.1f} ms")
    for clock, what in ((0, "wall-clock"), (1, "CPU (process_time)")):
        median = {key: statistics.median(v[clock] for v in values) for key, values in times.items()}
        print(f"\n{what}: median of {args.repeats} compiles, ms (hidden {SMALL['hidden']}, in_channels "
              f"{SMALL['in_channels']}); O2/O0 is the ratio of medians")
        _table(sides, specs, median)
    print(uptime())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
