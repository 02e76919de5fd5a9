"""The negative corpus: one small bad spec per mistake, and what cellgen says about each.

Every file in tests/bad_specs/ has a row in CASES: the exception (or warning) class, the
line:col the diagnostic points at, a substring of its message, and of its hint where it has
one. Further tests check that every rendered diagnostic has the compiler layout

    <path>:LINE:COL: error: message
        the offending source line
        ^^^ caret under column COL

that syntax errors name what was expected in words (never lark's `RPAR`, `_NL`, `__ANON_0`),
and that bad `param` values passed to cellgen.compile are ParamErrors. Every corpus file is
also checked through `cellgen check FILE` (exit 1, the diagnostic on stderr, no traceback).
Two hypothesis fuzzers break the shipped specs (and the corpus): one character or keyword at a
time, which must give a well-formed syntax error; and one or two edits of lines and words, which
must compile or give a CellgenError, never another exception.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import cellgen  # noqa: E402
from cellgen.errors import (ArityError, CellgenError, CellgenSyntaxError, CellgenWarning,  # noqa: E402
                            ChannelMismatchError, CyclicDefinitionError, ParamError, RedefinitionError,
                            ShapeError, SpecNotFoundError, StateNotUpdatedError, TypeMismatchError,
                            UnknownFunctionError, UnknownSymbolError)
from cellgen.api import load_spec  # noqa: E402
from cellgen.language.limits import LimitError  # noqa: E402
from cellgen.ir.lower import lower  # noqa: E402
from cellgen.language.parser import _lark, parse  # noqa: E402
from cellgen.resources import shipped_specs  # noqa: E402

BAD = Path(__file__).resolve().parent / "bad_specs"


@dataclass
class Case:
    file: str
    error: type
    at: tuple[int, int]  # line, column of the diagnostic's span
    message: str  # a substring of the message
    hint: Optional[str] = None  # a substring of the hint
    expected: Optional[str] = None  # the whole "expected …" text of a syntax error
    notes: list[tuple[int, int]] = field(default_factory=list)  # line, column of each related note

    def __str__(self):
        return self.file


CASES = [
    # --- syntax -----------------------------------------------------------------------------
    Case("syntax_missing_equals.cell", CellgenSyntaxError, (6, 6), "unexpected name `σ`",
         hint="an equation reads `name = expression`", expected="`,`, `:` or `=`"),
    Case("syntax_unbalanced_paren.cell", CellgenSyntaxError, (6, 16), "unexpected `)`",
         hint="this `)` closes no `(`", expected="end of line"),
    Case("syntax_unclosed_paren.cell", CellgenSyntaxError, (7, 3), "unexpected name `h`",
         hint="close it with `)`", notes=[(6, 9)],
         expected="`'`, `(`, `)`, `,`, `[` or an operator (`+`, `-`, `⊙`, `⋆`, `/`)"),
    Case("syntax_bad_char.cell", CellgenSyntaxError, (6, 10), "unexpected character `·`",
         hint="write `⊙` (or `.*`) for the elementwise product",
         expected="`'`, `(`, `[`, an operator (`+`, `-`, `⊙`, `⋆`, `/`) or end of line"),
    Case("syntax_unexpected_eof.cell", CellgenSyntaxError, (6, 15), "unexpected end of file",
         hint="close it with `)`", notes=[(6, 9)], expected="`)` or `,`"),
    Case("syntax_kernel_x.cell", CellgenSyntaxError, (8, 17), "unexpected end of line",
         hint="`k×k` or `k x k`", expected="`×`"),
    Case("syntax_header.cell", CellgenSyntaxError, (2, 5), "unexpected end of line", expected="a name"),
    # --- names ------------------------------------------------------------------------------
    Case("unknown_param_in_dim.cell", UnknownSymbolError, (7, 11), "unknown param `hiden`",
         hint="did you mean `hidden`?"),
    Case("unknown_symbol.cell", UnknownSymbolError, (8, 28), "unknown symbol `hiden_state`",
         hint="did you mean `hidden_state`?"),
    Case("unknown_gate.cell", UnknownSymbolError, (8, 12), "unknown symbol `forgte`",
         hint="did you mean `forget`?"),
    Case("unknown_function.cell", UnknownFunctionError, (7, 8), "unknown function `sigmod`",
         hint="did you mean `sigmoid`?"),
    Case("wrong_arity.cell", ArityError, (7, 8), "`tanh` takes 1 argument, but 2 were given"),
    Case("gate_defined_twice.cell", RedefinitionError, (8, 3), "`g` is defined twice", notes=[(7, 3)]),
    Case("name_declared_twice.cell", RedefinitionError, (6, 9),
         "`x` is declared twice: as an input, then again as a state", notes=[(4, 9)]),
    Case("state_without_prime.cell", RedefinitionError, (7, 3),
         "`c` is declared as a state, so an equation cannot define it", hint="write `c' = …`", notes=[(5, 20)]),
    Case("glob_declared_twice.cell", RedefinitionError, (11, 13),
         "`W_xh` matches `W_x*`, which two weight declarations declare", hint="declare `W_x*` once",
         notes=[(8, 5), (9, 5)]),
    Case("cyclic.cell", CyclicDefinitionError, (7, 3), "`a` depends on itself: a → b → a",
         hint="may only depend on states at t-1", notes=[(8, 3)]),
    # --- channels, states, types --------------------------------------------------------------
    Case("channel_mismatch.cell", ChannelMismatchError, (10, 8),
         "`c ⊙ g` needs operands with equal channels, but `c` has 4 channels and `g` has 8",
         notes=[(6, 9), (4, 9)]),
    Case("state_not_updated.cell", StateNotUpdatedError, (5, 20), "state `c` is never updated",
         hint="add an equation `c' = …`"),
    Case("next_value_undefined.cell", StateNotUpdatedError, (7, 17), "`c'` is used, but no equation defines it",
         hint="add `c' = …`"),
    Case("conv_left_not_weight.cell", TypeMismatchError, (12, 8),
         "the left side of `⋆` must be a conv weight, but `f` is computed by an equation",
         hint="for an elementwise product write `f ⊙ c`", notes=[(11, 3)]),
    Case("conv_weight_without_conv.cell", TypeMismatchError, (11, 24),
         "`W_hh` is a conv weight, not a tensor: it can only be applied with `⋆`", hint="`W_hh ⋆ …`",
         notes=[(9, 5)]),
    Case("prime_on_non_state.cell", TypeMismatchError, (8, 8),
         "`g'`: only a state has a next value, and `g` is not a state", hint="drop the `'`"),
    Case("prime_target_non_state.cell", TypeMismatchError, (7, 3),
         "`g'`: only a state has a next value, and `g` is not a state", hint="declare it (`state g[…]`)"),
    Case("missing_param.cell", ParamError, (3, 3),
         "param `in_channels` of MissingParam has no default and was not given", hint="in_channels=…"),
    # --- histories: `c[t-τ:t-1]` ------------------------------------------------------------------
    Case("history_of_gate.cell", TypeMismatchError, (9, 8),
         "only a state has past values, and `g` is computed by an equation",
         hint="declare `g` a state", notes=[(8, 3)]),
    Case("history_of_input.cell", TypeMismatchError, (7, 8), "only a state has past values, and `x` is an input",
         hint="give it a window: `input x[C] window T`", notes=[(4, 9)]),
    Case("history_empty.cell", CellgenSyntaxError, (7, 16),
         "a history ends at the previous step: `c[t-τ:t-1]`, not `t-2`",
         hint="the values of a state before t-1 are all in its history"),
    Case("history_wrong_variable.cell", CellgenSyntaxError, (7, 10),
         "a history is written `c[t-τ:t-1]`, with `t`, not `s`", hint="`t` is the current step"),
    Case("history_lengths_differ.cell", TypeMismatchError, (7, 8),
         "stacks of different lengths meet here: `c[t-2:t-1]` holds the last 2 values (fewer in the first "
         "steps), `c[t-3:t-1]` holds the last 3 values", hint="only ever matches a history of the same τ"),
    Case("none_param_as_channels.cell", ParamError, (5, 11), "param `tau` is none (unset) here, so it has no size",
         hint="only a history's length may be none"),
    # --- stacks and axes: stack, unstack, softmax/sum over=, cat/split along= ---------------------
    Case("softmax_of_map.cell", TypeMismatchError, (7, 8),
         "softmax over the stack needs a stack (a history `c[t-τ:t-1]` or `stack(…)`), but this is a single map",
         hint="`over=H`, `over=W`"),
    Case("sum_without_over.cell", ArityError, (8, 12), "`sum` needs `over=`: which axis",
         hint="`sum(…, over=stack)`"),
    Case("over_unknown_axis.cell", TypeMismatchError, (8, 24), "`over=` takes an axis: stack, C, T, H, W",
         hint="did you mean `stack`?"),
    Case("over_lowercase_axis.cell", TypeMismatchError, (7, 33), "`over=` takes an axis: stack, C, T, H, W",
         hint="did you mean `W`?"),
    Case("axis_t_in_2d.cell", TypeMismatchError, (7, 13), "axis T: this cell's maps have no time axis",
         hint="a cell is 3D when"),
    Case("cat_along_channels.cell", TypeMismatchError, (10, 17), "`cat` joins maps along T, H or W, not C",
         hint="[a, b] concatenates channels"),
    Case("split_along_stack.cell", TypeMismatchError, (7, 10), "`split` cuts a map along T, H or W, not stack",
         hint="`a, b = unstack(…)` takes a stack apart"),
    Case("unstack_not_unpacked.cell", TypeMismatchError, (8, 8), "`unstack(…)` makes several values: name them",
         hint="unpack it: `a, b = unstack(…)`"),
    Case("unstack_count_mismatch.cell", ArityError, (7, 3), "`stack(h, c)` has 2 entries, but 3 names receive them",
         hint="one name per entry: `a, b = unstack(…)`"),
    Case("unstack_history.cell", TypeMismatchError, (7, 3),
         "`unstack` needs a stack of a fixed length, but `c[t-2:t-1]` holds the last 2 values",
         hint="reduce a history with sum(…, over=stack)"),
    Case("stack_of_stack.cell", TypeMismatchError, (7, 8), "stack() of a stack: a value has at most one stack axis",
         hint="stack maps only"),
    Case("stack_lengths_differ.cell", TypeMismatchError, (7, 8),
         "stacks of different lengths meet here: `stack(h, c)` has 2 entries, `c[t-3:t-1]` holds the last 3 values",
         hint="stacks meet entry by entry"),
    Case("concat_stack_and_map.cell", TypeMismatchError, (10, 20),
         "[…] joins the channels of maps or of stacks, not of both", hint="unstack the stack first"),
    Case("next_state_stack.cell", TypeMismatchError, (7, 8),
         "`c'` is a stack, which holds the last 2 values (fewer in the first steps), but a state holds a single map",
         hint="`sum(…, over=stack)`"),
    Case("output_stack.cell", TypeMismatchError, (8, 8),
         "the cell's output `S` is a stack, but a cell outputs a single map", hint="`sum(…, over=stack)`"),
    Case("cat_size_mismatch.cell", TypeMismatchError, (12, 13),
         "maps of different sizes meet here: `A` is 2·W wide, `h` is W wide", hint="maps meet only at equal sizes"),
    Case("sum_kept_axis_next_state.cell", TypeMismatchError, (7, 8),
         "the next value of state `c` must be as large as `c`, but `c'` is 1 wide (a reduction over W keeps it "
         "at size 1)", hint="a reduction's result broadcasts back when it meets a full map: `x ⊙ sum(…, over=W)`"),
    Case("sum_over_c_next_state.cell", TypeMismatchError, (8, 8),
         "the next value of state `h` must have `h`'s 8 channels, but `h'` has 1 (a reduction over C keeps it at "
         "size 1)", hint="a reduction's result broadcasts back when it meets a full map: `x ⊙ sum(…, over=C)`"),
    Case("next_state_size.cell", TypeMismatchError, (8, 8),
         "the next value of state `h` must be as large as `h`, but `h'` is 2·W wide, `h` is W wide",
         hint="a state keeps its size from step to step"),
    Case("windows_differ.cell", TypeMismatchError, (10, 13),
         "maps of different sizes meet here: `W_x ⋆ x` is 2 frames long, `W_y ⋆ y` is 3 frames long",
         hint="the same window of frames"),
    # --- attention ------------------------------------------------------------------------------
    Case("attention_two_args.cell", ArityError, (7, 8), "`attention` takes 3 arguments, but 2 were given",
         hint="attention(queries, keys, values)"),
    Case("attention_patches_zero.cell", TypeMismatchError, (7, 35),
         "`patches=` takes a positive whole number, not `0`", hint="`patches=1` (the default)"),
    Case("attention_patches_tensor.cell", TypeMismatchError, (7, 35),
         "`patches=` takes a whole number fixed at compile time (a number or a param), but `x` is an input",
         hint="known only when the cell runs", notes=[(4, 9)]),
    Case("attention_patches_unknown.cell", UnknownSymbolError, (7, 35), "unknown symbol `s` in `patches=`",
         hint="a loop's variable is known only inside its loop"),
    Case("attention_kv_lengths.cell", TypeMismatchError, (7, 8),
         "stacks of different lengths meet here: `c[t-2:t-1]` holds the last 2 values (fewer in the first steps), "
         "`stack(h, c)` has 2 entries", hint="stacks meet entry by entry"),
    # --- convs: 3D kernels, `-> C`, multi-kernel shares and per-kernel inputs -----------------------
    Case("mixed_2d_3d.cell", ShapeError, (10, 5), "the cell mixes 2D and 3D convs",
         hint="all NCHW (2D kernels, `3×3`) or all NCTHW", notes=[(9, 5), (10, 5)]),
    Case("window_in_2d_cell.cell", ShapeError, (4, 9),
         "input `x` reads a window of 2 frames (NCTHW), but this cell's convs are 2D",
         hint="drop the `window`", notes=[(8, 5)]),
    Case("window_on_state.cell", TypeMismatchError, (6, 26), "state `h` has a window, but only an input has one",
         hint="drop it"),
    Case("conv_of_number.cell", TypeMismatchError, (10, 13), "`⋆` convolves maps, but `1` is a number",
         hint="an input, a state, or something computed from them"),
    Case("per_kernel_single_kernel.cell", TypeMismatchError, (10, 19),
         "`W_x` has one kernel, so it reads one input, not one per kernel",
         hint="declare it multi-kernel: `conv {3×3: …, 5×5: …}`", notes=[(8, 5)]),
    Case("per_kernel_unknown_kernel.cell", TypeMismatchError, (10, 28), "`W_x` has no 7×7 kernel",
         hint="its kernels: 3×3, 5×5", notes=[(8, 5)]),
    Case("per_kernel_missing_kernel.cell", TypeMismatchError, (10, 8),
         "nothing says what the 5×5 kernel of `W_x` reads", hint="add `5×5: …`", notes=[(8, 5)]),
    Case("per_kernel_twice.cell", RedefinitionError, (10, 28), "this says twice what the 3×3 kernel of `W_x` reads",
         hint="one entry per kernel"),
    Case("routing_as_tensor.cell", TypeMismatchError, (11, 23),
         "`X` says what each kernel of a multi-kernel conv reads, so it can only stand on the right of `⋆`",
         hint="`W ⋆ X`", notes=[(10, 3)]),
    Case("kernel_shares_mismatch.cell", ChannelMismatchError, (10, 13),
         "channel mismatch: `W_x ⋆ x` has 4 + 2 = 6 channels, but must have 8", notes=[(5, 9), (8, 17), (8, 32)]),
    Case("kernel_shares_twice.cell", RedefinitionError, (8, 32), "`W_x` lists its 3×3 kernel twice",
         hint="give each kernel size one share"),
    Case("kernel_shares_out_mismatch.cell", ChannelMismatchError, (8, 48),
         "`W` is declared with 6 outputs, but its kernels' shares add up to 8", hint="drop `-> …`"),
    Case("conv_out_mismatch.cell", ChannelMismatchError, (10, 8),
         "channel mismatch: `W ⋆ x + c` needs operands with equal channels, but `W ⋆ x` has 4 channels and `c` has 8",
         notes=[(8, 9), (5, 20)]),
    Case("size_not_divisible.cell", ParamError, (8, 22), "`hidden/3` is 8/3, which is not a whole number",
         hint="sizes split by `/` must divide exactly"),
    # --- LayerNorm ------------------------------------------------------------------------------
    Case("layernorm_as_tensor.cell", TypeMismatchError, (10, 17),
         "`LN` is a LayerNorm: apply it by calling it, `LN(…)`", notes=[(8, 5)]),
    Case("layernorm_two_args.cell", ArityError, (10, 13), "LayerNorm `LN` takes one argument, but 2 were given",
         notes=[(8, 5)]),
    Case("layernorm_over_unknown_axis.cell", TypeMismatchError, (8, 29),
         "`LN` normalises over `Q`, which is not an axis of a map", hint="the axes are C, T, H and W"),
    Case("layernorm_over_twice.cell", TypeMismatchError, (8, 10), "`LN` lists the axis `H` twice",
         hint="name each axis once"),
    Case("layernorm_over_t_in_2d.cell", TypeMismatchError, (8, 5),
         "`LN` normalises over T, but this cell's maps have no time axis", hint="a cell is 3D when",
         notes=[(10, 13)]),
    Case("layernorm_shape_and_over.cell", TypeMismatchError, (8, 10), "`LN`: give a shape or `over`, not both",
         hint="a shape normalises over the trailing axes it covers"),
    Case("layernorm_shape_channels.cell", ChannelMismatchError, (8, 10),
         "channel mismatch: `LN` is declared with shape [4, 16, 16], but the value it normalises has 8 channels "
         "and its shape has 4", notes=[(4, 9), (8, 10)]),
    Case("layernorm_shape_too_long.cell", TypeMismatchError, (8, 5),
         "`LN` has a shape of 4 axes, [8, 2, 16, 16], but this cell's maps have 3 (C, H, W)",
         hint="`layernorm [C, H, W]`", notes=[(10, 13)]),
    Case("layernorm_shared_widths.cell", ChannelMismatchError, (12, 15),
         "`LN` normalises values of 16 and 8 channels, but it has one gain and one bias",
         hint="give each its own LayerNorm", notes=[(11, 10)]),
    # --- unpacks ----------------------------------------------------------------------------------
    Case("unpack_glob_target.cell", CellgenSyntaxError, (10, 6), "an equation defines names, not a glob like `b_*`",
         hint="a glob (`W_x*`) only declares weights"),
    Case("split_uneven.cell", ShapeError, (10, 3),
         "`a, b, d` leaves 3 channels for 2 parts of equal width, which does not divide",
         hint="make the parts' widths known where they are used", notes=[(8, 9)]),
    # --- reductions, constants of params, histories of inputs and zero-started histories ------------
    Case("reduce_axis_twice.cell", TypeMismatchError, (6, 19), "`over=` lists the axis `H` twice",
         hint="name each axis once"),
    Case("reduce_unknown_axis.cell", TypeMismatchError, (6, 29), "`over=` takes axes: stack, C, T, H, W, not `w`",
         hint="did you mean `W`?"),
    Case("reduce_stack_and_axes.cell", TypeMismatchError, (6, 28),
         "`sum` over the stack and map axes at once is not supported", hint="reduce in two steps"),
    Case("mean_over_stack_of_map.cell", TypeMismatchError, (6, 12),
         "mean over the stack needs a stack", hint="name axes of the map: `over=(C, H, W)`"),
    Case("history_too_long.cell", TypeMismatchError, (6, 12),
         "`x[t-3:t-1]` reads 3 of input `x`, whose history is declared 2 long", hint="read at most 2",
         notes=[(4, 9)]),
    Case("history_state_without_init.cell", TypeMismatchError, (5, 27),
         "state `h` declares a history without saying how it starts", hint="`history τ init zeros`"),
    Case("history_input_init.cell", TypeMismatchError, (4, 9), "input `x`: `init zeros` is said of a state's history",
         hint="drop `init zeros`"),
    Case("constant_sqrt_negative.cell", TypeMismatchError, (6, 16),
         "`sqrt(1 - hidden)` is the square root of -3, a negative number", hint="check the params"),
    Case("split_equal_uneven.cell", ShapeError, (9, 3),
         "`a, _, _` leaves 10 channels for 3 parts of equal width, which does not divide",
         hint="make the total a multiple of 3", notes=[(7, 9)]),
    Case("discard_read.cell", TypeMismatchError, (9, 20), "`_` discards a chunk of an unpack: it has no value to read",
         hint="give the chunk a name in its unpack"),
    Case("discard_equation.cell", TypeMismatchError, (8, 3), "`_ = …` computes a value only to throw it away",
         hint="`_` discards a chunk among several"),
    Case("discard_all.cell", TypeMismatchError, (8, 3), "every target of this unpack is `_`",
         hint="name at least one chunk"),
    Case("discard_prime.cell", TypeMismatchError, (8, 6), "`_'`: `_` discards a chunk, so it has no next value",
         hint="write `_` among an unpack's targets"),
    Case("weight_primed_name.cell", CellgenSyntaxError, (8, 5), "`W'` is a state's next value, not a weight symbol",
         hint="such as `W_2`"),
    # --- blocks and `use` ---------------------------------------------------------------------------
    Case("block_wrong_arity.cell", ArityError, (12, 8), "block `G` takes 2 inputs (x, h), but 1 was given",
         notes=[(7, 3)]),
    Case("block_returns_three.cell", ArityError, (14, 3), "block `G` returns 3 values, but 2 names receive them",
         hint="`a, b, d = G(…)`", notes=[(11, 5)]),
    Case("block_unknown_name.cell", UnknownSymbolError, (8, 15), "unknown symbol `hiden_in` in block `G`",
         hint="did you mean `hidden_in`?"),
    Case("block_updates_state.cell", TypeMismatchError, (8, 5), "a block cannot update a state (`c'`)",
         hint="return the new value"),
    Case("block_in_expression.cell", TypeMismatchError, (12, 10), "block `G` is called inside an expression",
         hint="give its results names first"),
    Case("block_defined_twice.cell", RedefinitionError, (12, 3), "block `G` is defined twice",
         hint="rename one of them", notes=[(7, 3)]),
    Case("block_input_twice.cell", RedefinitionError, (7, 3), "block `G` names its input `x` twice",
         hint="give each input its own name"),
    Case("block_no_return.cell", CellgenError, (7, 3), "block `G` returns nothing", hint="`return a, b`"),
    Case("block_param_tensor.cell", TypeMismatchError, (15, 18),
         "`k=` sets a param of block `G`, a whole number fixed at compile time, but `x` is a tensor",
         hint="pass a number or a param: `k=3`"),
    Case("block_recursive.cell", CyclicDefinitionError, (8, 9), "block `G` calls itself",
         hint="never itself", notes=[(7, 3)]),
    Case("block_unknown_param.cell", UnknownSymbolError, (15, 16), "block `G` has no param `kernel`",
         hint="its params: k"),
    Case("return_outside_block.cell", CellgenSyntaxError, (8, 3), "unexpected `return`",
         hint="`return` ends a block", expected="`block`, `for`, `input`, `output`, `param`, `state`, `use`, "
         "`weights` or …"),
    Case("use_unknown_block.cell", UnknownSymbolError, (3, 3), "spec cms_lstm has no block `CEE`",
         hint="did you mean `CE`?"),
    Case("use_missing_spec.cell", SpecNotFoundError, (3, 3), "`use … from nosuchspec`: there is no spec `nosuchspec`",
         hint="name a shipped spec or a .cell file beside this one"),
    Case("use_and_define.cell", RedefinitionError, (8, 3), "block `CE` is defined twice", hint="rename one of them",
         notes=[(3, 3)]),
    # --- variants: `extends` ------------------------------------------------------------------------
    Case("extends_missing.cell", SpecNotFoundError, (2, 1),
         "spec ExtendsMissing names `convlstn`, but there is no such spec", hint="did you mean `convlstm`?"),
    Case("extends_cycle_a.cell", CyclicDefinitionError, (2, 1),
         "spec CycleA extends itself: CycleA → CycleB → CycleA", hint="must not extend the variant",
         notes=[(2, 1)]),
    Case("extends_cycle_b.cell", CyclicDefinitionError, (2, 1),
         "spec CycleB extends itself: CycleB → CycleA → CycleB", hint="must not extend the variant",
         notes=[(2, 1)]),
    Case("extends_self.cell", CyclicDefinitionError, (2, 1), "spec ExtendsSelf extends itself",
         hint="must not extend the variant"),
    Case("variant_partial_unpack.cell", RedefinitionError, (3, 3),
         "this replaces only part of the inherited `i_h, g_h, r_h, o_h = …`",
         hint="replace all of `i_h, g_h, r_h, o_h` in one unpack", notes=[(17, 3)]),
    # --- loops --------------------------------------------------------------------------------------
    Case("comprehension_undefined.cell", UnknownSymbolError, (13, 18), "unknown symbol `Y_4` (`Y_s` with s = 4)",
         hint="did you mean `Y_2`?"),
    Case("loop_empty.cell", CellgenSyntaxError, (7, 13), "unexpected `)`",
         hint="a loop runs over one or more whole numbers", expected="an integer"),
    Case("loop_not_integers.cell", CellgenSyntaxError, (7, 13), "`1.5` is not a whole number",
         hint="a loop runs over one or more whole numbers", expected="an integer"),
    Case("loop_without_end.cell", CellgenSyntaxError, (8, 19), "unexpected end of file",
         hint="close its body with `end`", expected="`end`, `for`, a name or glob (`W_x*`) or end of line",
         notes=[(7, 3)]),
    Case("loop_plain_name.cell", RedefinitionError, (8, 5),
         "`Y` would be defined 2 times, once on every pass of `for s …`", hint="name one value per pass: `Y_s`"),
    Case("loop_repeated_value.cell", RedefinitionError, (7, 3), "`for s in (1, 2, 1)` runs over 1 twice",
         hint="list each value once"),
    # --- the cell as a whole ------------------------------------------------------------------------
    Case("no_input.cell", CellgenError, (2, 1), "cell NoInput has no input", hint="`input x[C]`"),
    Case("output_twice.cell", RedefinitionError, (7, 3), "cell TwoOutputs declares its output twice",
         hint="name every output on one line, the first first: `output c', h'`", notes=[(6, 3)]),
    Case("output_duplicate.cell", RedefinitionError, (6, 21), "`delta` is output twice",
         hint="name each output once", notes=[(6, 14)]),
    Case("output_unknown.cell", UnknownSymbolError, (6, 14), "unknown symbol `delat`", hint="did you mean `delta`?"),
    Case("output_extra_stack.cell", TypeMismatchError, (8, 8),
         "the cell's output `c[t-2:t-1]` is a stack, but a cell outputs a single map", hint="`sum(…, over=stack)`"),
    # --- warnings -----------------------------------------------------------------------------
    Case("unused_gate.cell", CellgenWarning, (7, 3), "`o` is computed but never used",
         hint="use it, or delete its equation"),
    Case("unused_weight.cell", CellgenWarning, (10, 5), "weight declaration `W_c*` matches no symbol in any equation",
         hint="delete it"),
    # --- documented limits (cellgen/language/limits.py, docs/limits.md) ----------------------
    Case("limit_sum_1000_terms.cell", LimitError, (4, 3), "nests more than 200 deep", hint="equations of their own"),
    Case("limit_nested_calls_300.cell", LimitError, (4, 3), "nests more than 200 deep", hint="docs/limits.md"),
    Case("limit_minus_1000.cell", LimitError, (4, 3), "nests more than 200 deep", hint="docs/limits.md"),
    Case("limit_chain_1000.cell", LimitError, (505, 3), "cellgen reads at most 500", hint="a chain of equations"),
    Case("limit_int_5000_digits.cell", LimitError, (2, 13), "a number of 5,000 digits", hint="docs/limits.md"),
    Case("limit_float_overflow.cell", LimitError, (4, 8), "`1e999` is too large for a float", hint="finite"),
    Case("limit_eps_overflow.cell", LimitError, (5, 24), "`1e999` is too large for a float", hint="finite"),
    Case("lookalike_cyrillic.cell", UnknownSymbolError, (4, 8), "unknown symbol `х`"),
    # --- conv geometry and attention token layouts (docs/conv_modes.md, docs/attention_tokens.md) ---
    Case("conv_pad_unknown_word.cell", TypeMismatchError, (8, 22), "`pad vaild`: a padding is `same`, `valid`",
         hint="did you mean `valid`?"),
    Case("conv_pad_axes.cell", ArityError, (8, 20), "`W` has a 3-axis kernel (2×5×5), but `pad` gives 2 values",
         hint="`pad (…, …, …)`"),
    Case("conv_pad_twice.cell", RedefinitionError, (8, 24), "`W` says `pad` twice", hint="one `pad` per conv"),
    Case("conv_stride_word.cell", TypeMismatchError, (8, 25), "`stride same`: a stride is a whole number",
         hint="did you mean `pad same`?"),
    Case("conv_resize_mode.cell", TypeMismatchError, (8, 28), "the one resize mode is `nearest`",
         hint="`resize nearest`"),
    Case("conv_valid_state_size.cell", TypeMismatchError, (10, 8),
         "the next value of state `h` must be as large as `h`, but `h'` is H−2 high, `h` is H high",
         hint="`resize nearest` brings its result back"),
    Case("conv_valid_meets_same.cell", TypeMismatchError, (11, 13),
         "maps of different sizes meet here: `W_x ⋆ x` is 1 frame long, `W_h ⋆ h` is 2 frames long",
         hint="`resize nearest`"),
    Case("conv_stride_size.cell", TypeMismatchError, (11, 13),
         "`W_x ⋆ x` is H/2 high, `W_h ⋆ h` is H high", hint="or a stride"),
    Case("conv_geometry_multi_kernel.cell", TypeMismatchError, (8, 31),
         "`W` is a multi-kernel conv: its kernels keep \"same\" padding", hint="separate convs"),
    Case("attention_tokens_unknown.cell", TypeMismatchError, (7, 34),
         "`tokens=` takes a token layout: positions, reshape, not `rehsape`", hint="did you mean `reshape`?"),
    Case("attention_reshape_stack.cell", TypeMismatchError, (9, 8),
         "attention with tokens=reshape reads maps, but `c[t-tau:t-1]` is a stack",
         hint="`attention(q, cat(c[t-tau:t-1], along=C), …, tokens=reshape)`"),
    Case("cat_entries_of_map.cell", TypeMismatchError, (8, 21),
         "`cat(…, along=C)` joins the entries of a stack on channels, but `c` is a single map",
         hint="[a, b] joins the channels of maps"),
    Case("cat_entries_read_by_conv.cell", TypeMismatchError, (12, 21),
         "only the keys and values of `attention(…, tokens=reshape)` may read it", hint="tokens=reshape)`",
         notes=[(12, 17)]),
    Case("cat_one_map.cell", ArityError, (7, 13), "`cat` along W joins two or more maps, but 1 was given",
         hint="`cat(s, along=C)`"),
]


def _compile(name):
    return cellgen.compile(str(BAD / name))


def _diagnostic(case):
    """Compile the case's spec; return the error (or, for a warning case, the warning) it gives."""
    if issubclass(case.error, Warning):
        with pytest.warns(case.error) as record:
            _compile(case.file)
        found = [w.message for w in record if isinstance(w.message, case.error)]
        assert len(found) == 1, [str(w) for w in found]
        return found[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellgenWarning)
        with pytest.raises(case.error) as info:
            _compile(case.file)
    assert type(info.value) is case.error, type(info.value)
    return info.value


