"""Compile time and one-step forward time of every shipped spec, at -O0 and -O2.

    python bench/seed_cells.py [--batch 4] [--size 64] [--hidden 64] [--repeats 15]

One process, sizes as the papers use them by default: B = 4, 64 hidden channels, 64×64 maps
for 2D cells and 2×16×16 windows for 3D ones (E3D-LSTM, ASTM: 64×64 frames cut into 4×4
patches, as their code feeds them), 16×16 for CMS-LSTM (its LayerNorm fixes the map size; the
authors run it on patched 16×16 maps too). Histories hold τ = 5 past values (the state at
t = 0 repeated, so the attention runs at full length). Compile time is the median of cold
compiles (parse → module, the grammar loaded once before); forward time is the median over
interleaved repetitions of O0 and O2 under torch.no_grad(), after warm-up, and the O2/O0
ratio is of those medians measured side by side.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import cellgen  # noqa: E402
from cellgen.language import syntax as ast  # noqa: E402
from cellgen.language.parser import _lark  # noqa: E402
from cellgen.resources import shipped_specs  # noqa: E402


def _params(name: str, args) -> tuple[dict, int]:
    spec = cellgen.load_spec(name).resolved
    declared = {p.name for p in spec.params}
    params = {"in_channels": args.in_channels, "hidden": args.hidden}
    if "tau" in declared:
        params["tau"] = 5
    uses_blocks = any(isinstance(s, (ast.BlockDef, ast.UseDecl)) for s in cellgen.load_spec(name).ast.statements)
    patched = any(t.window is not None for t in spec.inputs) or uses_blocks
    size = args.size // 4 if patched else args.size  # the papers' code feeds these 4×4-patched maps
    if "height" in declared:
        params.update(height=size, width=size)
    return {k: v for k, v in params.items() if k in declared}, size


def _inputs(cell, batch: int, size: int, in_channels: int) -> list[torch.Tensor]:
    graph = cell.cell_graph
    window = graph.input_windows
    xs = []
    for name, node in graph.inputs.items():
        frames = (window[name],) if name in window else ()
        xs.append(torch.randn(batch, graph[node]["channels"], *frames, size, size))
    return xs


def _state(cell, x: torch.Tensor, tau: int) -> dict:
    state = {k: torch.randn_like(v) for k, v in cell.zero_state(x).items()}
    for name, info in cell.cell_graph.states.items():
        if info.history:
            state[f"{name}.history"] = torch.stack([state[name]] * (info.history_size or tau), 1)
    return state


def _time_ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--in-channels", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--specs", nargs="*", default=None)
    args = parser.parse_args(argv)
    _lark()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; B={args.batch}, hidden={args.hidden}, "
          f"in_channels={args.in_channels}")
    print(f"{'spec':<24}{'map':>10}{'compile O0':>12}{'compile O2':>12}{'step O0':>10}{'step O2':>10}{'O2/O0':>8}"
          f"{'convs O0→O2':>13}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in args.specs or shipped_specs():
            params, size = _params(name, args)
            compile_ms = {level: statistics.median(
                _time_ms(lambda: cellgen.compile(name, opt_level=level, **params)) for _ in range(5))
                for level in (0, 2)}
            cells = {level: cellgen.compile(name, opt_level=level, **params).eval() for level in (0, 2)}
            cells[2].load_state_dict(cells[0].state_dict())
            xs = _inputs(cells[0], args.batch, size, args.in_channels)
            state = _state(cells[0], xs[0], 5)
            times = {0: [], 2: []}
            with torch.no_grad():
                for level in (0, 2):
                    cells[level](*xs, state)  # warm-up
                for _ in range(args.repeats):
                    for level in (0, 2):
                        times[level].append(_time_ms(lambda: cells[level](*xs, state)))
            step = {level: statistics.median(t) for level, t in times.items()}
            shape = "×".join(map(str, xs[0].shape[2:]))
            convs = f"{cells[0].cell_graph.count('conv')}→{cells[2].cell_graph.count('conv')}"
            print(f"{name:<24}{shape:>10}{compile_ms[0]:>10.0f}ms{compile_ms[2]:>10.0f}ms{step[0]:>8.1f}ms"
                  f"{step[2]:>8.1f}ms{step[2] / step[0]:>8.2f}{convs:>13}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
