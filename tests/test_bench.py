"""The benchmark harness (cellgen/tools/bench.py, bench/bench_step.py). Nothing here asserts
a time: these tests check that the harness runs, reports every variant, and refuses to time
a hand-written baseline that does not compute the compiled cell's step."""

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_TESTS_DIR)
for _p in (_TESTS_DIR, _ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import reference_cells as ref  # noqa: E402

import cellgen  # noqa: E402
from cellgen.tools import bench  # noqa: E402

TINY = ["--batch", "1", "--channels", "4", "--in-channels", "3", "--size", "8", "--k", "3",
        "--repeats", "2", "--warmup", "1", "--no-compile"]
TINY_KW = dict(batch=1, channels=4, in_channels=3, size=8, k=3, repeats=2, warmup=1, compile=False)
WITH_BASELINE = {"convlstm": "ConvLSTM", "predrnn": "STLSTM"}
ALL_VARIANTS = [bench.O0, bench.O2, bench.HAND, bench.FLOOR]


def run_main(capsys, *argv):
    rc = bench.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def table(out, mode):
    """{variant: cells} of the table printed under the header line of `mode`."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{mode} ("))
    assert lines[start + 1].split()[:4] == ["variant", "convs", "GMAC", "median"], lines[start + 1]
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip():
            break
        cells = line.split()
        rows[cells[0]] = cells[1:]
    return rows


def targets(out):
    """The indented lines under `targets (issue #3)…`."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("targets (issue #3)"))
    found = []
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        found.append(line.strip())
    return found


# ---------------------------------------------------------------------------
# end to end, tiny sizes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec", sorted(WITH_BASELINE))
def test_harness_prints_every_variant_in_both_modes(spec, capsys):
    rc, out, err = run_main(capsys, spec, *TINY)
    assert rc == 0, err
    for mode in bench.MODES:
        rows = table(out, mode)
        assert list(rows) == ALL_VARIANTS, f"{mode}: {list(rows)}"
        for variant, cells in rows.items():
            median, iqr, vs_hand, vs_floor = (float(c) for c in cells[2:6])
            assert median > 0 and iqr >= 0 and vs_hand > 0 and vs_floor > 0, (variant, cells)
        assert rows[bench.HAND][4] == "1.00" and rows[bench.FLOOR][5] == "1.00"
        assert rows[bench.O0][-1] == "reference"
        assert float(rows[bench.HAND][-1]) <= bench.TOLERANCE  # the equality check ran and passed
    # environment, targets (stated, measured), and no compile variant under --no-compile
    assert f"torch {torch.__version__}" in out and "threads" in out and bench.cpu_model() in out
    assert bench.O2_COMPILE not in table(out, "forward")
    target_lines = targets(out)
    assert len(target_lines) == 4, target_lines
    for line in target_lines:
        if line.startswith("O2 ≤"):
            assert "→ MET" in line or "→ NOT MET" in line, line
            assert "per-repetition ratios: median" in line, line
        else:
            assert "not measured" in line and "--no-compile" in line, line
    assert f"cell {WITH_BASELINE[spec]}" in out


def test_forward_only_prints_one_table(capsys):
    rc, out, err = run_main(capsys, "convlstm", *TINY, "--forward-only")
    assert rc == 0, err
    assert list(table(out, "forward")) == ALL_VARIANTS
    assert "forward+backward (" not in out


def test_spec_without_baseline_times_o0_and_o2_only(capsys):
    # convlstm_peephole takes height/width from --size
    rc, out, err = run_main(capsys, "convlstm_peephole", *TINY)
    assert rc == 0, err
    for mode in bench.MODES:
        assert list(table(out, mode)) == [bench.O0, bench.O2]
    assert out.count("not measured: this spec has no") == 4


def test_json_and_markdown_outputs(tmp_path, capsys):
    json_path, md_path = tmp_path / "bench.json", tmp_path / "bench.md"
    rc, out, err = run_main(capsys, "predrnn", *TINY, "--json", str(json_path), "--markdown", str(md_path))
    assert rc == 0, err
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert {"torch", "threads", "cpu"} <= set(data["environment"])
    assert data["config"]["cell"] == "STLSTM" and data["config"]["spatial"] == [8, 8]
    got = {(r["mode"], r["variant"]) for r in data["rows"]}
    assert got == {(m, v) for m in bench.MODES for v in ALL_VARIANTS}
    for r in data["rows"]:
        assert len(r["times_ms"]) == 2 and r["median_ms"] > 0
    assert len(data["targets"]) == 4
    markdown = md_path.read_text(encoding="utf-8")
    assert "| variant |" in markdown and "| hand-written |" in markdown and "| floor |" in markdown


@pytest.mark.parametrize("spec", sorted(WITH_BASELINE))
def test_run_benchmark_rows(spec):
    rows = bench.run_benchmark(spec, **TINY_KW)
    assert [(r.mode, r.variant) for r in rows] == [(m, v) for m in bench.MODES for v in ALL_VARIANTS]
    for mode in bench.MODES:
        got = {r.variant: r for r in rows if r.mode == mode}
        assert got[bench.HAND].vs_hand == pytest.approx(1.0) and got[bench.FLOOR].vs_floor == pytest.approx(1.0)
        for r in got.values():
            assert len(r.times_ms) == 2 and r.q1_ms <= r.median_ms <= r.q3_ms
            assert r.vs_hand == pytest.approx(r.median_ms / got[bench.HAND].median_ms)
        # the floor does every multiply-accumulate of the cell and nothing else; so does the baseline
        assert got[bench.FLOOR].gmacs == pytest.approx(got[bench.O0].gmacs)
        assert got[bench.HAND].gmacs == pytest.approx(got[bench.O0].gmacs)
        assert got[bench.O2].check_diff <= bench.TOLERANCE and got[bench.HAND].check_diff <= bench.TOLERANCE
    convs = {r.variant: r.convs for r in rows if r.mode == "forward"}
    assert (convs[bench.O0], convs[bench.HAND], convs[bench.FLOOR]) == ((8, 2, 1) if spec == "convlstm" else (16, 5, 4))


def test_cli_errors(capsys):
    rc, out, err = run_main(capsys, "no_such_cell", *TINY)
    assert rc == 1 and "no spec named" in err and out == ""
    with pytest.raises(SystemExit):
        bench.main(["convlstm", "--repeats", "0"])


def test_add_parser_for_the_cli():
    parser = argparse.ArgumentParser(prog="cellgen")
    bench.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "predrnn", "--forward-only", "--batch", "4", "--param", "k=3"])
    assert args.handler is bench.run_from_args
    assert (args.spec, args.backward, args.batch, args.params, args.compile) == ("predrnn", False, 4, ["k=3"], True)
    defaults = parser.parse_args(["bench"])
    assert (defaults.spec, defaults.batch, defaults.channels, defaults.in_channels, defaults.size) == \
        ("convlstm", 8, 64, 64, 64)
    assert defaults.backward and defaults.compile and defaults.k is None