def test_every_corpus_file_has_a_case():
    assert sorted(c.file for c in CASES) == sorted(p.name for p in BAD.glob("*.cell"))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_corpus_diagnostic(case):
    diagnostic = _diagnostic(case).diagnostic
    assert (diagnostic.span.line, diagnostic.span.column) == case.at, diagnostic.render()
    assert diagnostic.span.source.name == str(BAD / case.file)
    assert case.message in diagnostic.message
    if case.hint is None:
        assert diagnostic.hint is None, diagnostic.hint
    else:
        assert diagnostic.hint and case.hint in diagnostic.hint, diagnostic.hint
    if case.expected is not None:
        assert diagnostic.expected == case.expected
    assert [(n.span.line, n.span.column) for n in diagnostic.related] == case.notes, diagnostic.render()


# --- the same through `cellgen check` -------------------------------------------------------

# One interpreter runs `cellgen check FILE` for every corpus file (`cellgen.cli.main`, as the
# executable does), so that torch is imported once, not once per file.
_CHECK_EACH = """
import contextlib, io, json, sys, traceback
from cellgen.cli import main
results = {}
for path in sys.argv[1:]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(["check", path])
        except BaseException:
            traceback.print_exc(file=err)
            status = "raised"
    results[path] = [status, err.getvalue()]
print(json.dumps(results))
"""


