"""Export the trained Keras model to TFLite, the files the server runs with LiteRT instead of TensorFlow.

`export_bundle` writes the serving bundle, a folder of model.tflite (float32), model_int8.tflite (int8, when
its parity holds) and model.json (each file's sha256 and outputs on fixed probe pictures, the number of
classes, the int8 file's parity figures), which digits.runtime checks before serving a file.

Keras 3's `model.export(dir)` writes a SavedModel whose signature keeps the model's input shape
(None, 28, 28, 1) float32, so the .tflite files take any batch size; `TFLiteConverter.from_saved_model`
converts it (batch norm folds into the convolutions). The float32 file has no quantisation: its kernels
agree with Keras to ~1e-6 in every probability, checked on every export. The int8 file is LiteRT's
full-integer post-training quantisation (int8 weights per channel, int8 activations whose ranges come from
a seeded draw of training digits and non-digits), with float32 input and output tensors so that callers do
not change. It joins the bundle only when its parity with the float32 file (`Parity.problems`) holds on the
validation digits and non-digits; its parity on the test digits is reported, never decided on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from digits import DigitsError
from digits.confidence import Calibration
from digits.files import atomic_path
from digits.params import ExportParams
from digits.runtime import (
    BUNDLE_INT8,
    BUNDLE_META,
    BUNDLE_MODEL,
    FORMATS,
    LiteRTPredictor,
    Predictor,
    probe_images,
)
from digits.shapes import NUM_CLASSES, to_model_input

TOLERANCE = 1e-4  # largest |probability difference| from Keras that the float32 export may have
FORMAT = FORMATS[-1]  # of model.json; 1 had one file and its probe outputs at the top level
CHUNK = 256  # test digits per LiteRT call: the whole split at once would need ~1 GB of activations

Accept = Callable[[np.ndarray], np.ndarray]  # (n, 10) probabilities -> (n,) bool: answered, not rejected


@dataclass(frozen=True)
class Export:
    path: Path
    size: int  # bytes
    max_difference: float  # largest |probability difference| from Keras on the probe pictures


@dataclass(frozen=True)
class ParitySet:
    """Pictures both files answer: labelled digits, then non-digits (for the accept/reject decisions)."""

    digits: np.ndarray  # uint8 (n, 28, 28), as the server prepares them
    labels: np.ndarray
    non_digits: np.ndarray | None = None  # uint8 (m, 28, 28)

    def images(self) -> np.ndarray:
        parts = [self.digits] if self.non_digits is None else [self.digits, self.non_digits]
        return to_model_input(np.concatenate(parts))


@dataclass(frozen=True)
class Int8Inputs:
    """What the int8 file is calibrated on, decided on and reported on."""

    representative: np.ndarray  # uint8 (n, 28, 28) training pictures whose activations set the int8 ranges
    decide: ParitySet  # validation pictures: the int8 file ships only if its parity holds here
    report: ParitySet  # test pictures: parity reported, never decided on (the test set is for reporting)
    params: ExportParams
    # Once the model can reject ("not a digit"), its decision: the int8 file should make the same ones.
    accept: Accept | None = None


@dataclass(frozen=True)
class Parity:
    """The int8 file against the float32 one on one set of pictures."""

    digits: int
    changed: int  # predictions (argmax) on the digits that differ
    accuracy_float32: float
    accuracy_int8: float
    pictures: int = 0  # digits + non-digits whose accept/reject decisions are compared
    decisions_changed: int | None = None  # None without a decision

    def problems(self, params: ExportParams) -> list[str]:
        """Each figure past its limit (params' export.* keys, shares of the pictures), in words."""
        found = []
        if self.changed > params.int8_max_changed * self.digits + 1e-9:
            found.append(
                f"it changes {self.changed} of {self.digits} predictions "
                f"(export.int8_max_changed: {params.int8_max_changed:.2%} of them)"
            )
        drop = self.accuracy_float32 - self.accuracy_int8
        if abs(drop) > params.int8_max_accuracy_change + 1e-9:  # the figures are multiples of 1/digits
            found.append(
                f"its accuracy is {self.accuracy_int8:.2%} against float32's {self.accuracy_float32:.2%}, "
                f"{abs(drop) * 100:.2f} points apart (export.int8_max_accuracy_change: "
                f"{params.int8_max_accuracy_change * 100:.2f} points)"
            )
        limit = params.int8_max_decisions_changed * self.pictures
        if self.decisions_changed and self.decisions_changed > limit + 1e-9:
            found.append(
                f"it accepts or rejects {self.decisions_changed} of {self.pictures} pictures otherwise "
                f"(export.int8_max_decisions_changed: {params.int8_max_decisions_changed:.2%} of them)"
            )
        return found


@dataclass(frozen=True)
class Bundle:
    float32: Export
    int8: Path | None  # None: exported without Int8Inputs, or its parity failed (int8_refused says why)
    int8_size: int
    parity: Parity | None  # on the validation pictures (what decided)
    test_parity: Parity | None  # on the test pictures (reported)
    int8_refused: str | None = None


def _saved_model(model, directory: str) -> None:
    model.export(directory, format="tf_saved_model", verbose=False)


def convert(model) -> bytes:  # a keras.Model; untyped so this module imports without Keras
    """The model as a float32 TFLite flatbuffer, converted through a SavedModel."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="digits-export-") as tmp:
        _saved_model(model, tmp)
        return tf.lite.TFLiteConverter.from_saved_model(tmp).convert()


def representative_pictures(
    digits: np.ndarray, non_digits: np.ndarray | None, params: ExportParams
) -> np.ndarray:
    """The int8 file's calibration pictures (uint8): a seeded draw of `params.representative` training
    digits plus `params.representative_non_digits` training non-digits (all of them if fewer)."""
    rng = np.random.default_rng(params.seed)
    parts = [digits[np.sort(rng.permutation(len(digits))[: params.representative])]]
    if non_digits is not None and params.representative_non_digits:
        parts.append(
            non_digits[np.sort(rng.permutation(len(non_digits))[: params.representative_non_digits])]
        )
    return np.concatenate(parts)


def convert_int8(model, representative: np.ndarray) -> bytes:
    """The model as a full-integer TFLite flatbuffer: int8 weights and activations, activation ranges
    calibrated on `representative` (float32 (n, 28, 28, 1)), float32 input and output.

    The softmax stays float32 (fed by the dequantised int8 logits): quantised, its output would be a
    multiple of 1/256, too coarse for the probabilities the page shows and for a calibrated threshold; it
    costs nothing measurable (benchmarks/README.md). So do the reshapes and the slice that drop a "not a
    digit" column after it (digits.models.digit_outputs): quantised, they would round the probabilities
    again; the body's one reshape (Flatten) goes float with them, also unmeasurable (90k images/s either
    way in batches of 256). Float32 input and output: a quantise and a dequantise op
    of 784 and 10 values, also unmeasurable, and callers see the same tensors as with the float32 file.
    """
    import warnings

    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="digits-export-") as tmp:
        _saved_model(model, tmp)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: ([x[None]] for x in representative)  # one digit a step
        # Selective quantisation is the quantisation debugger's documented way to keep an op in float.
        options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_ops=["SOFTMAX", "RESHAPE", "STRIDED_SLICE"]
        )
        with warnings.catch_warnings():  # it builds TensorFlow's deprecated tf.lite.Interpreter, unused here
            warnings.simplefilter("ignore", UserWarning)
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=lambda: iter(()), debug_options=options
            )
            return debugger.get_nondebug_quantized_model()


def max_difference(model, tflite_path: str | Path, images: np.ndarray) -> float:
    """Largest |probability difference| between the Keras model and the .tflite file (run by LiteRT)."""
    expected = np.asarray(model(images[..., None], training=False))
    return float(np.abs(LiteRTPredictor(Path(tflite_path))(images) - expected).max())


def predict_all(predictor: Predictor, images: np.ndarray) -> np.ndarray:
    """(n, 10) probabilities for float32 (n, 28, 28[, 1]) images, CHUNK at a time."""
    return np.concatenate([predictor(images[i : i + CHUNK]) for i in range(0, len(images), CHUNK)])


def int8_parity(
    float32: np.ndarray, int8: np.ndarray, labels: np.ndarray, accept: Accept | None = None
) -> Parity:
    """Compare the two files' probabilities on the same pictures: the first len(labels) are digits."""
    n = len(labels)
    return Parity(
        digits=n,
        changed=int((float32[:n].argmax(1) != int8[:n].argmax(1)).sum()),
        accuracy_float32=float((float32[:n].argmax(1) == labels).mean()),
        accuracy_int8=float((int8[:n].argmax(1) == labels).mean()),
        pictures=len(float32),
        decisions_changed=None if accept is None else int((accept(float32) != accept(int8)).sum()),
    )


