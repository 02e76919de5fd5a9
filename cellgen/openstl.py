"""Load OpenSTL checkpoints into compiled cellgen cells and sequence models.

    cell = cellgen.compile("predrnn_openstl_ln", in_channels=16, hidden=64, k=5, height=16, width=16)
    cellgen.load_openstl(cell, spatiotemporal_lstm_cell.state_dict())   # one SpatioTemporalLSTMCell
    cellgen.load_openstl(model, torch.load("checkpoint.pth"))          # a whole PredRNN_Model

OpenSTL (chengtan9907/OpenSTL) keeps each operand's gates in ONE conv (`conv_x.0.weight`, its
LayerNorm in `conv_x.1`) cut by `torch.split` in an order of its own per cell. A *layout*
below says, for one OpenSTL module and the cellgen specs that compute it, where every
tensor of its state_dict goes: whole into one cellgen parameter (the `*_openstl` specs
unpack their fused convs in OpenSTL's chunk order, so `conv_x.0.weight` is `W_x` as it is),
or cut into equal chunks along the output channels (the paper-style `predrnn` and
`convlstm` specs, one weight per gate). Keys OpenSTL declares and its forward never reads
(`conv_o` of ConvLSTMCell and CausalLSTMCell, `conv_last` of ConvLSTMCell and MIMN) are
accepted and ignored; biases a paper-style spec has and OpenSTL lacks are set to zero.

A cell is matched to a layout by its parameter names; then every key of the state_dict must
be known, every one the layout needs present, and every shape fit, or a CellgenError says
which and, where it can tell, which spec or param would fit (docs/openstl.md).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Optional, Union

from cellgen.errors import CellgenError

if TYPE_CHECKING:                 # torch is imported where a checkpoint is loaded: `import cellgen` stays light
    import torch


@dataclass(frozen=True)
class Chunk:
    """Piece `index` of `count` equal pieces of an OpenSTL tensor along dim 0."""

    param: str
    index: int
    count: int


Target = Union[str, Chunk]


@dataclass(frozen=True)
class Layout:
    module: str                                   # the OpenSTL class (or classes)
    specs: tuple[str, ...]                        # the cellgen specs it fits
    keys: dict[str, tuple[Target, ...]]           # OpenSTL key → where it goes
    unused: frozenset[str] = frozenset()          # declared by OpenSTL, never read by its forward
    zeros: tuple[str, ...] = ()                   # cellgen params OpenSTL does not have (set to 0)
    extra_model_keys: frozenset[str] = field(default_factory=frozenset)  # model-level keys to ignore

    @property
    def params(self) -> frozenset[str]:
        names = {t if isinstance(t, str) else t.param for targets in self.keys.values() for t in targets}
        return frozenset(names | set(self.zeros))


def _conv(key: str, symbol: str, norm: Optional[str] = None) -> dict[str, tuple[Target, ...]]:
    """`key.0.weight` → `symbol`, and with a norm `key.1.weight/bias` → `norm.weight/bias`."""
    entries: dict[str, tuple[Target, ...]] = {f"{key}.0.weight": (symbol,)}
    if norm:
        entries[f"{key}.1.weight"] = (f"{norm}.weight",)
        entries[f"{key}.1.bias"] = (f"{norm}.bias",)
    return entries


def _fused(spec: dict[str, str], ln: bool) -> dict[str, tuple[Target, ...]]:
    """OpenSTL conv name → cellgen symbol `W_s` (norm `LN_s`), for the `*_openstl` specs."""
    out: dict[str, tuple[Target, ...]] = {}
    for key, symbol in spec.items():
        out.update(_conv(key, symbol, "LN_" + symbol[2:] if ln else None))
    return out


def _split(key: str, symbols: tuple[str, ...]) -> dict[str, tuple[Target, ...]]:
    """`key.0.weight` cut into one cellgen weight per gate, in OpenSTL's chunk order."""
    return {f"{key}.0.weight": tuple(Chunk(s, i, len(symbols)) for i, s in enumerate(symbols))}