def _cli_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
    return env


def _assert_cli_diagnostic(case, status, stderr):
    """Exit 1 and the rendered diagnostic on stderr (exit 0 and a warning for a warning case);
    never a traceback."""
    path = BAD / case.file
    assert "Traceback" not in stderr, stderr
    severity = "warning" if issubclass(case.error, Warning) else "error"
    assert status == (0 if severity == "warning" else 1), (status, stderr)
    line, column = case.at
    assert stderr.startswith(f"{path}:{line}:{column}: {severity}: "), stderr
    assert case.message in stderr


def test_cellgen_check_reports_each_corpus_spec():
    paths = [str(BAD / case.file) for case in CASES]
    done = subprocess.run([sys.executable, "-c", _CHECK_EACH, *paths], env=_cli_env(), capture_output=True,
                          text=True, encoding="utf-8", timeout=600)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for case in CASES:
        _assert_cli_diagnostic(case, *results[str(BAD / case.file)])


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=str)
def test_cellgen_check_executable_on_corpus_spec(case):
    """The real executable, one process per file (torch is imported each time: slow)."""
    exe = shutil.which("cellgen")
    command = [exe] if exe else [sys.executable, "-m", "cellgen"]
    done = subprocess.run([*command, "check", str(BAD / case.file)], env=_cli_env(), capture_output=True,
                          text=True, encoding="utf-8", timeout=300)
    _assert_cli_diagnostic(case, done.returncode, done.stderr)


