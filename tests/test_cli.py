"""The `cellgen` command. Each command runs once as a user runs it, the real executable in a
subprocess (`run`); what a command prints or refuses is tested in this process (`cellgen`,
tests/cli_runner.py: `cellgen.cli.main` with stdout and stderr captured), which saves a fresh
Python and torch per case.

`cellgen` on PATH is used when installed (as in CI after `pip install -e .`), else
`python -m cellgen` with the repository on PYTHONPATH.
"""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.cli_runner import run_in_process as cellgen  # noqa: E402

SMALL = ["--param", "in_channels=3", "--param", "hidden=8", "--param", "k=3"]
SMALL_PARAMS = {"in_channels": 3, "hidden": 8, "k": 3}


def cellgen_command() -> list[str]:
    exe = shutil.which("cellgen")
    return [exe] if exe else [sys.executable, "-m", "cellgen"]


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([*cellgen_command(), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          encoding="utf-8", timeout=300)


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 1, a rendered diagnostic on stderr containing `fragments`, and no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# --- check -----------------------------------------------------------------------------------

def test_check_ok():
    result = run("check", "convlstm", "--param", "in_channels=3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: ConvLSTM (2 states, 12 weights, 3 params)"


def test_check_bad_spec_points_at_the_mistake(tmp_path):
    spec = tmp_path / "bad.cell"
    spec.write_text(textwrap.dedent("""\
        cell Bad
          param hidden = 4
          input x[hiden]
        """), encoding="utf-8")
    result = cellgen("check", str(spec))
    assert_user_error(result, f"{spec}:3:11: error: unknown param `hiden`", "did you mean `hidden`?")
    lines = result.stderr.splitlines()
    source = next(i for i, line in enumerate(lines) if "input x[hiden]" in line)
    caret = lines[source + 1]
    assert caret.strip() == "^^^^^"
    assert caret.index("^") == lines[source].index("hiden")


def test_check_warnings_are_rendered_on_stderr(tmp_path):
    spec = tmp_path / "unused.cell"
    spec.write_text((ROOT / "specs" / "convlstm.cell").read_text(encoding="utf-8") + "  z = σ(h)\n",
                    encoding="utf-8")
    result = cellgen("check", str(spec), "--param", "in_channels=3")
    assert result.returncode == 0, result.stderr
    assert f"{spec}:" in result.stderr and "warning: `z` is computed but never used" in result.stderr
    assert result.stdout.startswith("ok: ConvLSTM")


@pytest.mark.parametrize("content", [b"cell \xff\xfe broken\n"])
def test_non_utf8_spec_is_a_user_error(tmp_path, content):
    spec = tmp_path / "latin1.cell"
    spec.write_bytes(content)
    assert_user_error(cellgen("check", str(spec)), "not UTF-8")


def test_missing_file_is_a_user_error(tmp_path):
    assert_user_error(cellgen("check", str(tmp_path / "nope.cell")), "no such spec file")


def test_unknown_spec_name_suggests_the_closest():
    assert_user_error(cellgen("check", "convlsm", "--param", "in_channels=3"), "no spec named `convlsm`",
                      "did you mean `convlstm`?")


@pytest.mark.parametrize("param, message", [
    ("hidden", "--param expects NAME=VALUE, not `hidden`"),
    ("hidden=abc", "must be a whole number, not `abc`"),
    ("=3", "--param expects NAME=VALUE"),
    ("hiden=3", "did you mean `hidden`?"),
    ("hidden=0", "must be positive"),
])
def test_bad_param_forms(param, message):
    assert_user_error(cellgen("check", "convlstm", "--param", "in_channels=3", "--param", param), message)


def test_usage_errors_exit_2():
    result = run("compile", "convlstm", "-O", "7")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "invalid choice: 7" in result.stderr


# --- compile ---------------------------------------------------------------------------------

def test_compile_emits_forward_code_with_spec_names():
    result = run("compile", "convlstm", *SMALL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("def forward(self, x, state = None):")
    for name in ("c_next", "h_next", "W_xi", "b_o"):
        assert name in result.stdout


def test_compile_summary_counts():
    result = cellgen("compile", "convlstm", *SMALL, "--emit", "summary", "--size", "4", "5")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    total = 4 * (8 * 3 * 9) + 4 * (8 * 8 * 9) + 4 * 8
    assert total == 3200
    assert f"parameters: {total} in 12 weights" in out
    total_line = next(line for line in out.splitlines() if line.strip().startswith("total"))
    macs = 4 * (8 * 3 * 9 + 8 * 8 * 9) * 4 * 5
    assert total_line.split()[1:] == [str(total), str(macs)]
    assert f"MACs per step: {macs} " in out
    assert "convs per step: 8 in the spec" in out
    # W_xc feeds tanh inside c' = …: its gate is c'.
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("    ")}
    assert rows["W_xc"][1:4] == ["conv", "8x3x3x3", "216"]
    assert rows["b_i"][1:4] == ["bias", "8", "8"]
    gates = [line.strip().split()[0] for line in out.splitlines() if line.startswith("  ") and not
             line.startswith("   ") and line.strip().split()[0] in ("i", "f", "c'", "o")]
    assert gates == ["i", "f", "c'", "o"]
    assert "  h        8 channels" in out and "  x        3 channels" in out


def test_size_without_summary_is_a_user_error():
    assert_user_error(cellgen("compile", "convlstm", *SMALL, "--size", "4", "4"), "--size")


def test_compile_summary_marks_zigzag_states():
    result = cellgen("compile", "predrnn", *SMALL, "--emit", "summary")
    assert result.returncode == 0, result.stderr
    assert "m        8 channels, zigzag" in result.stdout
    assert "MACs at 64x64" in result.stdout


def test_standalone_module_matches_the_compiled_cell(tmp_path):
    """--emit module -o cell.py, then cell.py runs in a Python where cellgen cannot be imported."""
    import cellgen

    result = run("compile", "convlstm", *SMALL, "--emit", "module", "-o", "cell.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["cell.py"]  # no temp file left behind

    torch.manual_seed(0)
    cell = cellgen.compile("convlstm", **SMALL_PARAMS)
    xs = torch.randn(2, 2, 3, 6, 7)  # (steps, batch, channels, H, W)
    torch.save(cell.state_dict(), tmp_path / "weights.pt")
    torch.save(xs, tmp_path / "xs.pt")
    (tmp_path / "driver.py").write_text(textwrap.dedent("""\
        import importlib.util, sys
        # -I keeps PYTHONPATH, the user site and the script's folder off sys.path; an installed
        # cellgen (editable or not) would still be in site-packages, so block it outright.
        sys.modules["cellgen"] = None
        try:
            import cellgen
        except ImportError:
            pass
        else:
            raise SystemExit("cellgen is importable in the isolated run")
        import torch
        spec = importlib.util.spec_from_file_location("cell", "cell.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cell = module.ConvLSTM()
        cell.load_state_dict(torch.load("weights.pt"))
        state, outputs = None, []
        for x in torch.load("xs.pt"):
            h, state = cell(x, state)
            outputs.append((h, state))
        torch.save(outputs, "outputs.pt")
        print("cellgen" in sys.modules and sys.modules["cellgen"] is not None)
        """), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    isolated = subprocess.run([sys.executable, "-I", "driver.py"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
    assert isolated.returncode == 0, isolated.stderr
    assert isolated.stdout.strip() == "False"

    expected, state = [], None
    with torch.no_grad():
        for x in xs:
            h, state = cell(x, state)
            expected.append((h, state))
    got = torch.load(tmp_path / "outputs.pt")
    for (h_got, state_got), (h_want, state_want) in zip(got, expected, strict=True):
        assert (h_got - h_want).abs().max().item() <= 1e-6
        assert state_got.keys() == state_want.keys()
        for name in state_want:
            assert (state_got[name] - state_want[name]).abs().max().item() <= 1e-6


def test_output_file_is_not_overwritten_without_force(tmp_path):
    target = tmp_path / "cell.py"
    original = b"# precious\n\xe2\x8b\x86 not to be lost\n"
    target.write_bytes(original)
    refused = cellgen("compile", "convlstm", *SMALL, "-o", str(target))
    assert_user_error(refused, "already exists", "--force")
    assert target.read_bytes() == original
    assert os.listdir(tmp_path) == ["cell.py"]

    forced = cellgen("compile", "convlstm", *SMALL, "-o", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    assert target.read_text(encoding="utf-8").startswith("def forward")
    assert os.listdir(tmp_path) == ["cell.py"]


def test_output_into_a_missing_directory_is_a_user_error(tmp_path):
    assert_user_error(cellgen("compile", "convlstm", *SMALL, "-o", str(tmp_path / "no" / "cell.py")), "cannot write")


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    """In-process: a rename that fails removes the temp file and keeps the old file."""
    from cellgen import cli
    from cellgen.errors import CellgenError

    target = tmp_path / "out.txt"
    target.write_text("old", encoding="utf-8")

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli.os, "replace", failing_replace)
    with pytest.raises(CellgenError, match="No space left"):
        cli.write_atomically(target, "new", force=True)
    assert os.listdir(tmp_path) == ["out.txt"]
    assert target.read_text(encoding="utf-8") == "old"


# --- list ------------------------------------------------------------------------------------

def test_list_shows_the_shipped_specs():
    result = run("list")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert {"convlstm", "convlstm_peephole", "predrnn"} <= set(rows)
    assert rows["convlstm"].split()[1] == "ConvLSTM"
    assert '"Shi et al.' in rows["convlstm"]
    assert rows["convlstm"].split()[-3:] == ["in_channels", "hidden=64", "k=5"]
    assert rows["predrnn"].split()[1] == "STLSTM"


# --- start-up --------------------------------------------------------------------------------

def test_commands_that_compile_nothing_do_not_import_torch():
    """check, list, diff (text and json) and --version never need torch (it costs seconds to
    import): each runs in one fresh Python, which must not have imported it afterwards. Nor
    do --version and list need the graph (networkx, ~0.3 s), nor --version the parser (lark);
    list, check and diff do not import pydantic (the AST is plain dataclasses; pydantic
    checks training configs). They run first, so the modules are absent only if they did not
    import them."""
    script = textwrap.dedent("""\
        import sys
        import cellgen.cli
        for argv, unneeded in ((["--version"], ("torch", "networkx", "lark", "pydantic")),
                               (["list"], ("torch", "networkx", "pydantic")),
                               (["check", "convlstm", "-p", "in_channels=1"], ("torch", "pydantic")),
                               (["diff", "convlstm", "convlstm_peephole", "-p", "in_channels=1"],
                                ("torch", "pydantic")),
                               (["diff", "convlstm", "convlstm_peephole", "-p", "in_channels=1", "-f", "json"],
                                ("torch", "pydantic"))):
            try:
                status = cellgen.cli.main(argv)
            except SystemExit as stop:  # --version
                status = stop.code
            assert status in (0, 1), (argv, status)
            imported = [name for name in unneeded if name in sys.modules]
            assert not imported, (argv, imported)
        print("torch-free")
        """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("torch-free")


# --- what every command shares -----------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["compile", "convlstm", *SMALL],
    ["show", "convlstm", "-p", "in_channels=3", "-f", "dot"],
    ["diff", "convlstm", "convlstm_peephole", "-p", "in_channels=3"],
    ["diff", "convlstm", "convlstm_peephole", "-p", "in_channels=3", "-f", "json"],
], ids=["compile", "show", "diff", "diff-json"])
def test_every_output_file_is_written_whole_and_never_replaced_unasked(tmp_path, monkeypatch, command):
    """-o goes through one writer: synced to disk before it replaces anything, and only with --force."""
    from cellgen import files

    synced = []
    real_fsync = files.os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    target = tmp_path / "out"
    target.write_text("precious\n", encoding="utf-8")
    refused = cellgen(*command, "-o", target)
    assert refused.returncode in (1, 2) and "already exists; not overwriting it" in refused.stderr
    assert target.read_text(encoding="utf-8") == "precious\n" and not synced

    written = cellgen(*command, "-o", target, "--force")
    assert written.returncode in (0, 1), written.stderr  # diff: 1 = the cells differ
    assert written.stdout == "" and synced
    text = target.read_text(encoding="utf-8")
    assert text.endswith("\n") and text != "precious\n"
    assert os.listdir(tmp_path) == ["out"]


def test_warnings_reach_stderr_the_same_way_from_every_command(tmp_path):
    """check, compile and diff render a CellgenWarning with its source line, once each."""
    spec = tmp_path / "unused.cell"
    spec.write_text((ROOT / "specs" / "convlstm.cell").read_text(encoding="utf-8") + "  z = σ(h)\n",
                    encoding="utf-8")
    rendered = set()
    for command in (["check", spec, "-p", "in_channels=3"], ["compile", spec, *SMALL, "--emit", "summary"],
                    ["diff", spec, "convlstm", "-p", "in_channels=3"], ["show", spec, "-p", "in_channels=3",
                                                                         "-f", "dot"]):
        result = cellgen(*command)
        warning = [line for line in result.stderr.splitlines() if "warning:" in line]
        assert warning == [f"{spec}:20:3: warning: `z` is computed but never used"], (command, result.stderr)
        rendered.add(result.stderr[result.stderr.index(str(spec)):])
    assert len(rendered) == 1


def test_the_cli_knows_which_module_adds_each_command():
    """cellgen.cli imports a tool only for its own commands: its table must name them all."""
    from cellgen import cli

    cli.build_parser()  # every extension registered
    added = set(cli._SUBCOMMANDS) - cli._BUILT_IN
    assert added == {name for names in cli._EXTENSIONS.values() for name in names}
    assert cellgen("diff", "--help").stdout.startswith("usage: cellgen diff")
