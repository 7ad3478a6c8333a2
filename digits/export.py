"""Export the trained Keras model to TFLite, the file the server runs with LiteRT instead of TensorFlow.

`export_bundle` writes the serving bundle, a folder of model.tflite and model.json (its sha256, the number
of classes, its outputs on fixed probe pictures), which digits.runtime checks before serving the file.

Keras 3's `model.export(dir)` writes a SavedModel whose signature keeps the model's input shape
(None, 28, 28, 1) float32, so the .tflite file takes any batch size; `TFLiteConverter.from_saved_model`
converts it (batch norm folds into the convolutions). No quantisation or other optimisation: the float32
kernels agree with Keras to ~1e-6 in every probability. Every export is checked against Keras before it
is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digits import DigitsError
from digits.files import atomic_path
from digits.runtime import BUNDLE_META, BUNDLE_MODEL, LiteRTPredictor, probe_images
from digits.shapes import NUM_CLASSES

TOLERANCE = 1e-4  # largest |probability difference| from Keras that an export may have


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


def max_difference(model, tflite_path: str | Path, images: np.ndarray) -> float:
    """Largest |probability difference| between the Keras model and the .tflite file (run by LiteRT)."""
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


def export_bundle(model_path: str | Path, out_dir: str | Path) -> Export:
    """The serving bundle for the .keras file: out_dir/model.tflite (checked as export_tflite does) and
    out_dir/model.json. Written in a temp folder beside out_dir, then moved into place whole."""
    model_path, out_dir = Path(model_path), Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}-", dir=out_dir.parent) as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        result = export_tflite(model_path, staging / BUNDLE_MODEL)
        data = result.path.read_bytes()
        probes = LiteRTPredictor(result.path)(probe_images())
        meta = {
            "format": 1,
            "classes": NUM_CLASSES,
            "input": "float32 (n, 28, 28, 1) in [0, 1], white ink on black, MNIST-centred (digits.drawing)",
            "files": {BUNDLE_MODEL: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}},
            "source": {model_path.name: {"sha256": hashlib.sha256(model_path.read_bytes()).hexdigest()}},
            "probes": {
                "images": "digits.runtime.probe_images()",
                "probabilities": np.round(probes.astype(np.float64), 7).tolist(),
            },
            "max_difference_from_keras": result.max_difference,
        }
        (staging / BUNDLE_META).write_text(json.dumps(meta, indent=1) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    return Export(out_dir / BUNDLE_MODEL, len(data), result.max_difference)
