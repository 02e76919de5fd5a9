"""`cellgen train --config run.toml`: every option of the command in a TOML file.

A key is an option's name with `_` or `-` (`batch_size`, `lr-schedule`), a value what the
flag takes (`steps = 200`, `lr = 1e-3`, `quiet = true`, `out = "runs/convlstm"`); the spec's
params are a table, and the spec itself may be named too:

    spec = "convlstm"
    steps = 300
    out = "runs/convlstm"
    lr_schedule = "cosine"
    clip_grad = 1.0

    [params]
    hidden = 32
    k = 3

A flag given on the command line wins over the file, and the file over the defaults. The
resolved configuration, the value every option ended up with (run-specific ones such as
--resume and --force left out), is saved with the run as DIR/config.toml, so that
`cellgen train --config DIR/config.toml --out OTHER` repeats the run.

This works for any option `cellgen train` has, including ones added later: `defer_defaults`
runs after the parser is complete and replaces each option's default with a marker, so that
"given on the command line" can be told from "left at its default"; `apply_config` then fills
each option from the file, else from its real default. Python 3.11's tomllib reads the file
(3.10: the tomli package); `dump_toml` writes the small subset a config needs.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from cellgen.errors import CellgenError

CONFIG_FILE = "config.toml"
# The first line of every config.toml `cellgen train` writes: it tells the run's own file from
# one a user put there, so a run stopped before its first checkpoint can be started afresh
# without --force, while a user's file is never replaced unasked.
CONFIG_HEADER = "# cellgen train: every option of the run in this directory; `--config` it to repeat the run"
NOT_SAVED = ("config", "resume", "force", "run", "command")   # per invocation, not part of a run's config


class _NotGiven:
    def __repr__(self) -> str:
        return "<not given>"


NOT_GIVEN = _NotGiven()


def defer_defaults(parser: argparse.ArgumentParser, required: tuple[str, ...] = ()) -> None:
    """Make every option's default NOT_GIVEN (remembering the real ones) and `required` names
    optional on the command line, to be checked after the config file is applied."""
    options = {}
    for action in parser._actions:  # argparse keeps no public list of its actions
        if action.dest in (argparse.SUPPRESS, "help") or isinstance(action, argparse._HelpAction):
            continue
        options[action.dest] = action
        action.__dict__.setdefault("real_default", action.default)
        # argparse copies an append action's default before appending to it: None there
        action.default = None if isinstance(action, argparse._AppendAction) else NOT_GIVEN
        if action.dest in required:
            action.required = False
        if not action.option_strings and action.nargs is None:
            action.nargs = "?"      # the positional SPEC may come from the file
    parser.set_defaults(_config_options=options, _config_required=required)


def read_config(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise CellgenError("--config needs Python 3.11 or the tomli package", hint="pip install tomli") from None
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise CellgenError(f"no such config file: {path}") from None
    except OSError as error:
        raise CellgenError(f"cannot read {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise CellgenError(f"{path} is not valid TOML: {error}") from None


def apply_config(args: argparse.Namespace) -> dict:
    """Fill every option not given on the command line from `args.config` (if any), else from
    its default; returns the options the file set (for messages)."""
    options: dict[str, argparse.Action] = args._config_options
    from_file = {}
    if getattr(args, "config", NOT_GIVEN) not in (NOT_GIVEN, None):
        path = Path(args.config)
        for key, value in read_config(path).items():
            dest = key.replace("-", "_")
            if dest == "param":
                dest = "params"
            if dest not in options or dest in ("config", "help"):
                from cellgen.errors import did_you_mean

                names = [d for d in options if d not in ("config",)]
                raise CellgenError(f"{path}: `{key}` is not an option of `cellgen train`",
                                   hint=did_you_mean(dest, names) or f"options: {', '.join(sorted(names))}")
            from_file[dest] = _convert(options[dest], value, path, key)
    for dest, action in options.items():
        value = getattr(args, dest, NOT_GIVEN)
        if value is NOT_GIVEN or (value is None and isinstance(action, argparse._AppendAction)):
            setattr(args, dest, from_file.get(dest, action.real_default))
    for dest in args._config_required:
        if getattr(args, dest) is None:
            action = options[dest]
            flag = action.option_strings[-1] if action.option_strings else dest.upper()
            raise CellgenError(f"`cellgen train` needs {flag}: on the command line, or as `{dest}` in --config")
    return from_file


def _convert(action: argparse.Action, value: Any, path: Path, key: str):
    """A TOML value as the parsed command-line value of `action`, checked as argparse would."""
    where = f"{path}: `{key}`"
    if action.dest == "params":
        if isinstance(value, dict):
            items = []
            for name, number in value.items():
                if not isinstance(number, int) or isinstance(number, bool):
                    raise CellgenError(f"{where}: the value of param `{name}` must be a whole number, not {number!r}")
                items.append(f"{name}={number}")
            return items
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise CellgenError(f"{where} must be a table of params (`[params]` then `hidden = 32`)")
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)):
        if isinstance(action, argparse._StoreConstAction) and not isinstance(action.const, bool):
            if value != action.const and not (isinstance(value, bool) and value):
                raise CellgenError(f"{where} must be {action.const!r}")
            return action.const
        if not isinstance(value, bool):
            raise CellgenError(f"{where} must be true or false, not {value!r}")
        return value if not isinstance(action, argparse._StoreFalseAction) else not value
    repeatable = isinstance(action, argparse._AppendAction)   # e.g. --between 0:ghu: a list in the file
    if isinstance(value, dict) or (isinstance(value, list) and not repeatable and action.nargs in (None, "?")):
        raise CellgenError(f"{where} must be a single value, not {type(value).__name__}")
    values = value if isinstance(value, list) else [value]
    converted = []
    for item in values:
        if isinstance(item, bool):
            raise CellgenError(f"{where} must be a {_kind(action)}, not {str(item).lower()}")
        convert = action.type or str
        if action.type is int and not isinstance(item, int):
            raise CellgenError(f"{where} must be a whole number, not {item!r}")
        if action.type is float and not isinstance(item, (int, float)):
            raise CellgenError(f"{where} must be a number, not {item!r}")
        try:
            item = convert(item if action.type in (int, float) else str(item))
        except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
            raise CellgenError(f"{where}: {error}") from None
        if action.choices is not None and item not in action.choices:
            raise CellgenError(f"{where} must be one of {', '.join(map(str, action.choices))}, not {item!r}")
        converted.append(item)
    return converted if isinstance(value, list) or repeatable else converted[0]


def _kind(action: argparse.Action) -> str:
    return {int: "whole number", float: "number"}.get(action.type, "string")


def resolved_config(args: argparse.Namespace, effective: dict) -> dict:
    """The value every saved option ended up with: the command line or file, else `effective`
    (what the run actually uses for options left at None, e.g. TrainConfig's defaults)."""
    out = {}
    for dest in args._config_options:
        if dest in NOT_SAVED:
            continue
        value = getattr(args, dest)
        if value is None:
            value = effective.get(dest)
        if dest == "params":
            from cellgen.cli import parse_params

            value = parse_params(value or [])
        if isinstance(value, Path):
            value = str(value)
        if value is not None:
            out[dest] = value
    return out


def dump_toml(config: dict) -> str:
    """TOML for a flat dict of strings, numbers, booleans and lists, plus tables (dicts) last."""
    lines = [f"{key} = {_value(value)}" for key, value in config.items() if not isinstance(value, dict)]
    for key, table in config.items():
        if isinstance(table, dict):
            lines += ["", f"[{key}]"] + [f"{name} = {_value(value)}" for name, value in table.items()]
    return "\n".join(lines) + "\n"


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)   # JSON's escapes are TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")
