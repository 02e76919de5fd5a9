"""The adversarial cases of issue 14, run as a hostile or careless user runs them, and counted.

    python bench/adversarial.py [--only SUBSTRING] [--slow] [--json FILE] [--root CHECKOUT]

Each case is one attempt to make cellgen misbehave: run code from a spec, lose a user's file,
hang, or show a traceback instead of a diagnostic. A case is *clean* when cellgen does the
right thing (works, or refuses with a CellgenError / exit status 1 or 2 and no traceback); the
script prints one line per case and the count of clean cases. Every case runs in its own
subprocess (`python -m cellgen …`, or a snippet under `python -c`) with an address-space limit,
so an absurd size that the code tries to allocate fails there instead of taking the machine.
The cases tagged slow (training, signals, torchrun) run with --slow.

This is a measurement, not a test: tests/test_reliability*.py assert each finding on its own.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(os.environ.get("CELLGEN_ROOT") or Path(__file__).resolve().parent.parent)  # --root sets it
MEMORY_LIMIT = 8 << 30  # bytes of address space per case process
TINY_TRAIN = ["-p", "hidden=4", "-p", "k=3", "--frame-size", "16", "--context", "2", "--future", "2",
              "--batch-size", "2", "--eval-sequences", "2", "--eval-batch-size", "2", "--test-sequences", "2",
              "--threads", "1", "--quiet", "--layers", "1"]


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def run(argv, timeout=120, cwd=None, stdout=subprocess.PIPE, **kw) -> subprocess.CompletedProcess:
    cwd = cwd or tempfile.gettempdir()  # not the caller's: `python -m cellgen` would import ./cellgen first
    try:
        return subprocess.run(argv, env=_env(), stdout=stdout, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, cwd=cwd, preexec_fn=_limit_memory, **kw)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, -999, "", f"TIMEOUT after {timeout} s")


def cli(*args, **kw) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "cellgen", *map(str, args)], **kw)


def snippet(code: str, **kw) -> subprocess.CompletedProcess:
    return run([sys.executable, "-c", textwrap.dedent(code)], **kw)


def user_error(result, *fragments) -> tuple[bool, str]:
    """Exit 1 or 2, a message, no traceback, and every fragment in stderr."""
    err = result.stderr or ""
    ok = result.returncode in (1, 2) and "Traceback" not in err and err.strip() != ""
    missing = [f for f in fragments if f not in err]
    return ok and not missing, f"rc={result.returncode} {err.strip().splitlines()[-1][:150] if err.strip() else ''}" + \
        (f" (missing {missing})" if missing else "")


def api_refusal(body: str, *fragments, setup: str = "") -> tuple[bool, str]:
    """`body` must raise a CellgenError whose message holds every fragment."""
    code = f"""
import sys, torch, cellgen
from cellgen.errors import CellgenError
{setup}
try:
{textwrap.indent(textwrap.dedent(body), '    ')}
except CellgenError as error:
    text = str(error)
    missing = [f for f in {list(fragments)!r} if f not in text]
    print(("CLEAN " if not missing else f"DIRTY missing {{missing}}: ") + text.splitlines()[0][:150])
except BaseException as error:
    print(f"DIRTY {{type(error).__name__}}: {{str(error).splitlines()[0][:150] if str(error) else ''}}")
else:
    print("DIRTY no error")
"""
    result = snippet(code)
    line = (result.stdout.strip().splitlines() or [f"DIRTY crashed rc={result.returncode} "
                                                   f"{(result.stderr or '').strip()[-150:]}"])[-1]
    return line.startswith("CLEAN"), line


SPEC = """cell {name} "{citation}"
  param in_channels = 2
  param hidden = 4
  param k = 3
  input {x}[in_channels]
  state h[hidden], c[hidden]
  weights
    W_x*, W_h* : conv k×k
    b_*        : bias
  i  = σ(W_xi ⋆ {x} + W_hi ⋆ h + b_i)
  f  = σ(W_xf ⋆ {x} + W_hf ⋆ h + b_f)
  c' = f ⊙ c + i ⊙ tanh(W_xc ⋆ {x} + W_hc ⋆ h + b_c){extra}
  o  = σ(W_xo ⋆ {x} + W_ho ⋆ h + b_o)
  h' = o ⊙ tanh(c')
