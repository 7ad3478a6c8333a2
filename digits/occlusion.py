"""Why the model answered what it did: an occlusion map over its 28x28 input.

A black patch slides over the input; where covering the picture lowers the answered digit's probability
most, the model looked. All the occluded copies go through the model as one batch (144 pictures for the
default 6x6 patch every 2 pixels: a few milliseconds at int8 speed).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from digits.shapes import SIDE

PATCH = 6  # pixels a side: about a stroke's width in MNIST's 20x20 box, so one patch can hide a stroke
STRIDE = 2


def occlusion_map(
    probabilities: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    digit: int,
    patch: int = PATCH,
    stride: int = STRIDE,
) -> np.ndarray:
    """float32 (28, 28): per pixel, the mean drop of `digit`'s probability over the patches covering it.

    `probabilities`: (n, 28, 28) -> (n, classes). Positive where the ink supports the answer, negative where
    hiding it would make the answer likelier; exactly 0 where no patch covering the pixel touches ink (a
    black patch on black changes nothing).
    """
    starts = range(0, SIDE - patch + 1, stride)
    corners = [(r, c) for r in starts for c in starts]
    batch = np.repeat(np.asarray(image, np.float32)[None], len(corners) + 1, axis=0)
    for i, (r, c) in enumerate(corners, start=1):
        batch[i, r : r + patch, c : c + patch] = 0
    p = np.asarray(probabilities(batch), np.float64)[:, digit]
    drop = np.zeros((SIDE, SIDE))
    covered = np.zeros((SIDE, SIDE))
    for (r, c), change in zip(corners, p[0] - p[1:], strict=True):
        drop[r : r + patch, c : c + patch] += change
        covered[r : r + patch, c : c + patch] += 1
    return (drop / covered).astype(np.float32)