def _e3d_convs(ln: bool) -> dict[str, tuple[Target, ...]]:
    """Eidetic3DLSTMCell's `conv_s.0.conv3d.weight` → `W_s` (norm `conv_s.1` → `LN_s`)."""
    out: dict[str, tuple[Target, ...]] = {}
    for name in ("x", "h", "gm", "new_cell", "new_gm"):
        out[f"conv_{name}.0.conv3d.weight"] = (f"W_{name}",)
        if ln:
            out[f"conv_{name}.1.weight"] = (f"LN_{name}.weight",)
            out[f"conv_{name}.1.bias"] = (f"LN_{name}.bias",)
    return out


def _norm_keys(key: str) -> frozenset[str]:
    return frozenset({f"{key}.0.weight", f"{key}.1.weight", f"{key}.1.bias"})


def _layouts() -> list[Layout]:
    layouts: list[Layout] = []
    for ln in (False, True):
        suffix = "_ln" if ln else ""
        # ConvLSTMCell: conv_x, conv_h (i, f, g, o); conv_o and conv_last unused
        layouts.append(Layout(
            "ConvLSTMCell", (f"convlstm_openstl{suffix}",),
            _fused({"conv_x": "W_x", "conv_h": "W_h"}, ln),
            unused=_norm_keys("conv_o") | {"conv_last.weight"}))
        # SpatioTemporalLSTMCell(v2): conv_x (i, f, g, i', f', g', o), conv_h (i, f, g, o), conv_m (i', f', g')
        layouts.append(Layout(
            "SpatioTemporalLSTMCell / SpatioTemporalLSTMCellv2",
            (f"predrnn_openstl{suffix}", f"predrnnv2{suffix}"),
            {**_fused({"conv_x": "W_x", "conv_h": "W_h", "conv_m": "W_m", "conv_o": "W_o"}, ln),
             "conv_last.weight": ("W_last",)},
            extra_model_keys=frozenset({"adapter.weight"})))     # PredRNN-V2's decoupling-loss adapter (loaded by load_model)
        # CausalLSTMCell: conv_o unused
        layouts.append(Layout(
            "CausalLSTMCell", (f"predrnnpp{suffix}",),
            {**_fused({"conv_x": "W_x", "conv_h": "W_h", "conv_c": "W_c", "conv_m": "W_m",
                       "conv_c2m": "W_c2m", "conv_om": "W_om"}, ln),
             "conv_last.weight": ("W_last",)},
            unused=_norm_keys("conv_o")))
        # MIMN: conv_last unused
        layouts.append(Layout(
            "MIMN", (f"mimn{suffix}",),
            {**_fused({"conv_x_concat": "W_x", "conv_h_concat": "W_h"}, ln),
             "ct_weight": ("W_ct",), "oc_weight": ("W_oc",)},
            unused=frozenset({"conv_last.weight"})))
        # MIMBlock
        layouts.append(Layout(
            "MIMBlock", (f"mim{suffix}",),
            {**_fused({n: "W_" + n[len("conv_"):] for n in
                       ("conv_t_cc", "conv_s_cc", "conv_x_cc", "conv_h_concat", "conv_x_concat")}, ln),
             "ct_weight": ("W_ct",), "oc_weight": ("W_oc",), "conv_last.weight": ("W_last",)}))
        # Eidetic3DLSTMCell: tf_Conv3d keeps its Conv3d as `.conv3d`; _norm_c_t always on
        layouts.append(Layout(
            "Eidetic3DLSTMCell", (f"e3d_lstm_openstl{suffix}",),
            {**_e3d_convs(ln), "conv_last.conv3d.weight": ("W_last",),
             "_norm_c_t.weight": ("LN_c_t.weight",), "_norm_c_t.bias": ("LN_c_t.bias",)}))
    # MAUCell: every conv with a bias and a LayerNorm (no layer_norm switch)
    mau: dict[str, tuple[Target, ...]] = {}
    for name in ("t", "t_next", "s", "s_next"):
        mau.update(_conv(f"conv_{name}", f"W_{name}", f"LN_{name}"))
        mau[f"conv_{name}.0.bias"] = (f"b_{name}",)
    layouts.append(Layout("MAUCell", ("mau",), mau))
    # GHU (layer_norm=1 cannot run in OpenSTL)
    layouts.append(Layout("GHU", ("ghu",), {"x_concat.0.weight": ("W_x",), "z_concat.0.weight": ("W_z",)}))
    # the paper-style specs, one weight per gate: OpenSTL's fused convs cut in its chunk order
    layouts.append(Layout(
        "SpatioTemporalLSTMCell / SpatioTemporalLSTMCellv2 (layer_norm=0)", ("predrnn",),
        {**_split("conv_x", ("W_xi", "W_xf", "W_xg", "W_xi_m", "W_xf_m", "W_xg_m", "W_xo")),
         **_split("conv_h", ("W_hi", "W_hf", "W_hg", "W_ho")),
         **_split("conv_m", ("W_mi", "W_mf", "W_mg")),
         "conv_o.0.weight": ("W_o",), "conv_last.weight": ("W_1x1",)},
        extra_model_keys=frozenset({"adapter.weight"})))
    layouts.append(Layout(
        "ConvLSTMCell (layer_norm=0)", ("convlstm",),
        {**_split("conv_x", ("W_xi", "W_xf", "W_xc", "W_xo")),
         **_split("conv_h", ("W_hi", "W_hf", "W_hc", "W_ho"))},
        unused=_norm_keys("conv_o") | {"conv_last.weight"},
        zeros=("b_i", "b_f", "b_c", "b_o")))
    return layouts