# --- the rendered layout ------------------------------------------------------------------

def _check_layout(rendered: str, path: str, source_text: str, severity: str = "error"):
    """Head line `path:L:C: severity: …`, then the source line L, then a caret under column C."""
    lines = rendered.splitlines()
    head = re.match(rf"^{re.escape(path)}:(\d+):(\d+): {severity}: ", lines[0])
    assert head, lines[0]
    line, column = int(head.group(1)), int(head.group(2))
    source_lines = source_text.splitlines()
    offending = source_lines[line - 1] if line <= len(source_lines) else ""
    assert re.fullmatch(r" *\t* *\^+", lines[2]), lines[2]
    if len(offending) > 160:  # a very long line is shown around the caret (errors.Span.excerpt)
        shown, caret = lines[1][4:], lines[2].index("^") - 4
        assert shown.strip("…") in offending and shown[caret:caret + 8] == offending[column - 1:column + 7], lines[:3]
        return line, column
    assert lines[1] == "    " + offending, (lines[1], offending)
    assert lines[2].index("^") - 4 + 1 == column, lines[:3]
    return line, column


@pytest.mark.parametrize("case", CASES, ids=str)
def test_rendered_corpus_diagnostic_has_compiler_layout(case):
    found = _diagnostic(case)
    path = BAD / case.file
    severity = "warning" if issubclass(case.error, Warning) else "error"
    rendered = str(found)
    assert rendered == found.diagnostic.render()
    assert _check_layout(rendered, str(path), path.read_text(encoding="utf-8"), severity) == case.at
    # Every note renders the same way, with the line it points at (in this file, or in the spec it
    # extends or borrows from).
    for note in found.diagnostic.related:
        assert f"{note.span.source.name}:{note.span.line}:{note.span.column}: note: " in rendered
        assert "    " + note.span.source.line(note.span.line) in rendered