"""


def spec_text(name="Cell", citation="A, B 2020", x="x", extra="") -> str:
    return SPEC.format(name=name, citation=citation, x=x, extra=extra)


def module_case(tmp: Path, text: str, filename: str = "cell.cell", run_step: bool = True) -> tuple[bool, str]:
    """`--emit module` of `text` (saved as `filename`) writes a module that imports without side
    effects, and whose class runs one step."""
    spec = tmp / filename
    spec.write_text(text, encoding="utf-8")
    out = tmp / "emitted.py"
    result = cli("compile", spec.name, "--emit", "module", "-o", out, "--force", cwd=tmp)
    if result.returncode != 0:
        return user_error(result)  # a refusal with a diagnostic is clean too
    check = f"""
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("emitted", {str(out)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
classes = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
           and v.__module__ == "emitted"]
cell = classes[0]()
if {run_step!r}:
    x = torch.randn(1, 2, 5, 5)
    h, state = cell(x, None)
print("IMPORTED")
"""
    before = set(os.listdir(tmp))
    imported = snippet(check, cwd=tmp)
    created = set(os.listdir(tmp)) - before
    ok = "IMPORTED" in imported.stdout and not created
    return ok, ("imports and runs" if ok else f"created {sorted(created)} " if created else
                (imported.stderr.strip().splitlines() or ["?"])[-1][:150])


@dataclass
class Case:
    name: str
    area: str
    run: Callable[[Path], tuple[bool, str]]
    slow: bool = False


CASES: list[Case] = []


def case(area: str, slow: bool = False):
    def register(function):
        CASES.append(Case(function.__name__, area, function, slow))
        return function
    return register


# --- security ----------------------------------------------------------------------------------

@case("security")
def payload_file_name(tmp):
    return module_case(tmp, spec_text(), 'x""";__import__("os").system("touch pwned");"""y.cell', run_step=False)


@case("security")
def payload_citation(tmp):
    return module_case(tmp, spec_text(citation='a""" + __import__("os").system("touch pwned") + """b'))


@case("security")
def backslash_in_citation(tmp):
    return module_case(tmp, spec_text(citation="Foo\\Bar \\N{x} \\u12"))


@case("security")
def windows_path_origin(tmp):
    return module_case(tmp, spec_text(), "C:\\Users\\me\\new\\cell.cell")


@case("security")
def cell_name_not_identifier(tmp):
    return module_case(tmp, spec_text(name="Cx²"))


for _name in ("inf", "class", "def", "None", "lambda", "state", "torch", "nan", "self", "F", "math"):
    def _input_named(tmp, _name=_name):
        return module_case(tmp, spec_text(x=_name))
    _input_named.__name__ = f"input_named_{_name}"
    case("security")(_input_named)


for _name in ("torch", "F", "math", "self", "state", "inf", "lambda", "initial_state"):
    def _gate_named(tmp, _name=_name):
        text = spec_text().replace("  o  = σ(", f"  {_name}  = σ(").replace("h' = o ⊙", f"h' = {_name} ⊙")
        return module_case(tmp, text)
    _gate_named.__name__ = f"gate_named_{_name}"
    case("security")(_gate_named)


@case("security")
def inf_constant(tmp):
    return module_case(tmp, spec_text(extra=" + 1e999 ⊙ c"))


@case("security")
def ansi_escape_in_diagnostic(tmp):
    spec = tmp / "ansi.cell"
    spec.write_text(spec_text(extra=" + \x1b[31mred\x1b[0m"), encoding="utf-8")
    result = cli("check", spec)
    ok, note = user_error(result)
    return ok and "\x1b" not in result.stderr, note + (" (ESC reached the terminal)" if "\x1b" in result.stderr else "")


@case("security")
def ansi_escape_in_name_echo(tmp):
    result = cli("check", "conv\x1b]0;owned\x07lstm")
    ok, note = user_error(result)
    return ok and "\x1b" not in result.stderr and "\x07" not in result.stderr, note


# --- data loss ---------------------------------------------------------------------------------

@case("data loss")
def output_onto_fifo(tmp):
    fifo = tmp / "pipe"
    os.mkfifo(fifo)
    result = cli("compile", "convlstm", "-p", "in_channels=1", "-o", fifo, "--force", timeout=60)
    ok, note = user_error(result)
    still = fifo.is_fifo()
    return ok and still, note + ("" if still else " (the FIFO was replaced by a regular file)")


@case("data loss")
def output_onto_symlink_to_directory(tmp):
    (tmp / "d").mkdir()
    os.symlink(tmp / "d", tmp / "link")
    result = cli("compile", "convlstm", "-p", "in_channels=1", "-o", tmp / "link", "--force")
    ok, note = user_error(result)
    return ok and (tmp / "link").is_symlink(), note


@case("data loss")
def output_through_symlink_keeps_link(tmp):
    (tmp / "real.py").write_text("old\n")
    os.symlink(tmp / "real.py", tmp / "link.py")
    result = cli("compile", "convlstm", "-p", "in_channels=1", "-o", tmp / "link.py", "--force")
    ok = result.returncode == 0 and (tmp / "link.py").is_symlink() and "forward" in (tmp / "real.py").read_text()
    return ok, f"rc={result.returncode}, link kept: {(tmp / 'link.py').is_symlink()}"


def _bench(tmp, *extra, timeout=300):
    return cli("bench", "convlstm", "--channels", "4", "--in-channels", "2", "--size", "8", "--batch", "1",
               "--repeats", "1", "--warmup", "0", "--no-compile", "--forward-only", *extra, timeout=timeout)


@case("data loss")
def bench_json_existing_file(tmp):
    target = tmp / "results.json"
    target.write_text("precious\n")
    result = _bench(tmp, "--json", target)
    kept = target.read_text() == "precious\n"
    ok, note = user_error(result)
    return ok and kept, note + ("" if kept else " (overwritten)")


@case("data loss")
def bench_markdown_symlink(tmp):
    (tmp / "precious.md").write_text("precious\n")
    os.symlink(tmp / "precious.md", tmp / "report.md")
    result = _bench(tmp, "--markdown", tmp / "report.md")
    kept = (tmp / "precious.md").read_text() == "precious\n"
    ok, note = user_error(result)
    return ok and kept, note + ("" if kept else " (written through the link)")


@case("data loss")
def bench_json_directory_fails_first(tmp):
    began = time.perf_counter()
    result = cli("bench", "convlstm", "--json", tmp, timeout=600)  # the default (long) benchmark
    seconds = time.perf_counter() - began
    ok, note = user_error(result)
    return ok and seconds < 30, f"{note} after {seconds:.0f} s"


@case("data loss", slow=True)
def train_force_keeps_user_tmp(tmp):
    out = tmp / "run"
    out.mkdir()
    (out / ".notes.tmp").write_text("mine\n")
    result = cli("train", "convlstm", *TINY_TRAIN, "--steps", "1", "--out", out, "--force", timeout=300)
    kept = (out / ".notes.tmp").exists()
    return result.returncode == 0 and kept, f"rc={result.returncode}, .notes.tmp kept: {kept}"


def _wait_until_training(process: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    """Until the run `process` trains into `out` has written its config.toml (it does so holding
    the run lock, with SIGINT/SIGTERM already stopping it cleanly: cellgen/training/commands.py),
    then 2 s more, into its first steps. Waiting on a fixed time instead lands too early on a
    loaded machine and wastes seconds on an idle one."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and not (out / "config.toml").exists():
        time.sleep(0.1)
    time.sleep(2)


@case("data loss", slow=True)
def two_trainings_one_out(tmp):
    out = tmp / "run"
    argv = [sys.executable, "-m", "cellgen", "train", "convlstm", *TINY_TRAIN, "--steps", "100000", "--out", str(out)]
    first = subprocess.Popen(argv, env=_env(), cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_until_training(first, out)
    second = cli("train", "convlstm", *TINY_TRAIN, "--steps", "30", "--out", out, "--force", timeout=300)
    running = first.poll() is None
    first.kill()
    first.communicate()
    ok, note = user_error(second)
    return ok and running, f"second: {note}; first still running then: {running}"


_TRAINED: dict[int, Path] = {}  # steps -> a run trained once in this process, copied for each case


def _trained_run(tmp: Path, steps: int = 1) -> Path:
    """A fresh copy (tmp/run) of a run trained by `cellgen train`: the cases that start from a
    trained run (export, eval, a tampered resume) need one each, all alike, and training it once
    per process instead of once per case saves a torch import and a training each time."""
    if steps not in _TRAINED:
        home = Path(tempfile.mkdtemp(prefix="adversarial-trained-"))
        atexit.register(shutil.rmtree, home, True)
        result = cli("train", "convlstm", *TINY_TRAIN, "--steps", steps, "--out", home / "run", timeout=300)
        if result.returncode != 0:
            raise RuntimeError(result.stderr)
        _TRAINED[steps] = home / "run"
    out = tmp / "run"
    shutil.copytree(_TRAINED[steps], out)
    return out


@case("data loss", slow=True)
def export_keeps_user_staging_name(tmp):
    run_dir = _trained_run(tmp)
    user = tmp / ".model.pt.export.tmp"
    user.write_text("mine\n")
    result = cli("export", run_dir, "--format", "torchscript", "-o", tmp / "model.pt", timeout=300)
    kept = user.exists() and user.read_text() == "mine\n"
    return result.returncode == 0 and kept, f"rc={result.returncode}, user's file kept: {kept}"


@case("data loss", slow=True)
def export_killed_leaves_nothing(tmp):
    run_dir = _trained_run(tmp)
    out_dir = tmp / "exports"
    out_dir.mkdir()
    argv = [sys.executable, "-m", "cellgen", "export", str(run_dir), "--format", "onnx", "-o",
            str(out_dir / "model.onnx")]
    process = subprocess.Popen(argv, env=_env(), cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not any(out_dir.iterdir()):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    left = sorted(p.name for p in out_dir.iterdir())
    again = cli("export", run_dir, "--format", "torchscript", "-o", out_dir / "model.pt", timeout=300)
    after = sorted(p.name for p in out_dir.iterdir())
    ok = again.returncode == 0 and after == ["model.pt"]
    return ok, f"killed left {left}; after the next export: {after}"


def _signal_training(tmp, signum, wait_for_step=2):
    out = tmp / "run"
    argv = [sys.executable, "-m", "cellgen", "train", "convlstm", *TINY_TRAIN[:-3], "--steps", "100000",
            "--checkpoint-every", "100000", "--eval-every", "100000", "--out", str(out)]
    process = subprocess.Popen(argv, env=_env(), cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_until_training(process, out)
    process.send_signal(signum)
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        return False, "did not stop within 120 s"
    expected = 128 + signum
    saved = (out / "checkpoint.pt").exists()
    ok = process.returncode == expected and saved and "Traceback" not in stderr
    tail = stderr.strip().splitlines()[-1][:150] if stderr.strip() else ""
    return ok, f"rc={process.returncode} (want {expected}), checkpoint: {saved}; {tail}"


@case("data loss", slow=True)
def sigint_during_training(tmp):
    return _signal_training(tmp, signal.SIGINT)


@case("data loss", slow=True)
def sigterm_during_training(tmp):
    return _signal_training(tmp, signal.SIGTERM)


@case("data loss", slow=True)
def kill9_during_first_checkpoint(tmp):
    out = tmp / "run"
    out.mkdir()
    # kill -9 a process in the middle of writing the run's first checkpoint, as this cellgen writes it
    writer = subprocess.Popen(cwd=tmp, args=[sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from cellgen.files import write_atomically
        def write(handle):
            handle.write(b"PK half a checkpoint"); handle.flush(); print("writing", flush=True); time.sleep(600)
        write_atomically(Path({str(out / 'checkpoint.pt')!r}), write)
        """)], env=_env(), stdout=subprocess.PIPE, text=True)
    writer.stdout.readline()
    writer.kill()
    writer.wait()
    left = sorted(p.name for p in out.iterdir())
    fresh = cli("train", "convlstm", *TINY_TRAIN, "--steps", "1", "--out", out, timeout=300)
    return fresh.returncode == 0, f"kill -9 left {left}; a new run there without --force: rc={fresh.returncode} " \
                                  f"{fresh.stderr.strip().splitlines()[-1][:120] if fresh.stderr.strip() else ''}"


# --- diagnostics -------------------------------------------------------------------------------

def _tampered(tmp, change: str, *fragments):
    """`change` made to the checkpoint of a trained run (here: the harness's work, not the
    case's), then `cellgen train --resume` of it."""
    import torch

    run_dir = _trained_run(tmp)
    path = run_dir / "checkpoint.pt"
    payload = torch.load(path, weights_only=True)
    exec(change, {"torch": torch, "payload": payload})
    torch.save(payload, path)
    result = cli("train", "convlstm", "--steps", "3", "--out", run_dir, "--resume", "--quiet", timeout=300)
    return user_error(result, *fragments)


@case("diagnostics", slow=True)
def resume_step_is_text(tmp):
    return _tampered(tmp, "payload['step'] = 'seven'", "step")


@case("diagnostics", slow=True)
def resume_weight_wrong_shape(tmp):
    return _tampered(tmp, "k = next(iter(payload['model'])); payload['model'][k] = torch.zeros(3)", "weight")


@case("diagnostics", slow=True)
def resume_optimizer_broken(tmp):
    return _tampered(tmp, "payload['optimizer'] = {'state': 5}", "optimizer")


@case("diagnostics", slow=True)
def resume_spec_text_broken(tmp):
    return _tampered(tmp, "payload['model_config']['spec_text'] = 'cell X\\n  garbage ='", "spec")


@case("diagnostics", slow=True)
def resume_negative_step(tmp):
    return _tampered(tmp, "payload['step'] = -4", "step")


@case("diagnostics", slow=True)
def resume_loss_history_wrong(tmp):
    return _tampered(tmp, "payload['loss_history'] = 'nope'", "loss_history")


@case("diagnostics", slow=True)
def eval_batch_size_zero(tmp):
    run_dir = _trained_run(tmp)
    return user_error(cli("eval", run_dir, "--batch-size", "0"), "batch")


@case("diagnostics")
def eval_batch_size_zero_no_run(tmp):
    return user_error(cli("eval", tmp, "--batch-size", "0"), "batch")


@case("diagnostics")
def stdout_full(tmp):
    with open("/dev/full", "w") as full:
        result = cli("list", stdout=full)
    return user_error(result)


@case("diagnostics")
def stdout_closed(tmp):
    result = run(["sh", "-c", f"{sys.executable} -m cellgen list >&-"])
    return user_error(result)


@case("diagnostics")
def stdout_pipe_closed_early(tmp):
    result = run(["sh", "-c", f"{sys.executable} -m cellgen compile convlstm -p in_channels=1 | head -c1 >/dev/null"])
    ok = "Traceback" not in result.stderr and "Exception" not in result.stderr
    return ok, result.stderr.strip()[-150:] or "quiet"


CELL = "cell = cellgen.compile('convlstm', in_channels=5, hidden=4, k=3)"


@case("diagnostics")
def wrong_input_channels(tmp):
    ok, note = api_refusal("cell(torch.randn(2, 3, 8, 8), None)", "5", "3", setup=CELL)
    return ok and "9" not in note, note


@case("diagnostics")
def batch_mismatch(tmp):
    return api_refusal("x = torch.randn(2, 5, 8, 8); s = cell.zero_state(torch.randn(3, 5, 8, 8)); cell(x, s)",
                       "batch", setup=CELL)


@case("diagnostics")
def spatial_mismatch(tmp):
    return api_refusal("x = torch.randn(2, 5, 8, 8); s = cell.zero_state(torch.randn(2, 5, 6, 6)); cell(x, s)",
                       "8", setup=CELL)


@case("diagnostics")
def missing_state_key(tmp):
    return api_refusal("x = torch.randn(2, 5, 8, 8); s = cell.zero_state(x); del s['c']; cell(x, s)", "c",
                       setup=CELL)


@case("diagnostics")
def state_is_list(tmp):
    return api_refusal("x = torch.randn(2, 5, 8, 8); cell(x, list(cell.zero_state(x).values()))", "state",
                       setup=CELL)


@case("diagnostics")
def state_none_values(tmp):
    return api_refusal("x = torch.randn(2, 5, 8, 8); cell(x, {'h': None, 'c': None})", "state", setup=CELL)


@case("diagnostics")
def float64_input(tmp):
    return api_refusal("cell(torch.randn(2, 5, 8, 8, dtype=torch.float64), None)", "float64", setup=CELL)


@case("diagnostics")
def bfloat16_input(tmp):
    return api_refusal("cell(torch.randn(2, 5, 8, 8, dtype=torch.bfloat16), None)", "bfloat16", setup=CELL)


@case("diagnostics")
def input_not_a_tensor(tmp):
    return api_refusal("cell([[1.0]], None)", "tensor", setup=CELL)


@case("diagnostics")
def input_wrong_rank(tmp):
    return api_refusal("cell(torch.randn(5, 8, 8), None)", "dimension", setup=CELL)


@case("diagnostics")
def compile_42(tmp):
    return api_refusal("cellgen.compile(42)", "42")


@case("diagnostics")
def compile_none(tmp):
    return api_refusal("cellgen.compile(None)", "None")


def _deep(expr: str, eqs: str = "") -> str:
    return f"""cell Deep
  input x[2]
  state h[2]
{eqs}  h' = {expr}
"""


DEEP_SPECS = {
    "sum_of_1000_terms": _deep(" + ".join(["x"] * 1000)),
    "minus_1000_times": _deep("-" * 1000 + "x"),
    "nested_calls_300": _deep("tanh(" * 300 + "x" + ")" * 300),
    "chain_of_250_equations": _deep("a249", "".join(f"  a{i} = {'x' if i == 0 else f'a{i - 1}'} + h\n"
                                                    for i in range(250))),
    "parens_5000": _deep("(" * 5000 + "x" + ")" * 5000),
    "int_literal_5000_digits": _deep("x").replace("input x[2]", "param big = " + "9" * 5000 + "\n  input x[2]"),
    "float_literal_1e999": _deep("1e999 ⊙ x + h"),
    "huge_float_digits": _deep("1" * 5000 + ".0 ⊙ x + h"),
    "eps_1e999": """cell N
  input x[2]
  state h[2]
  weights
    LN : layernorm eps 1e999
  h' = LN(x) + h
""",
}

MUST_REFUSE = {"int_literal_5000_digits", "float_literal_1e999", "huge_float_digits", "eps_1e999"}

for _name, _text in DEEP_SPECS.items():
    def _deep_case(tmp, _text=_text, _name=_name):
        path = tmp / "deep.cell"
        path.write_text(_text, encoding="utf-8")
        result = cli("check", path, timeout=120)
        if result.returncode == 0 and _name not in MUST_REFUSE:  # deep but legal: checking it is fine too
            return True, "checked"
        return user_error(result)
    _deep_case.__name__ = _name
    case("diagnostics")(_deep_case)


@case("diagnostics")
def hidden_10_12(tmp):
    return user_error(cli("compile", "convlstm", "-p", "in_channels=1", "-p", f"hidden={10**12}"), "hidden")


@case("diagnostics")
def k_10_9(tmp):
    return user_error(cli("compile", "convlstm", "-p", "in_channels=1", "-p", f"k={10**9}"), "k")


@case("diagnostics")
def elementwise_100000_squared(tmp):
    path = tmp / "big.cell"
    path.write_text("cell Big\n  input x[2]\n  state h[2]\n  weights\n    W : elementwise [2, 100000, 100000]\n"
                    "  h' = W ⊙ x + h\n", encoding="utf-8")
    return user_error(cli("compile", path), "100000")


@case("diagnostics")
def summary_does_not_allocate(tmp):
    result = cli("compile", "convlstm", "-p", "in_channels=1", "-p", "hidden=200000", "-p", "k=5",
                 "--emit", "summary")
    return result.returncode == 0 and "Traceback" not in result.stderr, f"rc={result.returncode} " + \
        (result.stderr.strip().splitlines() or [""])[-1][:150]


@case("diagnostics")
def frame_size_1000000(tmp):
    return user_error(cli("train", "convlstm", "--frame-size", "1000000", "--steps", "1", "--out", tmp / "r"),
                      "frame")


LOOKALIKES = {"greek_omicron": ("o", "ο"), "cyrillic_ha": ("x", "х"), "nbsp": (" ", "\u00a0"),
              "zero_width_space": ("", "\u200b"), "bom_inside": ("", "\ufeff")}

for _name, (_plain, _odd) in LOOKALIKES.items():
    def _lookalike(tmp, _odd=_odd, _plain=_plain, _name=_name):
        text = spec_text()
        line = "  o  = σ(W_xo ⋆ x + W_ho ⋆ h + b_o)"
        if _plain == "o":
            bad = line.replace("o  =", "ο  =")
        elif _plain == "x":
            bad = line.replace("⋆ x", "⋆ х")
        elif _plain == " ":
            bad = line.replace("= σ", "=\u00a0σ")
        else:
            bad = line.replace("W_ho", "W_" + _odd + "ho")
        path = tmp / "look.cell"
        path.write_text(text.replace(line, bad), encoding="utf-8")
        result = cli("check", path)
        words = {"greek_omicron": "GREEK", "cyrillic_ha": "CYRILLIC", "nbsp": "NO-BREAK SPACE",
                 "zero_width_space": "ZERO WIDTH SPACE", "bom_inside": "ZERO WIDTH NO-BREAK SPACE"}
        return user_error(result, words[_name])
    _lookalike.__name__ = f"lookalike_{_name}"
    case("diagnostics")(_lookalike)


@case("diagnostics")
def bom_at_start(tmp):
    path = tmp / "bom.cell"
    path.write_text("\ufeff" + spec_text(), encoding="utf-8")
    result = cli("check", path)
    return result.returncode == 0 or user_error(result, "BOM")[0], f"rc={result.returncode}"


# --- hangs -------------------------------------------------------------------------------------

@case("hangs")
def spec_of_50000_statements(tmp):
    lines = ["cell Huge", "  input x[2]", "  state h[2]", "  a0 = x"]
    lines += [f"  a{i} = a{i - 1} + x" for i in range(1, 50000)]
    lines += ["  h' = a49999 + h"]
    path = tmp / "huge.cell"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    began = time.perf_counter()
    result = cli("check", path, timeout=120)
    seconds = time.perf_counter() - began
    fine = result.returncode == 0 or user_error(result)[0]
    return fine and seconds < 60, f"rc={result.returncode} in {seconds:.1f} s " + \
        (result.stderr.strip().splitlines() or [""])[-1][:120]


def _torchrun(tmp, *extra, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
            str(29500 + os.getpid() % 1000), "-m", "cellgen", "train", "convlstm", *TINY_TRAIN, *extra,
            "--out", str(tmp / "run")]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


@case("hangs", slow=True)
def torchrun_frozen_peer(tmp):
    argv = _torchrun(tmp, "--steps", "100000", "--eval-every", "100000", "--checkpoint-every", "100000",
                     "--dist-timeout", "20")
    process = subprocess.Popen(argv, env=_env(), cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    time.sleep(25)
    workers = _children(process.pid)
    if len(workers) < 2:
        process.kill()
        return False, f"workers: {workers}; {process.stderr.read()[-300:] if process.poll() is not None else ''}"
    os.kill(workers[1], signal.SIGSTOP)
    began = time.time()
    try:
        _, stderr = process.communicate(timeout=150)
        seconds = time.time() - began
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return False, "still waiting 150 s after a peer froze"
    finally:
        for worker in workers:
            try:
                os.kill(worker, signal.SIGCONT)
                os.kill(worker, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return "timed out" in stderr or "did not answer" in stderr, f"stopped {seconds:.0f} s after the freeze"


@case("hangs", slow=True)
def torchrun_agent_killed(tmp):
    argv = _torchrun(tmp, "--steps", "100000", "--eval-every", "100000", "--checkpoint-every", "100000", nproc=1)
    process = subprocess.Popen(argv, env=_env(), cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    time.sleep(20)
    workers = _children(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    def running(pid: int) -> bool:  # a zombie has exited: only its reaping is left (to whoever adopted it)
        try:
            return "zombie" not in open(f"/proc/{pid}/status").read()
        except OSError:
            return False

    deadline = time.time() + 30
    while time.time() < deadline and any(running(w) for w in workers):
        time.sleep(0.5)
    alive = [w for w in workers if running(w)]
    for worker in alive:
        os.kill(worker, signal.SIGKILL)
    return bool(workers) and not alive, f"workers {workers}, still alive 30 s after the agent died: {alive}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="run the cases whose name holds this")
    parser.add_argument("--slow", action="store_true", help="also the training, signal and torchrun cases")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--root", type=Path, default=None,
                        help="run the cellgen of this checkout (e.g. an export of main, for the count before)")
    args = parser.parse_args(argv)
    if args.root is not None:
        global ROOT
        ROOT = args.root.resolve()
    chosen = [c for c in CASES if (args.slow or not c.slow) and (args.only is None or args.only in c.name or args.only == c.area)]
    results = []
    for item in chosen:
        with tempfile.TemporaryDirectory(prefix="adversarial-") as tmp:
            began = time.perf_counter()
            try:
                ok, note = item.run(Path(tmp))
            except Exception as error:  # the harness itself failed: count the case as not clean
                ok, note = False, f"harness: {type(error).__name__}: {error}"[:200]
            seconds = time.perf_counter() - began
        results.append({"case": item.name, "area": item.area, "clean": ok, "note": note, "seconds": round(seconds, 1)})
        print(f"{'clean' if ok else 'DIRTY':5}  {item.area:11}  {item.name:36} {note}", flush=True)
    by_area: dict[str, list[bool]] = {}
    for row in results:
        by_area.setdefault(row["area"], []).append(row["clean"])
    print()
    for area, flags in by_area.items():
        print(f"{area:11}  {sum(flags)}/{len(flags)} clean")
    print(f"{'all':11}  {sum(r['clean'] for r in results)}/{len(results)} clean")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
