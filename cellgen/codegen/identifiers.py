"""Spec names as Python names in generated code.

A spec may name an input `lambda`, `class`, `state` or `torch`, or a cell `Cx²`: the language
is not Python, and a paper's λ gate spelt out is a fair name. Such a name is kept in the spec
(messages, state_dict keys and state keys quote it as written) and only *mangled* where it
becomes a Python identifier of the generated code: a forward argument, the standalone file's
class. Mangling rather than refusing, because the name is legal in the language and harmful
only to the code we write; the mangled name is the spec name plus `_`, so it still reads as
the spec's.

Names the generated forward itself relies on (`self`, `state`, `torch`, the helpers of a
standalone file) are reserved: an argument named `torch` would shadow the module inside
the forward.
"""
from __future__ import annotations

import builtins
import keyword
import re
import unicodedata

# Globals and arguments of generated forward code (fx's and the standalone file's).
RESERVED = frozenset({"self", "state", "torch", "F", "math", "groupby", "inf", "nan", "fx_pytree", "pytree",
                      "device", "NoneType", "initial_state", "register_dotted", "init_weight_"})


def identifier(name: str, fallback: str = "value") -> str:
    """`name` as a valid Python identifier: characters Python does not allow in one (`²`, `'`,
    `.`) become `_`, a leading digit gets a `_` in front."""
    name = unicodedata.normalize("NFKC", name)  # what Python itself does to an identifier
    out = "".join(ch if ("_" + ch).isidentifier() else "_" for ch in name)
    out = re.sub(r"_+", "_", out).strip("_") if out.strip("_") else ""
    if not out:
        return fallback
    if not out.isidentifier():  # starts with a digit
        out = "_" + out
    return out


def argument_name(name: str) -> str:
    """A forward argument for spec input `name`: an identifier that is no keyword, builtin or
    name the generated code uses (`lambda` → `lambda_`, `state` → `state_`)."""
    out = identifier(name, "input")
    while keyword.iskeyword(out) or keyword.issoftkeyword(out) or out in RESERVED or hasattr(builtins, out):
        out += "_"
    return out


def argument_names(names) -> dict[str, str]:
    """`argument_name` of each spec input, made distinct (`x²` and `x2` are both `x2` otherwise)."""
    out: dict[str, str] = {}
    for name in names:
        candidate = argument_name(name)
        while candidate in out.values():
            candidate += "_"
        out[name] = candidate
    return out


def class_name(name: str) -> str:
    """The class of a standalone file for cell `name` (`Cx²` → `Cx_`)."""
    out = identifier(name, "Cell")
    while keyword.iskeyword(out) or out in RESERVED or hasattr(builtins, out):
        out += "_"
    return out
