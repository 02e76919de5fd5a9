"""Random generators that depend only on the numbers they are named by.

Sequence i of a dataset, the batch order of epoch e, the scheduled-sampling coins of step s:
each comes from its own `torch.Generator`, seeded by a hash of (purpose, seed, …), so any
process can draw it at any time, in any order, and get the same numbers.
"""
from __future__ import annotations

import hashlib

import torch


def seeded_generator(*key: object) -> torch.Generator:
    """A CPU generator seeded by a 63-bit hash of `key` (e.g. ("moving-digits", seed, split, i))."""
    digest = hashlib.blake2b(repr(key).encode("utf-8"), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2 ** 63 - 1))