def _parity(float32: Path, int8: Path, pictures: ParitySet, accept: Accept | None) -> Parity:
    images = pictures.images()
    return int8_parity(
        predict_all(LiteRTPredictor(float32), images),
        predict_all(LiteRTPredictor(int8), images),
        pictures.labels,
        accept,
    )


def export_tflite(model_path: str | Path, out_path: str | Path, model=None) -> Export:
    """Convert the .keras file at model_path to out_path, atomically, after checking it against Keras.
    `model`: the file already loaded."""
    from digits.models import load_model

    model = model if model is not None else load_model(model_path)
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


def _entry(path: Path, precision: str) -> dict:
    data = path.read_bytes()
    probes = LiteRTPredictor(path)(probe_images())
    return {
        "precision": precision,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "probes": np.round(probes.astype(np.float64), 7).tolist(),
    }


def _dumps(meta: dict) -> str:
    """Indented JSON with each list of numbers on one line (a probe's 10 probabilities, not 10 lines)."""
    text = json.dumps(meta, indent=1)
    return re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)


def _int8_file(
    model, float32: Path, inputs: Int8Inputs, staging: Path
) -> tuple[dict[str, object], Parity, Parity]:
    """Convert to int8 and check its parity with the float32 file: the file joins the bundle (staging)
    only when the parity holds. Returns model.json's `int8` entry and the validation and test parities."""
    params = inputs.params
    representative = to_model_input(inputs.representative)
    candidate = staging.parent / BUNDLE_INT8  # beside the bundle until its parity holds
    candidate.write_bytes(convert_int8(model, representative))
    parity = _parity(float32, candidate, inputs.decide, inputs.accept)
    test_parity = _parity(float32, candidate, inputs.report, inputs.accept)
    problems = parity.problems(params)
    refused = None
    if problems:
        refused = "its parity with float32 on the validation pictures fails: " + "; ".join(problems)
    else:
        os.replace(candidate, staging / BUNDLE_INT8)
    entry = {
        "included": not problems,
        "reason": refused,
        "representative": {"split": "train", "pictures": len(representative), "seed": params.seed},
        "parity": {
            "split": "val",
            **asdict(parity),
            "max_changed": params.int8_max_changed,
            "max_accuracy_change": params.int8_max_accuracy_change,
            "max_decisions_changed": params.int8_max_decisions_changed,
            "passed": not problems,
        },
        "test_parity": {"split": "test", **asdict(test_parity)},
    }
    return entry, parity, test_parity


