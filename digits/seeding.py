"""Seeded random streams keyed by name, shared by the stages that draw pictures (negatives, robustness)."""

from __future__ import annotations

import zlib

import numpy as np


def generator(seed: int, *keys: str) -> np.random.Generator:
    """A SeedSequence child keyed by names (a split, a family, a corruption), not by position: adding,
    removing or reordering the others never changes its draws."""
    return np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=tuple(zlib.crc32(k.encode()) for k in keys))
    )