# ---------------------------------------------------------------------------
# the pure parts: schedule, statistics, targets
# ---------------------------------------------------------------------------

def test_interleaved_order_rotates():
    n = 5
    orders = [bench.interleaved_order(n, r) for r in range(n)]
    for order in orders:
        assert sorted(order) == list(range(n))  # every variant once per repetition
    assert [order[0] for order in orders] == list(range(n))  # the start rotates
    for position in range(n):  # over n repetitions each variant runs once in each position
        assert sorted(order[position] for order in orders) == list(range(n))
    assert bench.interleaved_order(n, n) == orders[0]


def test_summarize():
    assert bench.summarize([4.0, 1.0, 100.0, 3.0, 2.0]) == (3.0, 2.0, 4.0)
    assert bench.summarize([7.0]) == (7.0, 7.0, 7.0)
    with pytest.raises(ValueError):
        bench.summarize([])


def _row(variant, median, mode="forward"):
    return bench.Row("convlstm", mode, variant, times_ms=[median], median_ms=median)


def test_evaluate_targets():
    rows = [_row(bench.O2, 90.0), _row(bench.HAND, 100.0), _row(bench.O2_COMPILE, 121.0), _row(bench.FLOOR, 100.0)]
    hand, floor = bench.evaluate_targets(rows)
    assert (hand.met, hand.ratio) == (True, pytest.approx(0.9))  # at the limit counts as met
    assert (floor.met, floor.ratio) == (False, pytest.approx(1.21))
    assert "121.0 ms" in floor.line() and "NOT MET" in floor.line()
    failed = bench.Row("convlstm", "forward", bench.O2_COMPILE, error="torch.compile failed: boom")
    _, floor = bench.evaluate_targets(rows[:2] + [failed, rows[3]])
    assert floor.met is None and "boom" in floor.line()
    hand, floor = bench.evaluate_targets([_row(bench.O0, 1.0), _row(bench.O2, 1.0)])
    assert hand.met is None and floor.met is None