def export_bundle(
    model_path: str | Path,
    out_dir: str | Path,
    int8_inputs: Int8Inputs | None = None,
    calibration: Calibration | None = None,
) -> Bundle:
    """The serving bundle for the .keras file: out_dir/model.tflite (checked as export_tflite does), with
    `int8_inputs` also out_dir/model_int8.tflite when its parity with the float32 file holds on the validation
    pictures (else model.json says why, and the bundle serves float32), and out_dir/model.json (with the
    `calibration` the server applies, when given). Written in a temp folder beside out_dir, then moved into
    place whole; nothing is written if the float32 check fails."""
    from digits.models import load_model

    model_path, out_dir = Path(model_path), Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model = load_model(model_path)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}-", dir=out_dir.parent) as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        result = export_tflite(model_path, staging / BUNDLE_MODEL, model)
        files = {BUNDLE_MODEL: _entry(result.path, "float32")}
        files[BUNDLE_MODEL]["max_difference_from_keras"] = result.max_difference
        meta = {
            "format": FORMAT,
            "classes": NUM_CLASSES,
            "input": "float32 (n, 28, 28, 1) in [0, 1], white ink on black, MNIST-centred (digits.mnistify)",
            "source": {model_path.name: {"sha256": hashlib.sha256(model_path.read_bytes()).hexdigest()}},
            "probes": "digits.runtime.probe_images(); each file's probabilities on them are in its entry",
            "files": files,
        }
        if calibration is not None:  # the server applies it: temperature and rejection travel with the model
            meta["calibration"] = calibration.as_dict()
        parity = test_parity = refused = None
        int8_size = 0
        if int8_inputs is not None:
            meta["int8"], parity, test_parity = _int8_file(model, result.path, int8_inputs, staging)
            refused = meta["int8"]["reason"]
            if meta["int8"]["included"]:
                files[BUNDLE_INT8] = _entry(staging / BUNDLE_INT8, "int8")
                int8_size = (staging / BUNDLE_INT8).stat().st_size
        (staging / BUNDLE_META).write_text(_dumps(meta) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    float32 = Export(out_dir / BUNDLE_MODEL, result.size, result.max_difference)
    int8_path = out_dir / BUNDLE_INT8 if int8_size else None
    return Bundle(float32, int8_path, int8_size, parity, test_parity, refused)