LAYOUTS: tuple[Layout, ...] = tuple(_layouts())


def layout_for(cell: torch.nn.Module) -> Layout:
    """The layout whose cellgen parameters are exactly the cell's."""
    names = frozenset(name for name, _ in cell.named_parameters())
    for layout in LAYOUTS:
        if layout.params == names:
            return layout
    spec = getattr(getattr(cell, "cell_graph", None), "name", type(cell).__name__)
    supported = sorted({s for layout in LAYOUTS for s in layout.specs})
    raise CellgenError(f"cell {spec} has no OpenSTL counterpart that cellgen can load",
                       hint="OpenSTL checkpoints load into the cells of these specs: " + ", ".join(supported))


def _fitting_specs(keys: set[str]) -> list[str]:
    """Specs whose layout takes exactly these OpenSTL keys (for a hint)."""
    fits = []
    for layout in LAYOUTS:
        required = set(layout.keys)
        if required <= keys <= required | layout.unused:
            fits.extend(layout.specs)
    return fits


def _shape_hint(key: str, given: tuple[int, ...], wanted: tuple[int, ...]) -> str:
    if len(given) != len(wanted):
        return "the tensor has another rank: is this the state_dict of the right OpenSTL module?"
    if key.endswith(".1.weight") or key.endswith(".1.bias") or key in ("ct_weight", "oc_weight"):
        return "compile the cell with OpenSTL's hidden and map size (height, width = frame size / patch size)"
    axes = {0: "hidden (output channels)", 1: "in_channels (or hidden: input channels)", 2: "k", 3: "k"}
    wrong = [axes.get(i, f"axis {i}") for i, (g, w) in enumerate(zip(given, wanted)) if g != w]
    return "compile the cell with OpenSTL's " + " and ".join(dict.fromkeys(wrong))


