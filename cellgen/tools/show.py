"""`cellgen show SPEC [--format svg|png|dot] [-O LEVEL] [-o FILE]`: draw one cell's graph.

The picture itself is render.py's (graph → DOT, `dot` for SVG and PNG); this is the command.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from cellgen.errors import CellgenError
from cellgen.tools.render import emit, graph_dot, picture_title


# --- the command -----------------------------------------------------------------------------------------

def configure_show(parser: argparse.ArgumentParser) -> None:
    """The arguments of `cellgen show`."""
    from cellgen.cli import add_spec_arguments

    add_spec_arguments(parser)
    parser.add_argument("--format", "-f", choices=("svg", "png", "dot"), default="svg",
                        help="svg (default) or png (need Graphviz), or dot (the Graphviz source)")
    parser.add_argument("-O", dest="opt_level", type=int, choices=(0, 1, 2), default=0, metavar="LEVEL",
                        help="draw the graph after optimisation level 0 (default: as written), 1 or 2 (fused convs)")
    parser.add_argument("-o", "--output", default=None, metavar="FILE", help="write to FILE instead of stdout")
    parser.add_argument("--force", action="store_true", help="let -o replace an existing file")


def run_show(args: argparse.Namespace) -> int:
    """Draw one cell; 0 on success, 1 (with a message) on an error, like the other commands."""
    from cellgen.api import load_spec
    from cellgen.cli import parse_params
    from cellgen.ir.lower import lower
    from cellgen.passes import optimize

    try:
        loaded = load_spec(args.spec)
        graph = lower(loaded.resolved, parse_params(args.params))
        if args.opt_level:
            graph = optimize(graph, args.opt_level)
        emit(graph_dot(graph, picture_title(graph, loaded.origin, args.opt_level)), args.format, args.output,
             force=args.force)
    except CellgenError as error:
        print(error.render(), file=sys.stderr)
        return 1
    return 0


def show_main(argv: Optional[Sequence[str]] = None) -> int:
    """`cellgen show SPEC …` as a function: parses `argv`, writes the picture, returns the exit status."""
    from cellgen.cli import run_reporting_warnings

    parser = argparse.ArgumentParser(prog="cellgen show", description="draw a cell's graph")
    configure_show(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return int(stop.code or 0)
    return run_reporting_warnings(run_show, args)


HELP = "draw a cell's graph (svg, png or Graphviz dot); -O 2 shows the fused convs"


def register_with_cli():
    """Add `cellgen show` to cellgen.cli's subcommand registry; call once (as for bench)."""
    from cellgen.cli import register

    return register("show", HELP, configure_show, run_show)
