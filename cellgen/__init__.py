"""cellgen: recurrent cells of spatiotemporal deep learning, written as their papers' equations.

    import cellgen
    cell = cellgen.compile("convlstm", in_channels=3, hidden=64, k=5)
    h, state = cell(x, None)          # one time step; state = {"h": …, "c": …}
"""
from cellgen.errors import CellgenError, CellgenWarning

__version__ = "0.1.0"
__all__ = ["compile", "compile_stack", "load_spec", "lower_spec", "CellModule", "CellStack", "CellgenError",
           "CellgenWarning", "load_openstl", "__version__"]

# Imported on first use, not with the package: `cellgen check`, `list` and `--version` never
# need torch, and importing it costs seconds (PEP 562 module __getattr__).
_LAZY = {"compile": "cellgen.api", "compile_stack": "cellgen.api", "load_spec": "cellgen.api",
         "lower_spec": "cellgen.api", "CellModule": "cellgen.codegen.module", "CellStack": "cellgen.runtime.stack",
         "load_openstl": "cellgen.openstl"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cellgen' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