def test_targets_report_per_repetition_ratios():
    def row(variant, times):
        median = bench.summarize(times)[0]
        return bench.Row("convlstm", "forward", variant, times_ms=times, median_ms=median)

    # repetition-paired: O2 is 0.8× hand-written in every repetition while the machine drifts
    hand, _ = bench.evaluate_targets([row(bench.O2, [80.0, 160.0, 240.0, 320.0]),
                                      row(bench.HAND, [100.0, 200.0, 300.0, 400.0])])
    assert hand.met and hand.paired == pytest.approx((0.8, 0.8, 0.8)) and hand.conclusive
    assert "per-repetition ratios: median 0.80" in hand.line() and "not conclusive" not in hand.line()
    hand, _ = bench.evaluate_targets([row(bench.O2, [80.0, 100.0, 120.0, 70.0]),
                                      row(bench.HAND, [100.0, 100.0, 100.0, 100.0])])
    assert hand.conclusive is False and "not conclusive" in hand.line()


# ---------------------------------------------------------------------------
# the equality check: baselines compute the compiled cell's step, broken ones are caught
# ---------------------------------------------------------------------------

def _setup(spec, opt_level=0, seed=0, hidden=4, cin=3, k=3, size=6, batch=2):
    torch.manual_seed(seed)
    cell = cellgen.compile(spec, opt_level=opt_level, in_channels=cin, hidden=hidden, k=k)
    x = torch.randn(batch, cin, size, size)
    state = {name: torch.randn(batch, hidden, size, size) for name in cell.state_names}
    return cell, x, state


@pytest.mark.parametrize("opt_level", (0, 2))
@pytest.mark.parametrize("spec", sorted(WITH_BASELINE))
def test_hand_written_equals_compiled_cell(spec, opt_level):
    cell, x, state = _setup(spec, opt_level)
    hand = bench.BASELINES[WITH_BASELINE[spec]].hand.from_cell(cell)
    for backward in (False, True):
        diff = bench.check_same_function(cell, hand, (x,), state, backward=backward)
        assert diff <= bench.TOLERANCE


@pytest.mark.parametrize("spec", sorted(WITH_BASELINE))
def test_hand_written_equals_independent_reference(spec):
    """The baselines also match tests/reference_cells.py, which shares no code with cellgen."""
    hidden, cin, k = 4, 3, 3
    params = ref.make_params(spec, cin, hidden, k, generator=torch.Generator().manual_seed(5))
    cell = cellgen.compile(spec, opt_level=0, in_channels=cin, hidden=hidden, k=k)
    cell.load_state_dict(params)
    hand = bench.BASELINES[WITH_BASELINE[spec]].hand.from_cell(cell)
    x = torch.randn(2, cin, 6, 6)
    state = {n: torch.randn(2, hidden, 6, 6) for n in ref.state_names(spec)}
    with torch.no_grad():
        h, new_state = hand(x, dict(state))
        h_ref, state_ref = ref.cell_step(spec, params, x, dict(state))
    assert (h - h_ref).abs().max() <= 1e-5
    for name in state_ref:
        assert (new_state[name] - state_ref[name]).abs().max() <= 1e-5


class WrongGateOrderConvLSTM(bench.HandConvLSTM):
    GATES = ("f", "i", "c", "o")  # i and f swapped when the weights are stacked


class NoForgetBiasSTLSTM(bench.HandSTLSTM):
    FORGET_BIAS = 0.0


class SwappedMemoryGatesSTLSTM(bench.HandSTLSTM):
    X = ("W_xi_m", "W_xf_m", "W_xg_m", "W_xi", "W_xf", "W_xg", "W_xo")


class PerturbedBiasConvLSTM(bench.HandConvLSTM):
    def load_from_cell(self, sd):
        super().load_from_cell(sd)
        with torch.no_grad():
            self.conv_x.bias[0] += 1e-2  # one channel's bias off by 0.01


@pytest.mark.parametrize("broken, spec", [(WrongGateOrderConvLSTM, "convlstm"), (PerturbedBiasConvLSTM, "convlstm"),
                                          (NoForgetBiasSTLSTM, "predrnn"), (SwappedMemoryGatesSTLSTM, "predrnn")])
