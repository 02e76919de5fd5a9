"""The `cellgen` command: check, compile and list cell specs.

    cellgen check SPEC [--param NAME=VALUE]…
    cellgen compile SPEC [--param NAME=VALUE]… [-O LEVEL] [--emit code|summary|module]
                         [--size H W] [-o FILE] [--force] [--explain]
    cellgen list

SPEC is a path to a `.cell` file or the name of a shipped spec (`convlstm`). A user's mistake
(bad spec, bad --param, unknown name, unwritable -o) is printed as a rendered diagnostic on
stderr with exit status 1, never as a traceback; argparse's usage errors exit with 2. Warnings
(an unused gate, say) are rendered on stderr too, so stdout holds only what was asked for and
can be piped or redirected.

Tools add subcommands (`diff`, `show`, `bench`) through `register` (see `_EXTENSIONS` below).
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from cellgen import files
from cellgen.errors import CellgenError, CellgenWarning, ParamError


# --- the subcommand registry -----------------------------------------------------------------

@dataclass(frozen=True)
class Subcommand:
    """One `cellgen NAME …` command: `configure` adds its arguments, `run` returns the exit status."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_SUBCOMMANDS: dict[str, Subcommand] = {}

# Tool modules that add subcommands. Each defines `register_with_cli()`, which calls `register`
# below; they are imported when the parser is built (not at import time), so a tool may import
# this module without an import cycle.
_EXTENSIONS: tuple[str, ...] = ("cellgen.tools.diff", "cellgen.tools.render", "cellgen.tools.bench",
                                 "cellgen.training.commands")
_LOADED_EXTENSIONS: set[str] = set()


def _load_extensions() -> None:
    import importlib

    for name in _EXTENSIONS:
        if name not in _LOADED_EXTENSIONS:
            importlib.import_module(name).register_with_cli()
            _LOADED_EXTENSIONS.add(name)


def register(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None],
             run: Callable[[argparse.Namespace], int]) -> Subcommand:
    """Add `cellgen NAME`; a second registration of the same name is a programming error."""
    if name in _SUBCOMMANDS:
        raise ValueError(f"cellgen subcommand `{name}` is registered twice")
    _SUBCOMMANDS[name] = Subcommand(name, help, configure, run)
    return _SUBCOMMANDS[name]


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """SPEC and --param, shared by every command that compiles a spec."""
    parser.add_argument("spec", metavar="SPEC", help="a .cell file, or the name of a shipped spec (see `cellgen list`)")
    parser.add_argument("--param", "-p", dest="params", action="append", default=[], metavar="NAME=VALUE",
                        help="set one of the spec's params (repeatable), e.g. --param hidden=64")


def parse_params(items: Sequence[str]) -> dict[str, int]:
    """`["hidden=64", "k=3"]` → `{"hidden": 64, "k": 3}`; a malformed item is a ParamError.

    Checked here rather than left to the compiler so that the message can name the flag;
    whether the spec has such a param is the compiler's business (it knows the names).
    """
    params: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ParamError(f"--param expects NAME=VALUE, not `{item}`", hint="e.g. --param hidden=64")
        if not name.isidentifier():
            raise ParamError(f"--param {item}: `{name}` is not a param name", hint="e.g. --param hidden=64")
        try:
            number = int(value, 10)
        except ValueError:
            raise ParamError(f"--param {item}: the value of `{name}` must be a whole number, not `{value}`",
                             hint=f"e.g. --param {name}=64") from None
        if name in params:
            raise ParamError(f"--param {name} is given twice ({params[name]} and {number})")
        params[name] = number
    return params


# --- check -----------------------------------------------------------------------------------

def _configure_check(parser: argparse.ArgumentParser) -> None:
    add_spec_arguments(parser)


def _run_check(args: argparse.Namespace) -> int:
    from cellgen.api import lower_spec

    graph = lower_spec(args.spec, **parse_params(args.params))
    counts = ", ".join(_plural(len(things), word) for things, word in
                       ((graph.states, "state"), (graph.weights, "weight"), (graph.params, "param")))
    print(f"ok: {graph.name} ({counts})")
    return 0


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# --- compile ---------------------------------------------------------------------------------

def _configure_compile(parser: argparse.ArgumentParser) -> None:
    add_spec_arguments(parser)
    parser.add_argument("-O", dest="opt_level", type=int, choices=(0, 1, 2), default=2, metavar="LEVEL",
                        help="optimisation level 0, 1 or 2 (default 2)")
    parser.add_argument("--emit", choices=("code", "summary", "module"), default="code",
                        help="code: the generated forward (default); summary: weights, parameters and MACs per "
                             "gate; module: a standalone Python file that needs only torch")
    parser.add_argument("--size", type=int, nargs="+", default=None, metavar="N",
                        help="input size for the MACs of --emit summary: H W (T H W for a 3D cell); default 64 64")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="write to FILE (atomically) instead of stdout")
    parser.add_argument("--force", action="store_true", help="let -o replace an existing file")
    parser.add_argument("--explain", action="store_true", help="say on stderr what each optimisation pass did")


