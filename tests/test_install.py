"""A real, non-editable `pip install` works: code, grammar and specs all land in site-packages.

An editable install (what developers and CI use) reads grammars/ and specs/ straight from
the checkout, so it cannot show that they ship in a wheel; this test installs a copy of the
repository into a fresh venv and runs the installed `cellgen` from elsewhere.

No network: `--no-deps --no-build-isolation` builds with the setuptools this Python already
has, and the venv sees the running interpreter's packages (torch, lark, …) so nothing is
downloaded.
"""
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Never copied: VCS data, environments and build leftovers (a stale build/ can leak deleted
# modules into a wheel).
_SKIP = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                               ".pytest_cache", ".hypothesis", ".benchmarks", "out")


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _make_venv(path: Path) -> Path:
    """A venv that reuses this interpreter's packages, and returns its python.

    `--system-site-packages` covers a plain interpreter; when the tests themselves run in a
    venv (CI's .venv), its site-packages are not "system" ones, so a .pth file adds them.
    Plain path lines in a .pth do not run the .pth files found there, so an editable cellgen
    of the outer environment stays invisible and the venv's own install is the one imported.
    """
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", path])
    python = path / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    if sys.prefix != sys.base_prefix:
        outer = [p for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]] if os.path.isdir(p)]
        (purelib / "_outer_site_packages.pth").write_text("\n".join(dict.fromkeys(outer)) + "\n", encoding="utf-8")
    return python


@pytest.mark.slow
def test_pip_install_ships_grammar_and_specs(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=_SKIP)
    python = _make_venv(tmp_path / "venv")
    tools = _run([python, "-c", "import setuptools, pip; print(setuptools.__version__)"]).stdout.strip()
    assert int(tools.split(".")[0]) >= 68, f"setuptools {tools} is too old to build cellgen (needs >= 68)"

    _run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-input", source])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    cellgen = tmp_path / "venv" / "bin" / "cellgen"
    compiled = _run([cellgen, "compile", "convlstm", "--param", "in_channels=3"], cwd=elsewhere, env=env)
    assert "def forward" in compiled.stdout and "c_next" in compiled.stdout

    where = _run([python, "-c", "import cellgen, cellgen.resources as r; print(cellgen.__file__); "
                  "print(r.specs_dir()); print(r.grammar_path())"], cwd=elsewhere, env=env).stdout.split("\n")
    package, specs, grammar = (Path(line) for line in where[:3])
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    assert package.parent.parent == purelib, package  # the installed copy, not the checkout
    assert specs == purelib / "cellgen" / "specs" and specs.is_relative_to(tmp_path / "venv")
    assert sorted(p.name for p in specs.glob("*.cell")) == sorted(p.name for p in (ROOT / "specs").glob("*.cell"))
    assert grammar == purelib / "cellgen" / "grammars" / "cell.lark" and grammar.is_file()

    # Every subpackage of the checkout made it into the wheel (pyproject lists them by hand).
    wanted = {p.parent.relative_to(ROOT) for p in (ROOT / "cellgen").rglob("__init__.py")}
    missing = [str(p) for p in wanted if not (purelib / p / "__init__.py").is_file()]
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_ci_runs_the_readme_test_command():
    """.ci/run must be the README's test command, so that what CI proves is what a reader runs."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    commands = [line for line in readme if line.startswith("python3 -m venv .venv")]
    assert len(commands) == 2, "the README opens with two commands: the main job and the tests"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[1] in ci
    assert commands[1].endswith("python -m pytest -n auto --dist worksteal") and "'.[test]'" in commands[1]
    # -n is pytest-xdist's option: the extra that command installs must bring it
    import tomllib

    test_extra = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"]["test"]
    assert any(requirement.startswith("pytest-xdist") for requirement in test_extra), test_extra


def _installs_pypi_cellgen(line: str) -> bool:
    """Whether a shell line runs `pip install` with PyPI's `cellgen` (bare, or with extras)."""
    import re

    for command in re.split(r"&&|\|\||[;|()`]", line):
        words = command.split()
        if "install" in words and any(w.endswith("pip") for w in words[:words.index("install")]):
            if any(re.fullmatch(r"cellgen(\[[\w,]+\])?", w.strip("'\"")) for w in words[words.index("install") + 1:]):
                return True
    return False


def test_no_doc_installs_cellgen_from_the_index_by_its_bare_name():
    """PyPI's `cellgen` is an unrelated project: the docs install this one from a checkout."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not _installs_pypi_cellgen(line), f"{path.name}:{number} installs PyPI's cellgen: {line.strip()}"
    assert _installs_pypi_cellgen("pip install 'cellgen[export]' && cellgen export")
    assert _installs_pypi_cellgen("x && python -m pip install -U cellgen")
    assert not _installs_pypi_cellgen("pip install -e '.[export]'") and not _installs_pypi_cellgen("pip install cellgen-stl")
