"""OpenSTL's cells: cellgen's step against OpenSTL's module, and the two ways to write them.

    python bench/openstl.py [--batch 4] [--hidden 64] [--size 16] [--repeats 20] [--backward]

For every OpenSTL cell cellgen ships, one process times, interleaved, under the same weights
(an OpenSTL state_dict loaded with `cellgen.load_openstl`):
  * `openstl`  the OpenSTL module itself, as tests/reference_openstl.py writes it (OpenSTL's
               submodules and forward, eager PyTorch);
  * `O0`, `O2` the spec compiled at -O0 / -O2;
  * `paper O2` for ConvLSTM and PredRNN without LayerNorm, the paper-style spec (`convlstm`,
               `predrnn`: one weight per gate) at -O2, which loads the same checkpoint.
E3D-LSTM's cells read windows of 2 frames (B, C, 2, H, W), its RECALL the history of one
entry a step from its first step holds. Sizes as OpenSTL's Moving MNIST configs: 64×64 frames in 4×4 patches, so 16×16 maps of
16 channels; hidden 64, k 5. Medians over `--repeats`, ratios of medians to `openstl`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the OpenSTL modules, as the tests' references write them

import cellgen  # noqa: E402
import reference_openstl as ref  # noqa: E402
from seed_cells import _time_ms as _time  # noqa: E402  (bench/ is on the path when run as a script)

CASES = [  # (spec, OpenSTL module factory(in, hidden, size, k), paper-style spec or None, inputs)
    ("convlstm_openstl", lambda i, c, s, k: ref.ConvLSTMCell(i, c, s, s, k, 1, False), "convlstm", 1),
    ("convlstm_openstl_ln", lambda i, c, s, k: ref.ConvLSTMCell(i, c, s, s, k, 1, True), None, 1),
    ("predrnn_openstl", lambda i, c, s, k: ref.SpatioTemporalLSTMCell(i, c, s, s, k, 1, False), "predrnn", 1),
    ("predrnn_openstl_ln", lambda i, c, s, k: ref.SpatioTemporalLSTMCell(i, c, s, s, k, 1, True), None, 1),
    ("predrnnpp", lambda i, c, s, k: ref.CausalLSTMCell(i, c, s, s, k, 1, False), None, 1),
    ("predrnnpp_ln", lambda i, c, s, k: ref.CausalLSTMCell(i, c, s, s, k, 1, True), None, 1),
    ("ghu", lambda i, c, s, k: ref.GHU(c, c, s, s, k, 1, False), None, 1),
    ("mimn", lambda i, c, s, k: ref.MIMN(c, c, s, s, k, 1, False), None, 1),
    ("mim", lambda i, c, s, k: ref.MIMBlock(c, c, s, s, k, 1, False), None, 2),
    ("mim_ln", lambda i, c, s, k: ref.MIMBlock(c, c, s, s, k, 1, True), None, 2),
    # MAU (τ = 5, the spec's default): the step from a state {"T": T}, histories started afresh
    ("mau", lambda i, c, s, k: ref.MAUCell(c, c, s, s, k, 1, 5, "normal"), None, 1),
    ("e3d_lstm_openstl", lambda i, c, s, k: ref.Eidetic3DLSTMCell(i, c, 2, s, s, (2, k, k), 1, False), None, 1),
    ("e3d_lstm_openstl_ln", lambda i, c, s, k: ref.Eidetic3DLSTMCell(i, c, 2, s, s, (2, k, k), 1, True), None, 1),
]
# 3D cells: each step reads a window of frames (NCTHW), OpenSTL's window_length
WINDOWS = {"e3d_lstm_openstl": 2, "e3d_lstm_openstl_ln": 2}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--in-channels", type=int, default=16)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--backward", action="store_true", help="time forward + backward instead of forward")
    parser.add_argument("--specs", nargs="*", default=None)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {load:.1f}; B={args.batch}, "
          f"hidden={args.hidden}, in={args.in_channels}, {args.size}×{args.size}, k={args.k}, "
          f"{'forward+backward' if args.backward else 'forward'}, median of {args.repeats}")
    print(f"{'spec':<22}{'openstl':>10}{'O0':>10}{'O2':>10}{'paper O2':>10}{'O2/openstl':>12}{'paper/openstl':>15}")
    torch.manual_seed(0)
    for spec, make, paper, n_inputs in CASES:
        if args.specs and spec not in args.specs:
            continue
        C, s, k = args.hidden, args.size, args.k
        cin = C if spec in ("ghu", "mimn", "mim", "mim_ln", "mau") else args.in_channels
        module = make(cin, C, s, k)
        with torch.no_grad():
            for name, p in module.named_parameters():      # OpenSTL's LN/peephole init is trivial
                p.add_(0.1 * torch.randn_like(p))
        params = dict(in_channels=cin, hidden=C, k=k)
        if "height" in {p.name for p in cellgen.load_spec(spec).resolved.params}:
            params.update(height=s, width=s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            variants = {"O0": cellgen.compile(spec, opt_level=0, **params),
                        "O2": cellgen.compile(spec, opt_level=2, **params)}
            if paper:
                variants["paper O2"] = cellgen.compile(paper, opt_level=2, in_channels=cin, hidden=C, k=k)
        for cell in variants.values():
            cellgen.load_openstl(cell, module.state_dict())
        maps = ((WINDOWS[spec],) if spec in WINDOWS else ()) + (s, s)
        xs = [torch.randn(args.batch, cin, *maps)] + [torch.randn(args.batch, C, *maps) for _ in range(n_inputs - 1)]
        state = {n: torch.randn(args.batch, C, *maps) for n in module.STATES}   # a history of one entry: c

        def run_openstl():
            out, _ = module.step(tuple(xs), state)
            return out

        runs = {"openstl": run_openstl}
        for label, cell in variants.items():
            runs[label] = (lambda cell=cell: cell(*xs, state)[0])
        reference = run_openstl().detach()
        for label, fn in runs.items():          # warm-up, and every variant computes the same step
            assert (fn() - reference).abs().max() < 1e-4, f"{spec} {label} differs from OpenSTL's step"
        times = {label: [] for label in runs}
        for _ in range(args.repeats):
            for label, fn in runs.items():
                if args.backward:
                    times[label].append(_time(lambda: fn().square().sum().backward()))
                else:
                    with torch.no_grad():
                        times[label].append(_time(fn))
        med = {label: statistics.median(t) for label, t in times.items()}
        paper_ms = f"{med['paper O2']:>8.1f}ms" if "paper O2" in med else f"{'—':>10}"
        paper_ratio = f"{med['paper O2'] / med['openstl']:>15.2f}" if "paper O2" in med else f"{'—':>15}"
        print(f"{spec:<22}{med['openstl']:>8.1f}ms{med['O0']:>8.1f}ms{med['O2']:>8.1f}ms{paper_ms}"
              f"{med['O2'] / med['openstl']:>12.2f}{paper_ratio}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