def _tensors_for(layout: Layout, state_dict: Mapping[str, torch.Tensor],
                 params: Mapping[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Check `state_dict` against the layout; return cellgen parameter name → tensor."""
    keys = set(state_dict)
    unknown = sorted(keys - set(layout.keys) - layout.unused)
    missing = sorted(set(layout.keys) - keys)
    if unknown or missing:
        problems = []
        if unknown:
            near = difflib.get_close_matches(unknown[0], list(layout.keys), n=1)
            problems.append(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
                            + (f" (did you mean {near[0]}?)" if near else ""))
        if missing:
            problems.append(f"missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        fits = _fitting_specs(keys)
        hint = (f"these keys are those of {' or '.join(fits)}: compile that spec" if fits else
                f"expected the state_dict of OpenSTL's {layout.module}: {', '.join(sorted(layout.keys))}")
        raise CellgenError(f"{where}: this is not a state_dict of OpenSTL's {layout.module} for this cell: "
                           + "; ".join(problems), hint=hint)
    out: dict[str, torch.Tensor] = {}
    for key, targets in layout.keys.items():
        tensor = state_dict[key]
        if not _is_tensor(tensor):
            raise CellgenError(f"{where}: {key} is a {type(tensor).__name__}, not a tensor")
        wanted = _wanted_shape(targets, params)
        if tuple(tensor.shape) != wanted:
            raise CellgenError(f"{where}: {key} has shape {tuple(tensor.shape)}, the cell needs {wanted}",
                               hint=_shape_hint(key, tuple(tensor.shape), wanted))
        for target in targets:
            if isinstance(target, str):
                out[target] = tensor
            else:
                out[target.param] = tensor.chunk(target.count, dim=0)[target.index]
    for name in layout.zeros:
        out[name] = params[name].detach().new_zeros(params[name].shape)
    return out


def _is_tensor(value) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _wanted_shape(targets: tuple[Target, ...], params: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    """The OpenSTL tensor's shape the targets imply: one parameter's, or the chunks' stacked."""
    if isinstance(targets[0], str):
        return tuple(params[targets[0]].shape)
    first = tuple(params[targets[0].param].shape)     # the chunks of one tensor are alike
    return (first[0] * targets[0].count,) + first[1:]


def _copy_into(module: "torch.nn.Module", tensors: Mapping[str, "torch.Tensor"]) -> None:
    import torch

    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(dtype=params[name].dtype, device=params[name].device))


def load_cell(cell: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, where: str = "state_dict") -> Layout:
    layout = layout_for(cell)
    params = dict(cell.named_parameters())
    _copy_into(cell, _tensors_for(layout, state_dict, params, where))
    return layout


# OpenSTL's model-level module names, and the cellgen stack slot each one fills
_MODEL_PREFIXES = {
    "cell_list": "layers",                  # ConvLSTM_Model, PredRNN_Model, PredRNNv2_Model, PredRNNpp_Model
    "stlstm_layer": "layers",               # MIM_Model: an ST-LSTM, then MIM blocks
    "stlstm_layer_diff": "diff_chain",      # MIM_Model: the MIM-N cells between layers
}
_GHU = "gradient_highway"                   # PredRNNpp_Model: the GHU between layers 0 and 1


def _slots_of(model) -> dict[str, torch.nn.Module]:
    """OpenSTL prefix (`cell_list.2`, `gradient_highway`, …) → the cellgen cell it loads into."""
    stack = model.stack
    layer_prefix = "stlstm_layer" if len(stack.diff_chain) else "cell_list"
    slots = {f"{layer_prefix}.{index}": cell for index, cell in enumerate(stack.layers)}
    slots.update({f"stlstm_layer_diff.{index}": cell for index, cell in enumerate(stack.diff_chain)})
    if len(stack.between):
        if list(stack.between) != ["0"]:
            raise CellgenError(f"this stack has cells after layers {', '.join(stack.between)}; OpenSTL's only "
                               "model with a cell between layers is PredRNN++, one GHU after layer 0")
        slots[_GHU] = stack.between["0"]
    return slots


def _prefix_of(key: str) -> Optional[str]:
    """`cell_list.2.conv_x.0.weight` → `cell_list.2`; `gradient_highway.x_concat…` → `gradient_highway`."""
    head, _, rest = key.partition(".")
    if head == _GHU:
        return _GHU
    index = rest.partition(".")[0]
    if head in _MODEL_PREFIXES and index.isdigit():
        return f"{head}.{index}"
    return None


def _model_refusal(model, keys: set[str]) -> Optional[CellgenError]:
    """A clear word when the checkpoint is another OpenSTL model than the sequence model is."""
    stack = model.stack
    has_chain, has_ghu = bool(len(stack.diff_chain)), "0" in stack.between
    if any(k.startswith("stlstm_layer") for k in keys) and not has_chain:
        return CellgenError("this is a checkpoint of OpenSTL's MIM_Model (stlstm_layer.{l}., stlstm_layer_diff.{l}.): "
                            "an ST-LSTM, MIM blocks and a MIM-N chain; this sequence model is not",
                            hint="build it with SequenceConfig.for_model('mim', layers=L, …) (`--model mim`; "
                                 "mim_ln for layer_norm=1)")
    if any(k.startswith("cell_list.") for k in keys) and has_chain:
        return CellgenError("this sequence model is a MIM stack (OpenSTL keys stlstm_layer.{l}.…); the checkpoint "
                            "has cell_list.{l}.… keys, a stack of one cell")
    if any(k.startswith(_GHU + ".") for k in keys) and not has_ghu:
        return CellgenError("gradient_highway.… is PredRNN++'s GHU between layers 0 and 1; this sequence model has "
                            "no cell there",
                            hint="build it with SequenceConfig.for_model('predrnnpp', layers=L, …) "
                                 "(`--model predrnnpp`; predrnnpp_ln for layer_norm=1)")
    if has_ghu and not any(k.startswith(_GHU + ".") for k in keys):
        return CellgenError("missing gradient_highway.…: this sequence model has a GHU between layers 0 and 1 "
                            "(OpenSTL's PredRNNpp_Model); the checkpoint has none")
    return None


def load_model(model, state_dict: Mapping[str, torch.Tensor]) -> None:
    """OpenSTL's ConvLSTM_Model / PredRNN_Model / PredRNNv2_Model (`cell_list.{l}.…`),
    PredRNNpp_Model (`cell_list.{l}.…`, `gradient_highway.…`) or MIM_Model
    (`stlstm_layer.{l}.…`, `stlstm_layer_diff.{l}.…`), each with `conv_last.weight`, into a
    cellgen SequenceModel of the same make (a heterogeneous one for PredRNN++ and MIM)."""
    config = model.config
    if config.embed is not None:
        raise CellgenError("OpenSTL's models feed the patched frame to the bottom cell; this sequence model has an "
                           f"input projection (embed={config.embed})", hint="build the model without --embed")
    if model.extra_inputs:
        raise CellgenError(f"the cells of this sequence model take extra inputs ({', '.join(model.extra_inputs)}), "
                           "which OpenSTL's models do not have")
    keys = set(state_dict)
    refusal = _model_refusal(model, keys)
    if refusal is not None:
        raise refusal
    slots = _slots_of(model)
    layouts = {prefix: layout_for(cell) for prefix, cell in slots.items()}
    ignorable = set().union(*(layout.extra_model_keys for layout in layouts.values()))
    foreign = sorted(k for k in keys if _prefix_of(k) is None and k != "conv_last.weight" and k not in ignorable)
    if foreign:
        raise CellgenError(f"keys that are not OpenSTL's model keys ({', '.join(sorted(_MODEL_PREFIXES))}.{{l}}.…, "
                           f"{_GHU}.…, conv_last.weight): {', '.join(foreign[:6])}" + (" …" if len(foreign) > 6 else ""))
    _check_layer_count(keys, slots, len(model.stack.layers))
    if "conv_last.weight" not in keys:
        raise CellgenError("missing key conv_last.weight (the model's 1×1 output conv)")
    head = state_dict["conv_last.weight"]
    if tuple(head.shape) != tuple(model.head.weight.shape) or model.head.bias is not None:
        raise CellgenError(f"conv_last.weight has shape {tuple(head.shape)}, the model's head {tuple(model.head.weight.shape)}"
                           + (" with a bias" if model.head.bias is not None else ""),
                           hint="OpenSTL's frame channels are patch² × image channels; build the model with its patch size")
    adapter = _adapter_weight(model, state_dict)
    loaded = []
    for prefix, cell in slots.items():              # every cell checked before any is written
        sub = {k[len(prefix) + 1:]: v for k, v in state_dict.items() if _prefix_of(k) == prefix}
        loaded.append((cell, _tensors_for(layouts[prefix], sub, dict(cell.named_parameters()), prefix)))
    for cell, tensors in loaded:
        _copy_into(cell, tensors)
    _copy_into(model.head, {"weight": head})
    if adapter is not None:
        _copy_into(model.adapter, {"weight": adapter})


def _adapter_weight(model, state_dict: Mapping[str, "torch.Tensor"]):
    """PredRNNv2_Model's `adapter.weight` (its decoupling loss's shared 1×1 conv), checked, for a
    model that has the adapter (its cells output delta_c and delta_m); None where there is
    nothing to load: a PredRNN_Model checkpoint has no adapter (the model's keeps its init), and
    a model without one (predrnn_openstl's cells) has no use for it."""
    if "adapter.weight" not in state_dict or getattr(model, "adapter", None) is None:
        return None
    weight = state_dict["adapter.weight"]
    if not _is_tensor(weight):
        raise CellgenError(f"adapter.weight is {type(weight).__name__}, not a tensor")
    wanted = tuple(model.adapter.weight.shape)
    if tuple(weight.shape) != wanted:
        raise CellgenError(f"adapter.weight has shape {tuple(weight.shape)}, the model's adapter {wanted}",
                           hint="OpenSTL's adapter maps the bottom layer's hidden channels to themselves: build the "
                                "model with the checkpoint's hidden")
    return weight


def _check_layer_count(keys: set[str], slots: Mapping[str, object], layers: int) -> None:
    """As many layers (and chain cells) stored as the model has, named as it would name them."""
    stored = sorted({p for p in map(_prefix_of, keys) if p is not None and p != _GHU},
                    key=lambda p: (p.rsplit(".", 1)[0], int(p.rsplit(".", 1)[1])))
    wanted = sorted((p for p in slots if p != _GHU), key=lambda p: (p.rsplit(".", 1)[0], int(p.rsplit(".", 1)[1])))
    if stored != wanted:
        count = len({p for p in stored if p.rsplit(".", 1)[0] in ("cell_list", "stlstm_layer")})
        raise CellgenError(f"the checkpoint has {count} layers ({', '.join(stored[:8])}{' …' if len(stored) > 8 else ''}), "
                           f"the model {layers}", hint=f"build the model with {count} layers (--layers {count})")


def openstl_names(model) -> dict[str, str]:
    """OpenSTL state_dict key → the name of the cellgen parameter that holds it whole, for a
    SequenceModel loadable from an OpenSTL model (keys cut into several parameters — the
    paper-style specs' — are left out). What `load_openstl` writes where."""
    stack_names = {id(cell): name for name, cell in model.stack.named_modules()}
    names = {"conv_last.weight": "head.weight"}
    for prefix, cell in _slots_of(model).items():
        for key, targets in layout_for(cell).keys.items():
            if len(targets) == 1 and isinstance(targets[0], str):
                names[f"{prefix}.{key}"] = f"stack.{stack_names[id(cell)]}.{targets[0]}"
    return names


def load_layers(layers, state_dict: Mapping[str, "torch.Tensor"], layouts: Optional[list[Layout]] = None) -> None:
    """OpenSTL's `cell_list.{l}.…` into the layers of a CellStack (or a model's stack): every
    layer checked before any is written."""
    layouts = layouts or [layout_for(cell) for cell in layers]
    foreign = sorted(k for k in state_dict if not k.startswith("cell_list."))
    if foreign:
        raise CellgenError(f"keys that are not OpenSTL's cell_list.{{l}}.…: {', '.join(foreign[:6])}"
                           + (" …" if len(foreign) > 6 else ""))
    stored = sorted({int(k.split(".")[1]) for k in state_dict if k.split(".")[1].isdigit()})
    if stored != list(range(len(layers))):
        raise CellgenError(f"the checkpoint has {len(stored)} layers (cell_list.{stored}), the stack {len(layers)}",
                           hint=f"build the stack with {len(stored)} layers (--layers {len(stored)})")
    loaded = []
    for index, cell in enumerate(layers):
        prefix = f"cell_list.{index}."
        sub = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        loaded.append(_tensors_for(layouts[index], sub, dict(cell.named_parameters()), f"cell_list.{index}"))
    for cell, tensors in zip(layers, loaded):
        _copy_into(cell, tensors)


def load_openstl(target, state_dict: Mapping[str, torch.Tensor]):
    """Load an OpenSTL state_dict into a compiled cell (the matching OpenSTL cell module's
    state_dict), a CellStack (an OpenSTL model's `cell_list.{l}.…`) or a SequenceModel (an
    OpenSTL ConvLSTM/PredRNN/PredRNN-V2 model's, `conv_last.weight` included).
    Returns `target`. Raises CellgenError for unknown or missing keys and for shapes that do
    not fit, before changing any parameter."""
    if not isinstance(state_dict, Mapping):
        raise CellgenError(f"load_openstl takes a state_dict (a mapping of names to tensors), not "
                           f"{type(state_dict).__name__}")
    import torch

    from cellgen.runtime.stack import CellStack
    from cellgen.sequence.model import SequenceModel

    if isinstance(target, SequenceModel):
        load_model(target, state_dict)
    elif isinstance(target, CellStack):
        load_layers(target.layers, state_dict)
    elif isinstance(target, torch.nn.Module):
        load_cell(target, state_dict)
    else:
        raise CellgenError(f"load_openstl loads into a compiled cell or a SequenceModel, not {type(target).__name__}")
    return target
