"""Export the trained Keras model to TFLite, the file the server runs with LiteRT instead of TensorFlow.

Keras 3's `model.export(dir)` writes a SavedModel whose signature keeps the model's input shape
(None, 28, 28, 1) float32, so the .tflite file takes any batch size; `TFLiteConverter.from_saved_model`
converts it (batch norm folds into the convolutions). No quantisation or other optimisation: the float32
kernels agree with Keras to ~1e-6 in every probability. Every export is checked against Keras before it
is written.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digits import DigitsError
from digits.files import atomic_path

TOLERANCE = 1e-4  # largest |probability difference| from Keras that an export may have
PROBES = 64  # synthetic pictures the check runs through both models


@dataclass(frozen=True)
class Export:
    path: Path
    size: int  # bytes
    max_difference: float  # largest |probability difference| from Keras on the probe pictures


def convert(model) -> bytes:  # a keras.Model; untyped so this module imports without Keras
    """The model as a float32 TFLite flatbuffer, converted through a SavedModel."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="digits-export-") as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(tmp).convert()


def probe_images(n: int = PROBES, seed: int = 0) -> np.ndarray:
    """Deterministic (n, 28, 28) float32 pictures in [0, 1]: blank, full, and mostly dark noise."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, 28, 28), dtype=np.float32) ** 4  # MNIST-like: mostly near 0, some ink
    images[0], images[1] = 0, 1
    return images


def max_difference(model, tflite_path: str | Path, images: np.ndarray) -> float:
    """Largest |probability difference| between the Keras model and the .tflite file (run by LiteRT)."""
    from digits.runtime import LiteRTPredictor

    expected = np.asarray(model(images[..., None], training=False))
    return float(np.abs(LiteRTPredictor(Path(tflite_path))(images) - expected).max())


def export_tflite(model_path: str | Path, out_path: str | Path) -> Export:
    """Convert the .keras file at model_path to out_path, atomically, after checking it against Keras."""
    from digits.models import load_model

    model = load_model(model_path)
    data = convert(model)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(data)
        difference = max_difference(model, tmp, probe_images())
        if not difference <= TOLERANCE:  # also catches NaN
            raise DigitsError(
                f"{out_path}: the TFLite export differs from {model_path} by {difference:.2g} in a "
                f"probability (allowed: {TOLERANCE:g}); not written"
            )
    return Export(out_path, len(data), difference)
