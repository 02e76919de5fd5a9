"""Issue 14, finding by finding: nothing runs from a spec, nothing of the user's is lost, no
traceback at the edges. Fast, in-process tests of each fix; tests/test_adversarial.py runs the
whole adversarial list (bench/adversarial.py) as subprocesses, as a user would.
"""
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cellgen
from cellgen.codegen.identifiers import argument_name, class_name
from cellgen.codegen.standalone import standalone_source
from cellgen.errors import CellgenError, Source, Span, terminal_safe
from cellgen.language import limits
from cellgen.language.parser import parse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import adversarial  # noqa: E402

SPEC = adversarial.spec_text


def _import(path: Path, cwd: Path) -> subprocess.CompletedProcess:
    code = (f"import importlib.util; s = importlib.util.spec_from_file_location('m', {str(path)!r}); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); print('ok')")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


# --- security ----------------------------------------------------------------------------------

def test_payload_in_the_origin_is_a_string_not_code(tmp_path):
    origin = 'x""";__import__("os").system("touch pwned");"""y.cell'
    source = standalone_source(cellgen.compile(SPEC(), opt_level=2), origin)
    (tmp_path / "m.py").write_text(source, encoding="utf-8")
    result = _import(tmp_path / "m.py", tmp_path)
    assert result.stdout.strip() == "ok", result.stderr
    assert not (tmp_path / "pwned").exists()
    namespace = {}
    exec(compile(source.split("\nimport math")[0], "doc", "exec"), namespace)  # the docstring alone
    assert origin in namespace["__doc__"]


@pytest.mark.parametrize("citation", ["Foo\\Bar \\N{x} \\u12", "a''' + 1 + '''b", "tab\there"])
def test_citations_reach_the_docstring_verbatim(citation):
    text = SPEC(citation=citation)
    cell = cellgen.compile(text)
    source = standalone_source(cell, "C:\\Users\\new\\x.cell")
    namespace = {}
    exec(compile(source, "m", "exec"), namespace)
    assert citation in namespace["__doc__"] and "C:\\Users\\new\\x.cell" in namespace["__doc__"]


@pytest.mark.parametrize("name", ["class", "def", "None", "lambda", "state", "torch", "inf", "nan", "self", "F"])
def test_inputs_named_like_python_work_and_match_the_module(name):
    text = SPEC(x=name)
    cell = cellgen.compile(text, opt_level=0)
    namespace = {}
    exec(compile(standalone_source(cell), "m", "exec"), namespace)
    standalone = namespace["Cell"]()
    standalone.load_state_dict(cell.state_dict())
    x = torch.randn(2, 2, 5, 5)
    h, _ = cell(x, None)
    assert torch.equal(standalone(x, None)[0], h)


def test_identifiers():
    assert [argument_name(n) for n in ("x", "class", "state", "torch", "x²")] == ["x", "class_", "state_", "torch_",
                                                                               "x2"]
    assert class_name("Cx²").isidentifier() and class_name("None") == "None_"


