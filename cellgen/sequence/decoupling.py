"""PredRNN-V2's decoupling loss (Wang et al., TPAMI 2022), as OpenSTL's PredRNNv2_Model takes it.

PredRNN-V2 wants the two memories of its cell, c (temporal) and m (spatiotemporal), to learn
different things. Its cell returns their increments at each step, delta_c = i ⊙ g and
delta_m = i' ⊙ g' (`output h', delta_c, delta_m` in specs/predrnnv2.cell); the model maps
both through one shared bias-free 1×1 conv, the `adapter` (C → C, C the bottom layer's
hidden channels, used at every layer), and penalises their cosine similarity per channel:

    a = normalize(adapter(delta_c) as (B, C, H·W), over H·W)      likewise b for delta_m
    term(layer, step) = mean over (B, C) of |cos(a, b)|            (cos over H·W)
    decoupling loss   = mean of the terms over every layer and every step of the rollout

and trains on MSE + β · decoupling loss. OpenSTL normalises before `cosine_similarity`, which
normalises again; both are kept, so a zero increment (a zero vector) gives 0 as there.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

INCREMENTS = ("delta_c", "delta_m")   # the outputs the loss reads, by their names in the spec


def has_increments(cell) -> bool:
    """Whether a compiled cell outputs both memory increments (`output h', delta_c, delta_m`)."""
    return all(name in getattr(cell, "extra_outputs", ()) for name in INCREMENTS)


def make_adapter(cell) -> Optional[nn.Conv2d]:
    """OpenSTL's shared adapter for a stack whose bottom layer is `cell`, or None if its cell
    has no increments (or is not 2D: the adapter is a 2D 1×1 conv)."""
    if not has_increments(cell) or cell.cell_graph.spatial_dims != 2:
        return None
    graph = cell.cell_graph
    channels = graph[graph.extra_outputs["delta_c"]]["channels"]
    return nn.Conv2d(channels, channels, 1, bias=False)


def decoupling_term(adapter: nn.Module, delta_c: torch.Tensor, delta_m: torch.Tensor) -> torch.Tensor:
    """One layer at one step: the mean over batch and channels of |cos| between the adapted increments."""
    batch, channels = delta_c.shape[:2]
    a = F.normalize(adapter(delta_c).reshape(batch, channels, -1), dim=2)
    b = F.normalize(adapter(delta_m).reshape(batch, channels, -1), dim=2)
    return torch.cosine_similarity(a, b, dim=2).abs().mean()


def step_terms(adapter: nn.Module, layer_outputs: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """The terms of one step, one per layer with increments (in OpenSTL's model, every layer),
    all through the one adapter."""
    return [decoupling_term(adapter, outputs["delta_c"], outputs["delta_m"]) for outputs in layer_outputs
            if all(name in outputs for name in INCREMENTS)]