def test_channel_mismatch_points_at_both_declarations():
    with pytest.raises(ChannelMismatchError) as info:
        _compile("channel_mismatch.cell")
    rendered = info.value.render()
    assert "channel_mismatch.cell:6:9: note: 4 channels: state `c` is declared with 4" in rendered
    assert "channel_mismatch.cell:4:9: note: 8 channels: input `x` is declared with 8" in rendered
    assert "    state c[4]" in rendered and "    input x[hidden]" in rendered


# --- syntax errors speak in words ----------------------------------------------------------

def _raw_terminal_names():
    return {t.name for t in _lark().terminals} | {"$END"}


def _assert_no_raw_names(error: CellgenSyntaxError):
    words = " ".join(filter(None, [error.diagnostic.message, error.diagnostic.expected, error.diagnostic.hint]))
    assert "__ANON" not in words and "$END" not in words, words
    for name in _raw_terminal_names():
        assert not re.search(rf"(?<![\w`]){re.escape(name)}(?![\w`])", words), (name, words)


@pytest.mark.parametrize("case", [c for c in CASES if c.error is CellgenSyntaxError], ids=str)
def test_syntax_errors_name_expected_tokens_in_words(case):
    with pytest.raises(CellgenSyntaxError) as info:
        _compile(case.file)
    _assert_no_raw_names(info.value)
    assert "__ANON" not in info.value.render() and "_NL" not in info.value.render()