def _run_compile(args: argparse.Namespace) -> int:
    import cellgen
    from cellgen.passes import Report

    params = parse_params(args.params)
    if args.size is not None and args.emit != "summary":
        raise CellgenError("--size sets the input size for the MACs of `--emit summary`; it does nothing here")
    if args.output is not None:
        _check_writable(args.output, args.force)  # fail before compiling, not after
    report = Report() if args.explain else None
    if args.emit == "summary":  # counts only: allocate no weights (a summary of hidden=10**5 needs no memory)
        from types import SimpleNamespace

        from cellgen.passes import optimize

        graph = optimize(cellgen.lower_spec(args.spec, **params), args.opt_level, report=report)
        cell = SimpleNamespace(cell_graph=graph, opt_level=args.opt_level)
    else:
        cell = cellgen.compile(args.spec, opt_level=args.opt_level, report=report, **params)
    text = _EMITTERS[args.emit](args, cell, params)
    if args.output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomically(args.output, text, force=args.force)
    if report is not None:
        print(report.render(), file=sys.stderr)
    return 0


def _emit_code(args, cell, params) -> str:
    return cell.code.lstrip("\n").rstrip() + "\n"


def _emit_module(args, cell, params) -> str:
    from cellgen.api import load_spec
    from cellgen.codegen.standalone import standalone_source

    return standalone_source(cell, load_spec(args.spec).origin)


def _emit_summary(args, cell, params) -> str:
    from cellgen.api import lower_spec
    from cellgen.tools import stats

    graph = lower_spec(args.spec, **params)  # the spec's own graph: weights and gates as written
    summary = stats.summarize(graph, args.size)  # --size H W (T H W for 3D); default 64x64
    return stats.format_summary(summary, optimized_convs=stats.conv_count(cell.cell_graph),
                                opt_level=cell.opt_level)


_EMITTERS = {"code": _emit_code, "summary": _emit_summary, "module": _emit_module}


def _align(table: list[list[str]], right: set[int]) -> list[str]:
    """Rows of cells as lines of padded columns; columns in `right` are right-aligned."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            .rstrip() for row in table]


# --- writing -o FILE -------------------------------------------------------------------------

def _check_writable(path: Path, force: bool) -> Path:
    """The file to write for `path`: see cellgen/targets.py (no device, FIFO or directory, ever)."""
    from cellgen.targets import check_target

    return check_target(path, force)


def write_atomically(path: Path, text: str, *, force: bool = False) -> None:
    """Write `text` to `path` so that a reader sees the old file or the new one, never half of one
    (see cellgen/files.py); an existing file is replaced only with `force`, and the new file gets
    the usual permissions (umask), or those of the file it replaces."""
    path = _check_writable(Path(path), force)
    files.write_atomically(path, lambda handle: handle.write(text.encode("utf-8")), mode=_mode_for(path))


def _mode_for(path: Path) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


# --- list ------------------------------------------------------------------------------------

def _configure_list(parser: argparse.ArgumentParser) -> None:
    pass


def _run_list(args: argparse.Namespace) -> int:
    """One line per shipped spec: name, cell name, citation, params (with defaults)."""
    from cellgen.api import load_spec
    from cellgen.resources import shipped_specs

    rows, status = [], 0
    for name in shipped_specs():
        try:
            spec = load_spec(name).resolved
        except CellgenError as error:  # one broken spec should not hide the others
            print(error.render(), file=sys.stderr)
            status = 1
            continue
        params = " ".join(f"{p.name}=none" if p.nullable and p.default is None else
                          p.name if p.default is None else f"{p.name}={p.default}" for p in spec.params)
        rows.append([name, spec.name, f'"{spec.citation}"' if spec.citation else "-", params or "-"])
    if rows:
        print("\n".join(_align(rows, right=set())))
    return status


register("check", "parse and validate a spec; print a one-line summary", _configure_check, _run_check)
register("compile", "compile a spec: print its forward code, a summary, or a standalone module",
         _configure_compile, _run_compile)
register("list", "list the shipped specs", _configure_list, _run_list)


# --- main ------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    _load_extensions()
    parser = argparse.ArgumentParser(prog="cellgen", description="Compile recurrent-cell gate equations to "
                                     "torch.fx modules.")
    from cellgen import __version__

    parser.add_argument("--version", action="version", version=f"cellgen {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for sub in _SUBCOMMANDS.values():
        sub_parser = commands.add_parser(sub.name, help=sub.help, description=sub.help)
        sub.configure(sub_parser)
        sub_parser.set_defaults(run=sub.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one cellgen command; returns the exit status (0 ok, 1 user error, 2 usage error)."""
    args = build_parser().parse_args(argv)
    if sys.stdout is None:  # started with stdout closed (`cellgen list >&-`): what it prints would vanish
        print("error: standard output is closed; nothing can be printed", file=sys.stderr)
        return 1
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                status = args.run(args)
                sys.stdout.flush()  # here, not at exit, so that a full disk is an error we report
                return status
            finally:
                _print_warnings(caught)
    except CellgenError as error:
        print(error.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM as cellgen/training/signals.py raises it
        return 128 + getattr(error, "signum", 2)
    except BrokenPipeError:
        # The reader went away (`cellgen compile … | head`): stop quietly, and keep Python
        # from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:
        if not _is_stdout_failure(error):
            raise
        print(f"error: cannot write to standard output: {error.strerror}", file=sys.stderr)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _is_stdout_failure(error: OSError) -> bool:
    """A write to stdout failed (`cellgen list > /dev/full`: ENOSPC; a closed descriptor: EBADF)."""
    import errno

    return error.errno in (errno.ENOSPC, errno.EBADF, errno.EIO, errno.EPIPE) and error.filename is None


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Each distinct warning once: a spec compiled twice (e.g. for --emit summary) warns twice."""
    seen = set()
    for record in caught:
        message = record.message
        text = (message.diagnostic.render() if isinstance(message, CellgenWarning)
                else f"warning: {record.category.__name__}: {message}")
        if text not in seen:
            seen.add(text)
            print(text, file=sys.stderr)