def test_control_characters_never_reach_the_terminal():
    source = Source("a\x1b[2J.cell", "  h = a\x1b[31m + b\u202e")
    text = CellgenError("unexpected `\x1b`", Span(source, 1, 8, 1, 9), hint="\x07").render()
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b[31m" in text
    excerpt = text.splitlines()[1:3]
    assert excerpt[1].index("^") == excerpt[0].index("\\x1b")  # the caret under the escape
    assert terminal_safe("tab\tand\nnewline") == "tab\tand\nnewline"


# --- limits ------------------------------------------------------------------------------------

def _deep(expr, eqs=""):
    return adversarial._deep(expr, eqs)


@pytest.mark.parametrize("text", [
    _deep(" + ".join(["x"] * 1000)), _deep("-" * 1000 + "x"), _deep("tanh(" * 300 + "x" + ")" * 300),
])
def test_deep_expressions_are_refused_at_parse_time(text):
    with pytest.raises(limits.LimitError) as caught:
        parse(text)
    assert caught.value.span.line == 4 and "200 deep" in caught.value.message


def test_chains_of_equations_up_to_the_limit_compile_and_past_it_are_refused():
    chain = lambda n: _deep(f"a{n - 1}", "".join(f"  a{i} = {'x' if i == 0 else f'a{i - 1}'} + h\n"  # noqa: E731
                                                  for i in range(n)))
    cellgen.compile(chain(250), opt_level=2)
    with pytest.raises(limits.LimitError) as caught:
        cellgen.compile(chain(1000))
    assert "at most 500" in caught.value.message and caught.value.span.line == 4 + 500


@pytest.mark.parametrize("literal, words", [("9" * 5000, "5,000 digits"), ("1e999", "too large for a float"),
                                            ("1" * 400 + ".0", "401 digits")])
def test_number_literals(literal, words):
    with pytest.raises(limits.LimitError, match=words):
        parse(_deep(f"{literal} ⊙ x + h"))


def test_eps_that_overflows():
    with pytest.raises(limits.LimitError, match="infinity"):
        parse("cell N\n  input x[2]\n  state h[2]\n  weights\n    LN : layernorm eps 1e999\n  h' = LN(x) + h\n")


def test_statement_limit_is_quick_and_positioned():
    lines = ["cell Huge", "  input x[2]", "  state h[2]", "  a0 = x"] + [f"  a{i} = a{i - 1} + x" for i in
                                                                         range(1, 50000)]
    began = time.perf_counter()
    with pytest.raises(limits.LimitError) as caught:
        parse("\n".join(lines + ["  h' = a49999 + h"]))
    assert time.perf_counter() - began < 5  # no parse: one scan of the lines
    assert caught.value.span.line == limits.MAX_STATEMENTS + 1


def test_unrolled_loops_count_against_the_statement_limit():
    values = ", ".join(map(str, range(1, 120)))
    text = (f"cell L\n  input x[2]\n  state h[2]\n  a_0 = x\n  for s in ({values})\n    for r in ({values})\n"
            f"      b = x\n    end\n  end\n  h' = x + h\n")
    with pytest.raises(CellgenError):
        cellgen.lower_spec(text)


@pytest.mark.parametrize("odd, name", [("ο", "GREEK SMALL LETTER OMICRON"), ("х", "CYRILLIC SMALL LETTER HA"),
                                       ("\u00a0", "NO-BREAK SPACE"), ("\u200b", "ZERO WIDTH SPACE"),
                                       ("\ufeff", "ZERO WIDTH NO-BREAK SPACE")])
def test_lookalikes_are_named(odd, name):
    text = SPEC().replace("  o  = σ(W_xo ⋆ x", f"  o  = σ(W_xo ⋆ {odd}x" if odd in "\u00a0\u200b\ufeff" else
                          "  o  = σ(W_xo ⋆ " + odd)
    with pytest.raises(CellgenError) as caught:
        cellgen.lower_spec(text)
    assert name in caught.value.render()


def test_a_leading_bom_is_skipped():
    assert parse("\ufeff" + SPEC()).name == "Cell"


# --- sizes and the module boundary -------------------------------------------------------------

@pytest.mark.parametrize("params, needed", [({"hidden": 10 ** 12}, "W_hi"), ({"k": 10 ** 9}, "W_hi")])
def test_absurd_sizes_are_refused_before_allocating(params, needed):
    with pytest.raises(CellgenError, match="weight elements") as caught:
        cellgen.compile("convlstm", in_channels=1, **params)
    assert needed in caught.value.hint


CELL = None


@pytest.fixture(scope="module")
def cell():
    return cellgen.compile("convlstm", in_channels=5, hidden=4, k=3)


@pytest.mark.parametrize("call, words", [
    (lambda c: c(torch.randn(2, 3, 8, 8), None), "has 3 channels; the cell declares 5"),
    (lambda c: c(torch.randn(2, 5, 8, 8), c.zero_state(torch.randn(3, 5, 8, 8))), "batch differs"),
    (lambda c: c(torch.randn(2, 5, 8, 8), c.zero_state(torch.randn(2, 5, 6, 6))), "(2, 4, 8, 8)"),
    (lambda c: c(torch.randn(2, 5, 8, 8), {"h": torch.zeros(2, 4, 8, 8)}), "has no `c`"),
    (lambda c: c(torch.randn(2, 5, 8, 8), [torch.zeros(2, 4, 8, 8)] * 2), "not a list"),
    (lambda c: c(torch.randn(2, 5, 8, 8), {"h": None, "c": None}), "not NoneType"),
    (lambda c: c(torch.randn(2, 5, 8, 8, dtype=torch.float64), None), "float64, but its weights are float32"),
    (lambda c: c(torch.randn(2, 5, 8, 8, dtype=torch.bfloat16), None), "bfloat16"),
    (lambda c: c(torch.randn(5, 8, 8), None), "3 dimensions"),
    (lambda c: c("x", None), "must be a tensor"),
])
def test_misuse_at_the_boundary_is_named(cell, call, words):
    with pytest.raises(CellgenError) as caught:
        call(cell)
    assert words in caught.value.message
    assert "9" not in caught.value.message  # never the joined channels of a fused conv


def test_the_boundary_allows_autocast_and_copies(cell):
    x = torch.randn(2, 5, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cell(x.bfloat16(), None)
    import copy
    import pickle
    for clone in (copy.deepcopy(cell), pickle.loads(pickle.dumps(cell))):
        with pytest.raises(CellgenError):
            clone(torch.randn(2, 3, 8, 8), None)


@pytest.mark.parametrize("spec", [42, None, 3.5, ["convlstm"]])
def test_compile_of_a_non_spec(spec):
    with pytest.raises(CellgenError, match="a spec is a path"):
        cellgen.compile(spec)


# --- targets, locks, staging, checkpoints ------------------------------------------------------

def test_targets(tmp_path):
    from cellgen.targets import check_target

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "file", tmp_path / "link")
    os.symlink(tmp_path / "absent", tmp_path / "dangling")
    for name, words in (("fifo", "a FIFO"), ("dir", "a directory"), ("dangling", "does not exist")):
        with pytest.raises(CellgenError, match=words):
            check_target(tmp_path / name, force=True)
    with pytest.raises(CellgenError, match="a character device"):
        check_target(Path("/dev/null"), force=True)
    with pytest.raises(CellgenError, match="already exists"):
        check_target(tmp_path / "file", force=False)
    assert check_target(tmp_path / "link", force=True) == (tmp_path / "file").resolve()
    assert check_target(tmp_path / "new", force=False) == tmp_path / "new"


def test_only_our_temp_files_are_cleaned(tmp_path):
    from cellgen.files import remove_stale_temp_files, write_bytes_atomically

    (tmp_path / ".notes.tmp").write_text("mine")
    (tmp_path / ".checkpoint.pt.abc.tmp").write_text("mine too")
    (tmp_path / ".checkpoint.pt.cellgen-k2j3h4g5.tmp").write_text("a killed run's")
    write_bytes_atomically(tmp_path / "out.bin", b"x")
    assert [p.name for p in remove_stale_temp_files(tmp_path)] == [".checkpoint.pt.cellgen-k2j3h4g5.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".checkpoint.pt.abc.tmp", ".notes.tmp", "out.bin"]


def test_run_lock(tmp_path):
    from cellgen.training.runlock import run_lock

    code = (f"import time; from cellgen.training.runlock import run_lock\n"
            f"with run_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CellgenError, match=f"pid {holder.pid}"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path):  # a dead holder's lock is gone with it
        pass


def test_staging_removes_orphans_of_dead_processes_only(tmp_path):
    from cellgen.staging import staged

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    orphan = tmp_path / f".model.onnx.cellgen-stage-{dead}-0123abcd"
    orphan.mkdir()
    (orphan / "model.onnx").write_text("half")
    alive = tmp_path / f".model.onnx.cellgen-stage-{os.getpid()}-0123abcd"
    alive.mkdir()
    (tmp_path / ".model.pt.export.tmp").write_text("the user's")
    with staged(tmp_path / "model.pt") as path:
        path.write_text("new")
        os.replace(path, tmp_path / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, ".model.pt.export.tmp", "model.pt"])


def test_signal_requests(tmp_path):
    import signal

    from cellgen.training import signals

    with signals.stop_requests() as request:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert request.requested and request.signum == signal.SIGTERM
        with pytest.raises(signals.Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert not signals.current().requested


def _payload():
    from cellgen.training.checkpoint import FORMAT, VERSION

    return {"format": FORMAT, "version": VERSION, "step": 2, "model_config": {}, "data_config": {},
            "train_config": {}, "model": {"w": torch.zeros(2)}, "optimizer": {"state": {}, "param_groups": []},
            "loss_history": [[1, 0.5], [2, 0.25]], "evaluations": []}


@pytest.mark.parametrize("change, words", [
    ({"step": "seven"}, "`step`"), ({"step": -1}, "`step`"), ({"loss_history": "nope"}, "`loss_history`"),
    ({"optimizer": {"state": 5}}, "`optimizer"), ({"model": {"w": "zeros"}}, "`model.w`"),
    ({"step": 5}, "ends at step 2, not at its step 5"), ({"train_seconds": -3.0}, "`train_seconds`"),
])
def test_checkpoint_schema(tmp_path, change, words):
    from cellgen.training.checkpoint import load_checkpoint

    torch.save({**_payload(), **change}, tmp_path / "checkpoint.pt")
    with pytest.raises(CellgenError) as caught:
        load_checkpoint(tmp_path)
    assert words in caught.value.message and "damaged or was edited" in caught.value.message


def test_frame_size_is_refused_with_the_size_needed():
    from cellgen.training.sizes import check_frame_size

    with pytest.raises(CellgenError, match="GB in float32"):
        check_frame_size(10 ** 6, 20)
    check_frame_size(64, 20)


def test_dist_timeout_message():
    from cellgen.training.distributed import peer_timeout

    assert "did not answer" in peer_timeout(RuntimeError("[gloo] Timed out waiting 20000ms for recv")).message
    assert peer_timeout(RuntimeError("shape mismatch")) is None


def test_watchdog_stops_an_orphan(tmp_path):
    """A worker whose parent dies exits: parent → child (the watchdog) → kill -9 the parent."""
    child_code = ("import time; from cellgen.training.watchdog import watch_parent; watch_parent(0.2); "
                  "print('watching', flush=True); time.sleep(60)")
    parent_code = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {child_code!r}], "
                   f"stdout=subprocess.PIPE, text=True); p.stdout.readline(); print(p.pid, flush=True); "
                   f"time.sleep(60)")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TORCHELASTIC_RUN_ID="test")
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True, env=env)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.time() + 20
    while time.time() < deadline and os.path.exists(f"/proc/{child}"):
        status = Path(f"/proc/{child}/status").read_text() if os.path.exists(f"/proc/{child}") else ""
        if "zombie" in status:
            break
        time.sleep(0.2)
    assert not os.path.exists(f"/proc/{child}") or "zombie" in Path(f"/proc/{child}/status").read_text()


# --- the CLI ----------------------------------------------------------------------------------

def test_cli_refuses_a_device_even_with_force(capsys):
    from cellgen.cli import main

    assert main(["compile", "convlstm", "-p", "in_channels=1", "-o", "/dev/null", "--force"]) == 1
    assert "character device" in capsys.readouterr().err
    assert Path("/dev/null").is_char_device()


def test_summary_allocates_no_weights(capsys):
    from cellgen.cli import main

    assert main(["compile", "convlstm", "-p", "in_channels=1", "-p", "hidden=200000", "--emit", "summary"]) == 0
    assert "W_hi" in capsys.readouterr().out


def test_eval_batch_size_zero(capsys, tmp_path):
    from cellgen.cli import main

    assert main(["eval", str(tmp_path), "--batch-size", "0"]) == 1
    assert "--batch-size must be a positive" in capsys.readouterr().err