@pytest.mark.parametrize("text,message,hint", [
    ("cell A\n  parm k = 5\n", "unexpected name `k`", "did you mean `param`?"),
    ("cell A\n  wieghts\n    W : conv 3x3\n", "unexpected end of line", "did you mean `weights`?"),
    ("cell A\n  state h[3] zigzg\n", "unexpected name `zigzg`", "did you mean `zigzag`?"),
    ("cell A\n  weights\n    W : cnv 3x3\n", "unexpected name `cnv`", "did you mean `conv`?"),
    ("cell A\n  c' = f ⊙ c @ h\n", "unexpected character `@`", "matrix products"),
    ("cell A\n  state h[2.5]\n", "`2.5` is not a whole number", "channel counts, kernel sizes and shapes"),
    ("", "unexpected end of file", None),
    ("cell A\n  h' = tanh(c'))\n", "unexpected `)`", "this `)` closes no `(`"),
    ("cell A\n  h' = tanh(\n    c']\n", "unexpected `]`", "close it with `)`"),
])
def test_syntax_error_messages(text, message, hint):
    with pytest.raises(CellgenSyntaxError) as info:
        parse(text, "t.cell")
    assert info.value.message == message
    assert info.value.hint == hint or (hint and hint in info.value.hint)
    _assert_no_raw_names(info.value)
    _check_layout(info.value.render(), "t.cell", text)


