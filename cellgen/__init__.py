"""cellgen: recurrent cells of spatiotemporal deep learning, written as their papers' equations.

    import cellgen
    cell = cellgen.compile("convlstm", in_channels=3, hidden=64, k=5)
    h, state = cell(x, None)          # one time step; state = {"h": …, "c": …}
"""
from cellgen.api import compile, compile_stack, load_spec, lower_spec
from cellgen.codegen.module import CellModule
from cellgen.errors import CellgenError, CellgenWarning
from cellgen.openstl import load_openstl
from cellgen.runtime.stack import CellStack

__version__ = "0.1.0"
__all__ = ["compile", "compile_stack", "load_spec", "lower_spec", "CellModule", "CellStack", "CellgenError",
           "CellgenWarning", "load_openstl", "__version__"]