def test_broken_baseline_is_detected(broken, spec):
    cell, x, state = _setup(spec)
    with pytest.raises(bench.MismatchError, match="differs from the O0 cell"):
        bench.check_same_function(cell, broken.from_cell(cell), (x,), state, what="hand-written")


def test_broken_baseline_stops_the_benchmark_before_timing(monkeypatch, capsys):
    broken = bench.Baseline(WrongGateOrderConvLSTM, bench.ConvLSTMFloor, bench.HandConvLSTM.SYMBOLS, "floor")

    def no_timing(self, backward):
        raise AssertionError("a variant was timed before every variant was checked")

    monkeypatch.setattr(bench._Variant, "call", no_timing)
    with pytest.raises(bench.MismatchError, match="hand-written"):
        bench.run_benchmark("convlstm", baselines={"ConvLSTM": broken}, **TINY_KW)
    monkeypatch.setitem(bench.BASELINES, "ConvLSTM", broken)
    rc, out, err = run_main(capsys, "convlstm", *TINY)
    assert rc == 2 and out == ""
    assert "hand-written (forward): h (output) differs from the O0 cell" in err and "nothing was timed" in err


@pytest.mark.parametrize("floor_cls, spec", [(bench.ConvLSTMFloor, "convlstm"), (bench.STLSTMFloor, "predrnn")])
def test_floor_backward_computes_only_the_needed_gradients_correctly(floor_cls, spec):
    """The floor's partial input gradient (h and m, not x) equals plain autograd's."""
    cell, x, state = _setup(spec)
    floor = floor_cls.from_cell(cell)
    args = floor.prepare(x, state)
    assert args[0].requires_grad is False  # cat[x, h] itself needs no gradient
    sum(t.sum() for t in floor(*args)).backward()
    plain = floor_cls.from_cell(cell)
    plain.load_state_dict(floor.state_dict())
    full = floor.prepare(x, state, input_grad=True)
    sum(t.sum() for t in plain(*full)).backward()
    hidden = state["h"].shape[1]
    assert torch.allclose(args[1].grad, full[0].grad[:, -hidden:], atol=1e-5)  # h's channels of cat[x, h]
    if spec == "predrnn":
        assert torch.allclose(args[3].grad, full[2].grad[:, -hidden:], atol=1e-5)  # m's channels of cat[x, m]
    for (name, p), q in zip(floor.named_parameters(), plain.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-4), name


def test_input_grad_mode(capsys):
    rc, out, err = run_main(capsys, "convlstm", *TINY, "--input-grad")
    assert rc == 0, err
    assert list(table(out, "forward+backward")) == ALL_VARIANTS
    assert "the incoming state and x" in out


def test_check_compares_input_gradients():
    cell, x, state = _setup("convlstm")
    x.requires_grad_(True)

    class DetachesX(bench.HandConvLSTM):  # same values, but no gradient reaches x
        def forward(self, x, state=None):
            return super().forward(x.detach(), state)

    bench.check_same_function(cell, bench.HandConvLSTM.from_cell(cell), (x,), state, backward=True)
    with pytest.raises(bench.MismatchError, match="gradient of the incoming input 0 is missing"):
        bench.check_same_function(cell, DetachesX.from_cell(cell), (x,), state, backward=True)


# ---------------------------------------------------------------------------
# slow: torch.compile, and the script
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_torch_compile_variant_runs_and_is_checked():
    kw = dict(TINY_KW, compile=True, repeats=1)
    rows = bench.run_benchmark("convlstm", **kw)
    compiled = [r for r in rows if r.variant == bench.O2_COMPILE]
    assert [r.mode for r in compiled] == list(bench.MODES)
    for r in compiled:
        assert r.error is None, r.error
        assert r.median_ms > 0 and r.compile_s > 0 and r.check_diff <= bench.TOLERANCE


@pytest.mark.slow
def test_bench_step_script():
    script = os.path.join(_ROOT, "bench", "bench_step.py")
    done = subprocess.run([sys.executable, script, "predrnn", *TINY, "--forward-only"], capture_output=True,
                          text=True, timeout=300, cwd=_TESTS_DIR)
    assert done.returncode == 0, done.stderr
    assert list(table(done.stdout, "forward")) == ALL_VARIANTS