_SHIPPED_TEXTS = [p.read_text(encoding="utf-8") for p in shipped_specs().values()]
# Every shipped spec, the seed cells' (blocks, loops, histories, multi-kernel convs, LayerNorms,
# variants) among them, and the corpus, whose specs use each construct near its mistake.
_FUZZ_TEXTS = _SHIPPED_TEXTS + [p.read_text(encoding="utf-8") for p in sorted(BAD.glob("*.cell"))]
# Single characters, and the words and fragments of the language's newer constructs.
_INSERTS = list("()[]{},=:*'+-/x#\"⋆⊙σ@$\n 1.e·>") + [
    "none", "window ", "->", " end", "for ", "block ", "return ", "use ", " from ", "over ", "eps ", "t-",
    ":t-1", "stack", "over=", "along=", "patches=", "3×3", "2×5×5", "{3×3: ", "layernorm ", "extends "]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_broken_shipped_specs_give_well_formed_syntax_errors(data):
    """Delete, insert or swap one character of a shipped spec (or a corpus spec), or insert a
    keyword, or cut it short: if that breaks the syntax, the error is a CellgenSyntaxError in
    words, with the compiler layout."""
    text = data.draw(st.sampled_from(_FUZZ_TEXTS))
    at = data.draw(st.integers(0, len(text) - 1))
    edit = data.draw(st.sampled_from(["delete", "insert", "swap", "cut"]))
    if edit == "delete":
        broken = text[:at] + text[at + 1:]
    elif edit == "insert":
        broken = text[:at] + data.draw(st.sampled_from(_INSERTS)) + text[at:]
    elif edit == "swap":
        broken = text[:at] + text[at + 1:at + 2] + text[at] + text[at + 2:]
    else:
        broken = text[:at]
    try:
        parse(broken, "broken.cell")
    except CellgenSyntaxError as error:
        _assert_no_raw_names(error)
        _check_layout(error.render(), "broken.cell", broken)


