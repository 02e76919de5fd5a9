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
from cellgen.table import align


# --- the subcommand registry -----------------------------------------------------------------

@dataclass(frozen=True)
class Subcommand:
    """One `cellgen NAME …` command: `configure` adds its arguments, `run` returns the exit status."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_SUBCOMMANDS: dict[str, Subcommand] = {}

# Tool modules that add subcommands, and the commands each adds. Each module defines
# `register_with_cli()`, which calls `register` below. A module is imported only when one of its
# commands runs (or when every command must be listed: `cellgen --help`, a usage error), never
# at import time: so a tool may import this module without an import cycle, and `cellgen check`
# does not pay for bench's torch.
_EXTENSIONS: dict[str, tuple[str, ...]] = {"cellgen.tools.diff": ("diff",), "cellgen.tools.show": ("show",),
                                           "cellgen.tools.bench": ("bench",),
                                           "cellgen.training.commands": ("train", "eval", "export"),
                                           "cellgen.tools.fmt": ("fmt",)}
_LOADED_EXTENSIONS: set[str] = set()


def _load_extensions(command: Optional[str] = None) -> None:
    """Import the extension that adds `command`; with no command (or one no extension adds but
    that is not built in either), import them all."""
    import importlib

    owners = [m for m, names in _EXTENSIONS.items() if command in names]
    if not owners and (command in _BUILT_IN or command == "--version"):
        return
    for name in owners or _EXTENSIONS:
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
    add_param_argument(parser)


def add_param_argument(parser: argparse.ArgumentParser,
                       help: str = "set one of the spec's params (repeatable), e.g. --param hidden=64") -> None:
    """`--param/-p NAME=VALUE` (repeatable), for every command that takes one: `args.params` is
    the list as given, which `parse_params` turns into values (or a clear ParamError)."""
    parser.add_argument("--param", "-p", dest="params", action="append", default=[], metavar="NAME=VALUE", help=help)


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


# --- writing -o FILE -------------------------------------------------------------------------

_check_writable = files.check_writable  # (path, force): fail before the work, not after it


def write_atomically(path: Path, text: str, *, force: bool = False) -> None:
    """`-o FILE` of any command: see cellgen/files.py `write_output_file`."""
    files.write_output_file(path, text, force=force)


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
        print("\n".join(align(rows)))
    return status


register("check", "parse and validate a spec; print a one-line summary", _configure_check, _run_check)
register("compile", "compile a spec: print its forward code, a summary, or a standalone module",
         _configure_compile, _run_compile)
register("list", "list the shipped specs", _configure_list, _run_list)
_BUILT_IN = frozenset(_SUBCOMMANDS)


# --- main ------------------------------------------------------------------------------------

def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The parser of every command, or (given the arguments to parse) of the one they name."""
    _load_extensions(_command_of(argv) if argv is not None else None)
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


def _command_of(argv: Sequence[str]) -> Optional[str]:
    """The command `argv` names (its first word that is not an option), `--version` when that
    comes first (it needs no command), else None."""
    for word in argv:
        if word == "--version":
            return word
        if not word.startswith("-"):
            return word
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one cellgen command; returns the exit status (0 ok, 1 user error, 2 usage error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    if sys.stdout is None:  # started with stdout closed (`cellgen list >&-`): what it prints would vanish
        print("error: standard output is closed; nothing can be printed", file=sys.stderr)
        return 1
    try:
        status = run_reporting_warnings(args.run, args)
        sys.stdout.flush()  # here, not at exit, so that a full disk is an error we report
        return status
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


def run_reporting_warnings(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """`run(args)`, with every warning it raised rendered on stderr once it is done (or has
    failed): the one path by which a CellgenWarning (an unused gate…) reaches the user, for
    every command and for the `*_main` functions of the tools."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return run(args)
        finally:
            _print_warnings(caught)


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
