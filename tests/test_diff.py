"""`cellgen diff`: alignment by names and structure, what it reports, and its exit codes.

The expected differences are written out by hand from the specs (and the parameter counts
from the conv shapes), not taken from the tool's own output.
"""
import io
import json
import math
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cellgen.resources import shipped_specs  # noqa: E402
from cellgen.tools import diff as cdiff  # noqa: E402
from cellgen.tools.diff import Rename, diff_cells, diff_main  # noqa: E402

CIN, C, K = 3, 64, 5  # in_channels, the specs' default hidden and k
P = {"in_channels": CIN}
CONVLSTM = (ROOT / "specs" / "convlstm.cell").read_text(encoding="utf-8")


def conv(out, inp, *kernel):
    return out * inp * math.prod(kernel)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def rename_in_equations(text, old, new):
    """`old` → `new` as a whole word, in the equations only (not in comments or declarations)."""
    lines = []
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "param")):
            line = re.sub(rf"\b{re.escape(old)}\b", new, line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def run(argv, capsys):
    status = diff_main(argv)
    out, err = capsys.readouterr()
    return status, out, err


# --- the same cell --------------------------------------------------------------------------

@pytest.mark.parametrize("spec", sorted(shipped_specs()))
def test_a_spec_diffed_with_itself_is_empty(spec, capsys):
    cin = C if spec == "mau" else CIN  # OpenSTL's MAUCell reads its input S with num_hidden-input convs
    result = diff_cells(spec, spec, {"in_channels": cin})
    assert result.identical and result.equivalent and result.exit_status == 0
    assert not (result.renames or result.states or result.weights or result.attributes or result.equations.unified)
    assert set(result.status_a.values()) == {"same"} and set(result.status_b.values()) == {"same"}
    status, out, err = run([spec, spec, "-p", f"in_channels={cin}"], capsys)
    assert (status, out) == (0, "")


def test_renamed_intermediate_is_equivalent(tmp_path, capsys):
    renamed = write(tmp_path, "renamed.cell", rename_in_equations(CONVLSTM, "i", "in_gate"))
    assert "in_gate = σ(" in Path(renamed).read_text().replace("  ", " ")
    result = diff_cells("convlstm", renamed, P)
    assert result.equivalent and not result.identical and result.exit_status == 0
    assert result.renames == [Rename("gate", "i", "in_gate", "structure")]
    assert not (result.weights or result.states or result.attributes or result.equations.changed)
    status, out, _ = run(["convlstm", renamed, "-p", "in_channels=3"], capsys)
    assert status == 0
    assert "i → in_gate" in out and "equivalent" in out and "different" not in out


def test_every_gate_renamed_is_still_aligned_by_structure(tmp_path):
    text = CONVLSTM
    for old, new in (("i", "input_gate"), ("f", "forget_gate"), ("o", "output_gate")):
        text = rename_in_equations(text, old, new)
    result = diff_cells("convlstm", write(tmp_path, "all.cell", text), P)
    assert result.equivalent
    assert {(r.a, r.b) for r in result.renames} == {("i", "input_gate"), ("f", "forget_gate"), ("o", "output_gate")}


def test_order_of_terms_does_not_matter(tmp_path):
    text = CONVLSTM.replace("σ(W_xi ⋆ x + W_hi ⋆ h + b_i)", "σ(b_i + W_hi ⋆ h + W_xi ⋆ x)")
    text = text.replace("c' = f ⊙ c + i ⊙ tanh(W_xc ⋆ x + W_hc ⋆ h + b_c)",
                        "c' = tanh(W_hc ⋆ h + W_xc ⋆ x + b_c) ⊙ i + c ⊙ f")
    assert "σ(b_i + W_hi ⋆ h + W_xi ⋆ x)" in text and "⊙ i + c ⊙ f" in text
    result = diff_cells("convlstm", write(tmp_path, "order.cell", text), P)
    assert result.identical, cdiff.format_text(result)


def test_a_renamed_weight_is_aligned_but_the_cells_differ(tmp_path, capsys):
    text = CONVLSTM.replace("W_xi", "W_xin")  # W_x* still covers it
    result = diff_cells("convlstm", write(tmp_path, "w.cell", text), P)
    assert result.renames == [Rename("weight", "W_xi", "W_xin", "structure")]
    assert not (result.weights or result.equations.changed or result.attributes)
    assert not result.equivalent and result.exit_status == 1  # parameter names are the module's interface
    assert result.a.parameters == result.b.parameters
    assert "1 weight renamed" in cdiff.format_text(result)


def test_a_convs_geometry_is_a_changed_weight_not_a_changed_equation(tmp_path, capsys):
    """pad/stride/resize (docs/conv_modes.md) are reported with the conv's weight, as its kernel is."""
    text = CONVLSTM.replace("W_x*, W_h* : conv k×k", "W_xi, W_xf, W_xc, W_h* : conv k×k\n    W_xo : conv k×k pad (2, 2)")
    assert text != CONVLSTM
    result = diff_cells("convlstm", write(tmp_path, "pad.cell", text), P)
    (change,) = result.weights
    assert (change.a, change.fields, change.after["geometry"]) == ("W_xo", ["geometry"], "pad 2")
    assert "geometry" not in change.before and not result.equations.changed
    assert re.search(r"~ W_xo +conv 5×5 → conv 5×5 pad 2 ", cdiff.format_text(result))
    status, out, _ = run(["convlstm", write(tmp_path, "pad.cell", text), "-p", "in_channels=1", "--format", "json"],
                         capsys)
    (row,) = json.loads(out)["weights"]
    assert status == 1 and row["after"]["geometry"] == "pad 2" and row["fields"] == ["geometry"]
    e3d = cdiff.format_text(diff_cells("e3d_lstm", "e3d_lstm_openstl", {"in_channels": 4}))
    assert "conv 2×5×5 pad (valid, same, same) resize nearest" in e3d


def test_a_renamed_gate_is_matched_in_a_changed_cell(tmp_path):
    renamed = write(tmp_path, "renamed.cell", rename_in_equations(CONVLSTM, "i", "in_gate"))
    result = diff_cells(renamed, "predrnn", P)
    assert Rename("gate", "in_gate", "i", "neighbours") in result.renames
    assert result.gates_added == ["g", "i_m", "f_m", "g_m"]


# --- known differences ----------------------------------------------------------------------

def test_convlstm_vs_peephole():
    result = diff_cells("convlstm", "convlstm_peephole", P)
    hw = 64 * 64  # the peephole spec's default height × width
    assert [(w.status, w.b, w.after["kind"], w.after["shape"], w.after["parameters"]) for w in result.weights] == [
        ("added", "W_ci", "elementwise", (C, 64, 64), C * hw),
        ("added", "W_cf", "elementwise", (C, 64, 64), C * hw),
        ("added", "W_co", "elementwise", (C, 64, 64), C * hw)]
    assert result.equations.changed == ["i", "f", "o"]
    assert not (result.equations.added or result.equations.removed or result.gates_added or result.states)
    assert result.b.parameters - result.a.parameters == 3 * C * hw
    assert result.b.macs == result.a.macs and result.a.convs["O0"] == result.b.convs["O0"] == 8
    unified = result.equations.unified
    assert "-i  = σ(W_xi ⋆ x + W_hi ⋆ h + b_i)" in unified
    assert "+i  = σ(W_xi ⋆ x + W_hi ⋆ h + W_ci ⊙ c + b_i)" in unified
    assert unified.index("-i  = σ(W_xi ⋆ x + W_hi ⋆ h + b_i)") + 1 == \
        unified.index("+i  = σ(W_xi ⋆ x + W_hi ⋆ h + W_ci ⊙ c + b_i)")  # aligned by target
    assert " h' = o ⊙ tanh(c')" in unified  # context
    assert result.exit_status == 1


def test_convlstm_vs_predrnn():
    result = diff_cells("convlstm", "predrnn", P)
    assert [(s.status, s.b, s.after) for s in result.states] == [
        ("added", "m", {"channels": C, "zigzag": True, "history": False, "history_size": None})]
    assert result.gates_added == ["g", "i_m", "f_m", "g_m"] and result.gates_removed == []
    assert result.equations.added == ["g", "i_m", "f_m", "g_m", "m'"]
    assert result.equations.changed == ["i", "f", "c'", "o", "h'"]
    removed = {w.a: w.before["parameters"] for w in result.weights if w.status == "removed"}
    added = {w.b: w.after["parameters"] for w in result.weights if w.status == "added"}
    x, h = conv(C, CIN, K, K), conv(C, C, K, K)
    assert removed == {"b_i": C, "b_f": C, "b_c": C, "b_o": C, "W_xc": x, "W_hc": h}
    assert added == {"W_xg": x, "W_hg": h, "W_xi_m": x, "W_mi": h, "W_xf_m": x, "W_mf": h, "W_xg_m": x, "W_mg": h,
                     "W_o": conv(C, 2 * C, K, K), "W_1x1": conv(C, 2 * C, 1, 1)}
    assert not [w for w in result.weights if w.status == "changed"]
    convlstm = 4 * (x + h) + 4 * C
    predrnn = 7 * x + 4 * h + 3 * h + conv(C, 2 * C, K, K) + conv(C, 2 * C, 1, 1)
    assert (result.a.parameters, result.b.parameters) == (convlstm, predrnn)
    assert result.to_json()["totals"]["parameters"] == {"a": convlstm, "b": predrnn, "delta": predrnn - convlstm}
    hw = 64 * 64
    assert result.a.macs == (4 * x + 4 * h) * hw
    assert result.b.macs == (7 * x + 7 * h + conv(C, 2 * C, K, K) + conv(C, 2 * C, 1, 1)) * hw
    assert (result.a.convs["O0"], result.b.convs["O0"]) == (8, 16)
    assert result.b.convs["O2"] <= result.b.convs["O0"]
    attributes = {(a.what, a.where): (a.before, a.after) for a in result.attributes}
    assert attributes[("constants", "f")] == ([], [1.0])  # predrnn's forget gate gets +1.0
    assert ("conv_dims", None) not in attributes


def test_kernel_change_is_an_attribute(tmp_path):
    def spec(kernel):
        return CONVLSTM.replace("    b_*        : bias", f"    b_*        : bias\n    W_hc       : conv {kernel}")

    result = diff_cells(write(tmp_path, "k5.cell", spec("5×5")), write(tmp_path, "k3.cell", spec("3×3")), P)
    assert [(a.what, a.where, a.before, a.after) for a in result.attributes] == [("kernel", "W_hc", [5, 5], [3, 3])]
    [weight] = result.weights
    assert (weight.status, weight.a, weight.fields) == ("changed", "W_hc", ["shape", "kernel"])
    assert (weight.before["parameters"], weight.after["parameters"]) == (conv(C, C, 5, 5), conv(C, C, 3, 3))
    assert not (result.equations.changed or result.renames)
    assert result.exit_status == 1
    assert "W_hc: kernel 5×5 → 3×3" in cdiff.format_text(result)


def test_2d_to_3d_is_an_attribute(tmp_path):
    spec3d = write(tmp_path, "conv3d.cell", CONVLSTM.replace("conv k×k", "conv 2×k×k"))
    result = diff_cells("convlstm", spec3d, P, size=(2, 64, 64))
    assert result.attributes[0] == cdiff.AttributeChange("conv_dims", None, 2, 3)
    kernels = [a for a in result.attributes if a.what == "kernel"]
    assert len(kernels) == 8 and all((a.before, a.after) == ([5, 5], [2, 5, 5]) for a in kernels)
    assert (result.a.size, result.b.size) == ((64, 64), (2, 64, 64))
    text = cdiff.format_text(result)
    assert "convs: 2D → 3D" in text and "W_xi, W_hi, W_xf, W_hf, W_xc, W_hc, W_xo, W_ho: kernel 5×5 → 2×5×5" in text


def test_functions_added_to_a_gate(tmp_path):
    changed = write(tmp_path, "act.cell", CONVLSTM.replace("o  = σ(W_xo ⋆ x + W_ho ⋆ h + b_o)",
                                                          "o  = σ(tanh(W_xo ⋆ x + W_ho ⋆ h + b_o))"))
    result = diff_cells("convlstm", changed, P)
    assert [(a.what, a.where, a.before, a.after) for a in result.attributes] == \
        [("functions", "o", ["sigmoid"], ["sigmoid", "tanh"])]
    assert result.equations.changed == ["o"]
    assert "o: functions σ → σ, tanh" in cdiff.format_text(result)


def test_state_changes(tmp_path):
    zigzag = write(tmp_path, "z.cell", CONVLSTM.replace("state h[hidden], c[hidden]",
                                                        "state h[hidden]\n  state c[hidden] zigzag"))
    result = diff_cells("convlstm", zigzag, P)
    [state] = result.states
    assert (state.status, state.a, state.fields) == ("changed", "c", ["zigzag"])
    assert "c[64] → c[64] zigzag" in cdiff.format_text(result)


def test_a_variant_that_changes_nothing_is_equivalent_to_its_parent(tmp_path, capsys):
    """Diff compares resolved specs: `extends` with no changes is the same cell."""
    copy = write(tmp_path, "copy.cell", 'cell ConvLSTMCopy "a variant that changes nothing" extends convlstm\n')
    result = diff_cells("convlstm", copy, P)
    assert result.equivalent and result.identical and not result.equations.unified
    status, out, _ = run(["convlstm", copy, "-p", "in_channels=3"], capsys)
    assert status == 0 and "equivalent" in out and 'citation: "Shi et al.' in out


def test_a_history_length_is_a_state_change(tmp_path):
    online = write(tmp_path, "tau5.cell", 'cell E3DTau5 "online" extends e3d_lstm\n  param tau = 5\n')
    result = diff_cells("e3d_lstm", online, P)
    [state] = result.states
    assert (state.status, state.a, state.fields) == ("changed", "c", ["history_size"])
    assert (state.before["history_size"], state.after["history_size"]) == (None, 5)
    assert not (result.weights or result.equations.changed or result.gates_added or result.renames)
    thw = 2 * 64 * 64  # attention over 5 past memories instead of 1 (an unbounded history is counted per entry)
    assert result.b.macs - result.a.macs == 4 * 2 * C * thw * thw
    assert "c[64] history (every past value) → c[64] history of 5" in cdiff.format_text(result)


def test_e3d_without_attention_diffs_against_its_parent_by_content():
    result = diff_cells("e3d_lstm", "e3d_lstm_no_attention", P)
    assert result.gates_removed == ["r", "C", "R"] and result.gates_added == []
    assert result.equations.changed == ["c'"] and result.equations.removed == ["r", "C", "R"]
    assert {w.a for w in result.weights} == {"W_xr", "W_hr", "b_r"}
    assert all(w.status == "removed" for w in result.weights)
    [state] = result.states
    assert (state.a, state.fields, state.before["history"], state.after["history"]) == ("c", ["history"], True, False)
    assert "+c'  = i ⊙ g + LN_c(c)" in result.equations.unified


def test_a_renamed_chunk_of_an_unpack_is_equivalent(tmp_path):
    text = (ROOT / "specs" / "e3d_lstm_official.cell").read_text(encoding="utf-8")
    renamed = write(tmp_path, "official.cell", re.sub(r"\bi_xm\b", "i_xm2", text))
    result = diff_cells("e3d_lstm_official", renamed, P)
    assert result.equivalent and result.renames == [Rename("gate", "i_xm", "i_xm2", "structure")]
    assert not (result.gates_added or result.gates_removed or result.equations.unified)


def test_borrowed_blocks_are_compared_inlined():
    """PredRNN with CMS-LSTM's blocks (`use CE, SE from cms_lstm`) against CMS-LSTM: the
    blocks' equations (`CE.x_1`, `SE.i`, …) are the same; the ST-LSTM part differs."""
    result = diff_cells("cms_lstm", "predrnn_ce_se", P)
    assert [(s.status, s.b) for s in result.states] == [("added", "m")]
    assert result.gates_added == ["i_m", "f_m", "g_m"] and result.gates_removed == []
    assert result.equations.changed == ["i", "f", "g", "o", "h_1"]
    unified = result.equations.unified
    assert " SE.S     = stack(SE.h, SE.c)" in unified and " CE.x_3   = 2σ(CE.W_H ⋆ CE.h_2 + CE.b_H) ⊙ CE.x_2" in unified
    assert not [w for w in result.weights if (w.a or w.b).startswith(("CE.", "SE."))]


def test_predrnn_vs_e3d_lstm():
    """ST-LSTM → E3D-LSTM: 3D convs, the recall gate and RECALL in place of c's forget gate,
    a history of c, a LayerNorm, biases, and an input window."""
    result = diff_cells("predrnn", "e3d_lstm", P)
    attributes = {(a.what, a.where): (a.before, a.after) for a in result.attributes}
    assert attributes[("conv_dims", None)] == (2, 3)
    kernels = {a.where: (a.before, a.after) for a in result.attributes if a.what == "kernel"}
    assert set(kernels) == {"W_xi", "W_hi", "W_xg", "W_hg", "W_xi_m", "W_mi", "W_xf_m", "W_mf", "W_xg_m", "W_mg",
                            "W_xo", "W_ho", "W_1x1"}
    assert kernels["W_xi"] == ([5, 5], [2, 5, 5]) and kernels["W_1x1"] == ([1, 1], [1, 1, 1])
    # f of c is gone; the recall gate r, the history C and RECALL's attention R feed c' instead
    assert result.gates_removed == ["f"] and result.gates_added == ["r", "C", "R"]
    assert attributes[("replaced", "c'")] == (["f"], ["r", "C", "R"])
    assert attributes[("layernorm", "LN_c")] == (None, {"mode": "all", "axes": [], "shape": [], "eps": 1e-5})
    before, after = attributes[("functions", "c'")]
    assert before == ["sigmoid"] and after == ["layernorm", "attention", "sigmoid"]
    assert attributes[("constants", "f_m")] == ([1.0], [])
    [state] = result.states
    assert (state.status, state.a, state.fields) == ("changed", "c", ["history"])
    assert (state.after["history"], state.after["history_size"]) == (True, None)  # tau = none: every past c
    [window] = result.inputs
    assert (window.a, window.fields, window.before, window.after) == (
        "x", ["window"], {"channels": CIN, "window": None}, {"channels": CIN, "window": 2})
    added = {w.b: (w.after["kind"], w.after["shape"]) for w in result.weights if w.status == "added"}
    assert {b for b in added if b.startswith("b_")} == {"b_r", "b_i", "b_g", "b_i_m", "b_g_m", "b_f_m", "b_o"}
    assert added["LN_c.weight"] == ("norm_gain", (C,)) and added["LN_c.bias"] == ("norm_bias", (C,))
    assert added["W_xr"] == ("conv", (C, CIN, 2, K, K)) and added["W_co"] == ("conv", (C, C, 2, K, K))
    assert {w.a for w in result.weights if w.status == "removed"} == {"W_xf", "W_hf", "W_o"}
    assert result.equations.added == ["r", "C", "R"] and result.equations.removed == ["f"]
    unified = result.equations.unified
    assert unified.index("-c'  = f ⊙ c + i ⊙ g") + 1 == unified.index("+c'  = i ⊙ g + LN_c(c + R)")
    assert "+R   = attention(r, C, C)" in unified and "+C   = c[t-tau:t-1]" in unified
    assert "-o   = σ(W_xo ⋆ x + W_ho ⋆ h + W_o ⋆ [c', m'])" in unified
    # MACs at T×H×W = 2×64×64 (T from the window): the convs, and RECALL over one past memory
    thw = 2 * 64 * 64
    convs = (7 * conv(C, CIN, 2, K, K) + 9 * conv(C, C, 2, K, K) + conv(C, 2 * C, 1, 1, 1)) * thw
    assert (result.a.size, result.b.size) == ((64, 64), (2, 64, 64))
    assert result.b.macs == convs + 2 * C * thw * thw
    assert result.exit_status == 1
    data = result.to_json()
    assert data["inputs"][0]["after"] == {"channels": CIN, "window": 2}
    assert {"what": "replaced", "where": "c'", "before": ["f"], "after": ["r", "C", "R"]} in data["attributes"]
    text = cdiff.format_text(result)
    for line in ("~ x[3] → x[3] window 2", "~ c[64] → c[64] history (every past value)", "- f", "+ r, C, R",
                 "~ convs: 2D → 3D", "~ LN_c: LayerNorm added (over every axis but the batch, jointly, eps 1e-05)",
                 "~ c': reads f → reads r, C, R instead"):
        assert line in text, line


def test_e3d_lstm_vs_its_official_code():
    """The paper's E3D-LSTM → google/e3d_lstm: one conv per operand cut into gate chunks, each
    with a bias and its own LayerNorm (eps 1e-12), +1.0 in f_m, tanh inside the output gate,
    m_new with tanh(m_m), and m never updated."""
    result = diff_cells("e3d_lstm", "e3d_lstm_official", P)
    fused = {a.where: (a.before, a.after) for a in result.attributes if a.what == "fused_conv"}
    assert fused == {"x": (["W_xr", "W_xi", "W_xg", "W_xi_m", "W_xg_m", "W_xf_m", "W_xo"], ["W_x"]),
                     "h": (["W_hr", "W_hi", "W_hg", "W_ho"], ["W_h"]),
                     "m": (["W_mi", "W_mg", "W_mf"], ["W_m"])}
    norms = {a.where: (a.before, a.after) for a in result.attributes if a.what == "layernorm"}
    joint = {"mode": "all", "axes": [], "shape": [], "eps": 1e-12}
    assert norms == {"LN_c": ({"eps": 1e-5}, {"eps": 1e-12}), "LN_x": (None, joint), "LN_h": (None, joint),
                     "LN_m": (None, joint)}
    attributes = {(a.what, a.where): (a.before, a.after) for a in result.attributes}
    assert attributes[("functions", "o")] == (["sigmoid"], ["sigmoid", "tanh", "layernorm"])
    assert attributes[("functions", "i")] == (["sigmoid"], ["sigmoid", "layernorm"])  # through i_x, i_h
    assert attributes[("constants", "f_m")] == ([], [1.0])
    assert attributes[("frozen", "m")] == (False, True)  # m' = m
    assert "m_new" in result.gates_added and {"i_x", "o_h", "m_m"} <= set(result.gates_added)
    # c' is written the same; its LayerNorm's eps is reported above, not as an equation change
    assert result.equations.changed == ["r", "i", "g", "i_m", "g_m", "f_m", "m'", "o", "h'"]
    unified = result.equations.unified
    assert unified.index("-m'    = i_m ⊙ g_m + f_m ⊙ m") + 1 == unified.index("+m'    = m")
    assert "+m_new = f_m ⊙ tanh(m_m) + i_m ⊙ g_m" in unified
    assert "+i_x, g_x, r_x, o_x, i_xm, g_xm, f_xm = LN_x(W_x ⋆ x + b_x)" in unified
    assert "+o     = σ(tanh(o_x + o_h + W_co ⋆ c' + b_co + W_mo ⋆ m_new + b_mo))" in unified
    added = {w.b for w in result.weights if w.status == "added"}
    assert added == {"W_x", "b_x", "LN_x.weight", "LN_x.bias", "W_h", "b_h", "LN_h.weight", "LN_h.bias", "W_m", "b_m",
                     "LN_m.weight", "LN_m.bias", "b_co", "b_mo", "b_1x1"}
    x, h, t = conv(7 * C, CIN, 2, K, K), conv(4 * C, C, 2, K, K), conv(C, C, 2, K, K)
    official = (x + 3 * 7 * C) + 2 * (h + 3 * 4 * C) + 2 * (t + C) + 2 * C + conv(C, 2 * C, 1, 1, 1) + C
    assert result.b.parameters == official
    text = cdiff.format_text(result)
    for line in ("~ convs of x: W_xr, W_xi, W_xg, W_xi_m, W_xg_m, W_xf_m, W_xo → one conv W_x, cut into gate chunks",
                 "~ LN_c: LayerNorm eps 1e-05 → eps 1e-12", "~ m: never updated (m' = m)",
                 "~ o: functions σ → σ, tanh, LayerNorm"):
        assert line in text, line


# --- output formats -----------------------------------------------------------------------------

def test_json_schema(capsys):
    status, out, _ = run(["convlstm", "predrnn", "-p", "in_channels=3", "--format", "json"], capsys)
    assert status == 1
    data = json.loads(out)
    assert (data["schema"], data["version"]) == ("cellgen-diff", 1)
    assert list(data) == ["schema", "version", "equivalent", "identical", "a", "b", "renames", "inputs", "states",
                          "gates", "weights", "attributes", "equations", "totals"]
    assert set(data["a"]) == {"origin", "name", "citation", "params", "spatial_dims", "size", "parameters", "macs",
                              "convs"}
    assert data["states"] == [{"status": "added", "a": None, "b": "m", "before": None,
                               "after": {"channels": 64, "zigzag": True, "history": False, "history_size": None},
                               "fields": []}]
    assert set(data["totals"]) == {"parameters", "macs", "convs_O0", "convs_O2"}
    assert data["equations"]["unified"].startswith("--- ConvLSTM\n+++ STLSTM\n@@ ")
    weight = next(w for w in data["weights"] if w["b"] == "W_o")
    assert weight["after"] == {"kind": "conv", "shape": [64, 128, 5, 5], "kernel": [5, 5],
                               "parameters": 204800, "gate": "o"}
    documented = (ROOT / "docs" / "diff.md").read_text(encoding="utf-8")
    for key in data:
        assert f'"{key}"' in documented, f"docs/diff.md does not document `{key}`"


def test_text_report(capsys):
    status, out, err = run(["convlstm", "convlstm_peephole", "-p", "in_channels=3"], capsys)
    assert status == 1 and err == ""
    assert out.startswith("--- specs/convlstm.cell  ConvLSTM\n+++ specs/convlstm_peephole.cell  ConvLSTMPeephole\n")
    assert "\033[" not in out  # not a terminal: no colour
    assert re.search(r"\+ W_ci\s+elementwise\s+64×64×64\s+262144", out)
    assert re.search(r"parameters\s+429056\s+1215488\s+\+786432", out)
    assert out.rstrip().endswith("different: 3 weights added; 3 equations changed; parameters +786432")


def test_colour(monkeypatch, capsys):
    _, always, _ = run(["convlstm", "predrnn", "-p", "in_channels=3", "--color", "always"], capsys)
    _, never, _ = run(["convlstm", "predrnn", "-p", "in_channels=3", "--color", "never"], capsys)
    assert "\033[32m+ m[64] zigzag" in always.replace("  + m", "+ m").replace("\033[32m  ", "\033[32m")
    assert "\033[" not in never
    assert re.sub(r"\033\[[0-9;]*m", "", always) == never

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert cdiff.use_color("auto", Terminal()) is True
    assert cdiff.use_color("auto", io.StringIO()) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert cdiff.use_color("auto", Terminal()) is False
    assert cdiff.use_color("always", io.StringIO()) is True


def test_output_file(tmp_path, capsys):
    target = tmp_path / "d.json"
    assert run(["convlstm", "predrnn", "-p", "in_channels=3", "-f", "json", "-o", str(target)], capsys)[:2] == (1, "")
    assert json.loads(target.read_text())["schema"] == "cellgen-diff"
    status, _, err = run(["convlstm", "predrnn", "-p", "in_channels=3", "-f", "json", "-o", str(target)], capsys)
    assert status == 2 and "already exists" in err
    assert run(["convlstm", "predrnn", "-p", "in_channels=3", "-o", str(target), "--force"], capsys)[0] == 1
    assert target.read_text().startswith("--- specs/convlstm.cell")


# --- errors: exit status 2 ------------------------------------------------------------------------

def test_a_bad_spec_is_exit_2(tmp_path, capsys):
    bad = write(tmp_path, "bad.cell", CONVLSTM.replace("W_hi ⋆ h + b_i", "W_hi ⋆ hh + b_i"))
    status, out, err = run(["convlstm", bad, "-p", "in_channels=3"], capsys)
    assert (status, out) == (2, "")
    assert "bad.cell:15:" in err and "unknown symbol `hh`" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["convlstm", "no_such_spec", "-p", "in_channels=3"], "no spec named `no_such_spec`"),
    (["convlstm", "predrnn"], "param `in_channels`"),
    (["convlstm", "predrnn", "-p", "in_channels=3", "-p", "hiden=8"], "no cell here has a param `hiden`"),
    (["convlstm", "predrnn", "-p", "in_channels=three"], "must be a whole number"),
    (["convlstm", "predrnn", "-p", "in_channels=3", "--size", "64"], "--size needs H W"),
])
def test_errors_are_exit_2(argv, message, capsys):
    status, out, err = run(argv, capsys)
    assert (status, out) == (2, "")
    assert message in err


def test_usage_error_is_exit_2(capsys):
    assert run(["convlstm"], capsys)[0] == 2
    assert run(["convlstm", "predrnn", "--format", "pdf"], capsys)[0] == 2


# --- docs ---------------------------------------------------------------------------------------

def test_docs_examples_are_generated_and_current(capsys):
    """docs/diff.md's examples are the tool's output: regenerating them changes nothing."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    here = os.getcwd()
    status = generate.main(["--check"])
    assert os.getcwd() == here
    assert status == 0, capsys.readouterr().err
    text = (ROOT / "docs" / "diff.md").read_text(encoding="utf-8")
    assert text.count("<!-- run: ") >= 5 and text.count("<!-- picture: ") >= 5
