"""What every part agrees on: digits are uint8 28x28 images of 10 classes, and how a model takes them.

NumPy only, so the server and the benchmarks use the same definitions without scikit-learn or TensorFlow.
"""

from __future__ import annotations

import numpy as np

SIDE = 28
NUM_CLASSES = 10


def check_uint8_digits(
    x: np.ndarray, what: str, lead: int = 1, error: type[Exception] = ValueError
) -> np.ndarray:
    """x as an array if it is uint8 digits, shape (n, 28, 28) (lead=1) or (copies, n, 28, 28) (lead=2).

    Otherwise raises `error` naming `what` and what was found.
    """
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != lead + 2 or x.shape[-2:] != (SIDE, SIDE):
        want = "(n, 28, 28)" if lead == 1 else "(copies, n, 28, 28)"
        raise error(f"{what}: expected uint8 digits {want}, got {x.dtype} {x.shape}")
    return x


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 digits (..., 28, 28) or (..., 784) -> float32 (..., 28, 28, 1) in [0, 1] (x / 255)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels 0..255, got {images.dtype}")
    if images.shape[-1:] == (SIDE * SIDE,):
        lead = images.shape[:-1]
    elif images.shape[-2:] == (SIDE, SIDE):
        lead = images.shape[:-2]
    else:
        raise ValueError(f"expected digits of shape (..., 28, 28) or (..., 784), got {images.shape}")
    scaled = np.divide(images, np.float32(255), dtype=np.float32)
    return scaled.reshape(*lead, SIDE, SIDE, 1)


def one_hot(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Integer labels (n,) -> float32 (n, num_classes) with a single 1 per row."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    return np.eye(num_classes, dtype=np.float32)[labels.astype(np.intp)]