# The words a semantic mutation swaps in: names the specs use, axes, functions, keywords, numbers.
_WORDS = ["none", "stack", "C", "T", "H", "W", "Q", "t", "s", "x", "h", "c", "c'", "m'", "hidden", "tau", "S",
          "softmax", "sum", "stack", "unstack", "split", "cat", "attention", "σ", "LN_c", "LN_A", "W_x", "W_1x1",
          "CE", "SE", "b_i", "0", "1", "2", "3", "2.5", "1e-12"]
_TOKEN = re.compile(r"[^\W\d]\w*'?|\d+(?:\.\d+)?")


def _mutate(data, text: str) -> str:
    """One edit that keeps the text mostly well-formed, so that it reaches resolution and
    lowering: a line deleted, repeated or moved down one; a name or number replaced by another
    of the spec's own or by a word of the language; a word inserted after one."""
    lines = text.split("\n")
    edit = data.draw(st.sampled_from(["delete", "repeat", "move", "replace", "replace", "insert", "deepen", "widen",
                                      "huge"]))
    at = data.draw(st.integers(0, len(lines) - 1))
    if edit == "delete":
        return "\n".join(lines[:at] + lines[at + 1:])
    if edit == "repeat":
        return "\n".join(lines[:at + 1] + lines[at:])
    if edit == "move":
        return "\n".join(lines[:at] + lines[at + 1:at + 2] + lines[at:at + 1] + lines[at + 2:])
    tokens = list(_TOKEN.finditer(text))
    token = tokens[data.draw(st.integers(0, len(tokens) - 1))]
    word = data.draw(st.sampled_from(sorted({t.group() for t in tokens}) + _WORDS))
    if edit in ("deepen", "widen", "huge"):  # past the documented limits (cellgen/language/limits.py)
        n = data.draw(st.integers(100, 1200))
        grown = {"deepen": "tanh(" * n + token.group() + ")" * n, "widen": " + ".join([token.group()] * n),
                 "huge": data.draw(st.sampled_from(["1e999", "9" * 5000, "1" * 400 + ".5", str(10 ** 12)]))}[edit]
        return text[:token.start()] + grown + text[token.end():]
    if edit == "replace":
        return text[:token.start()] + word + text[token.end():]
    return text[:token.end()] + " " + word + text[token.end():]


# The shipped specs with a default for every param, so that a mutant compiles as far as it can.
_SEMANTIC_TEXTS = [re.sub(r"^(\s*param in_channels)\s*$", r"\1 = 3", text, flags=re.M) for text in _SHIPPED_TEXTS]


def test_lookalikes_are_named_in_the_corpus():
    with pytest.raises(UnknownSymbolError) as caught:
        lower(load_spec(str(BAD / "lookalike_cyrillic.cell")).resolved, {})
    assert "U+0445 CYRILLIC SMALL LETTER HA, which looks like `x`" in caught.value.render()


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_specs_fail_only_with_diagnostics(data):
    """Mutate a shipped spec (one or two edits of lines and words) and compile it as far as
    cellgen.compile does before codegen (parse, resolve variants and blocks, lower): it either
    compiles or raises a CellgenError that renders with the compiler layout; never another
    exception (KeyError, RecursionError, a pydantic or torch error)."""
    text = data.draw(st.sampled_from(_SEMANTIC_TEXTS))
    for _ in range(data.draw(st.integers(1, 2))):
        text = _mutate(data, text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CellgenWarning)
        try:
            resolved = load_spec(text).resolved
            # A variant's parent is a shipped spec, whose `in_channels` has no default.
            lower(resolved, {p.name: 3 for p in resolved.params if p.name == "in_channels" and p.default is None})
        except CellgenError as error:
            rendered = error.render()
            assert "Traceback" not in rendered
            if error.span is not None and error.span.source.name == "<string>":
                _check_layout(rendered, "<string>", text)


# --- params --------------------------------------------------------------------------------

CONV = BAD.parent.parent / "specs" / "convlstm.cell"


@pytest.mark.parametrize("params,message,hint", [
    (dict(in_channels=3, hiden=8), "ConvLSTM has no param `hiden`", "did you mean `hidden`?"),
    (dict(in_channels=3, kernel=3), "ConvLSTM has no param `kernel`",
     "the params of ConvLSTM are: in_channels, hidden, k"),
    (dict(in_channels=3, hidden=2.5), "param `hidden` must be a whole number, not 2.5", None),
    (dict(in_channels="three"), "param `in_channels` must be a whole number, not 'three'", None),
    (dict(in_channels=True), "param `in_channels` must be a whole number, not True", None),
])
def test_bad_param_values(params, message, hint):
    for spec in ("convlstm", str(CONV), CONV.read_text(encoding="utf-8")):
        with pytest.raises(ParamError) as info:
            cellgen.compile(spec, **params)
        assert info.value.message == message
        assert info.value.hint == hint


def test_missing_param_points_at_its_declaration():
    with pytest.raises(ParamError) as info:
        cellgen.compile(CONV.read_text(encoding="utf-8"), hidden=8)
    assert info.value.message == "param `in_channels` of ConvLSTM has no default and was not given"
    assert (info.value.span.line, info.value.span.column) == (4, 3)
    assert info.value.span.source.name == "<string>"
    assert "cellgen.compile(..., in_channels=…)" in info.value.hint
    _check_layout(info.value.render(), "<string>", CONV.read_text(encoding="utf-8"))


def test_good_params_compile():
    cell = cellgen.compile(str(BAD / "missing_param.cell"), in_channels=3, hidden="8")
    assert isinstance(cell, cellgen.CellModule)
