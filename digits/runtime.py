"""Run the trained classifier for serving: LiteRT on an exported .tflite file, or Keras on a .keras file.

    predictor = load_predictor("models/serving")  # or a .tflite or .keras file; the suffix picks the runtime
    probabilities = predictor(images)  # (n, 28, 28) float32 in [0, 1] -> (n, 10)

The serving bundle (the export stage's models/serving/) is a folder: model.tflite (float32), model_int8.tflite
(int8 weights and activations, float32 input and output; only when its parity held) and model.json, the
metadata (each file's sha256 and the probabilities it must give on fixed probe pictures, the number of
classes, the int8 file's parity with the float one, or why it was left out). A bundle folder serves the
int8 file when the metadata says its parity check passed, else the float one with a line saying why;
`precision` picks either. A .tflite file with a model.json beside
it is checked against its entry before it serves: a damaged or swapped file is refused, not served.

The LiteRT runtime (`ai-edge-litert`) imports no TensorFlow, so a server on a .tflite file starts several
times faster, holds a fraction of the memory, and answers one image about ten times faster than the
tf.function, with the same outputs (benchmarks/inference.py; numbers in benchmarks/README.md).

Both runtimes are loaded once and warmed up before the first request, never call `model.predict` (which
builds a dataset per call), and are safe to call from FastAPI's thread pool.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from digits import DigitsError, log
from digits.confidence import Calibration
from digits.shapes import NUM_CLASSES, SIDE

SUFFIXES = (".tflite", ".keras")
# The serving bundle's files.
BUNDLE_MODEL, BUNDLE_INT8, BUNDLE_META = "model.tflite", "model_int8.tflite", "model.json"
FORMATS = (1, 2)  # of model.json that this server reads (digits.export writes the last)
PRECISIONS = ("auto", "int8", "float32")  # auto: int8 where the bundle's parity check passed
PROBES = 64  # synthetic pictures whose outputs the bundle records
# Largest |probability difference| from a file's recorded probe outputs. The int8 kernels are integer
# arithmetic, exact on any CPU XNNPACK runs on; LiteRT's own int8 kernels (no XNNPACK) round differently, by
# far less than another model's outputs differ (benchmarks/README.md): 0.1 tells them apart.
PROBE_TOLERANCE = {"float32": 1e-4, "int8": 0.1}


def probe_images(n: int = PROBES, seed: int = 0) -> np.ndarray:
    """Deterministic (n, 28, 28) float32 pictures in [0, 1]: blank, full, and mostly dark noise."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, SIDE, SIDE), dtype=np.float32) ** 4  # MNIST-like: mostly near 0, some ink
    images[0], images[1] = 0, 1
    return images


def model_file(path: str | Path, precision: str = "auto") -> Path:
    """The file to load for a model path. A serving bundle folder means one of its .tflite files: the int8
    one if `precision` is "int8", or "auto" and model.json says its parity check passed; else the float one.
    """
    path = Path(path)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if not path.is_dir():
        if precision != "auto":
            raise DigitsError(
                f"{path}: a precision ({precision}) chooses a file in a serving bundle folder; give the "
                "folder, or leave the precision to auto"
            )
        return path
    if precision == "float32":
        return path / BUNDLE_MODEL
    refused = int8_refused(path)
    if precision == "int8" and refused:
        raise DigitsError(f"{path}: no int8 model to serve ({refused}); {_BUNDLE_FIX}")
    if refused:
        log(f"serving {path / BUNDLE_MODEL} (float32), not int8: {refused}")
    return path / (BUNDLE_MODEL if refused else BUNDLE_INT8)


def int8_refused(bundle: Path) -> str | None:
    """Why the bundle's int8 file may not be served; None when model.json lists it with its parity check
    passed (the export stage writes none that failed; a bundle from before int8 has none)."""
    try:
        meta = json.loads((bundle / BUNDLE_META).read_text())
        if BUNDLE_INT8 not in meta["files"]:
            reason = (meta.get("int8") or {}).get("reason")  # the export stage's, when it left int8 out
            return f"{BUNDLE_META} lists no {BUNDLE_INT8}" + (f": {reason}" if reason else "")
        passed = meta["int8"]["parity"]["passed"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{BUNDLE_META} unreadable: {type(e).__name__}: {e}"
    return None if passed is True else f"{BUNDLE_META} says its parity check failed"


class BadOutput(DigitsError):
    """The model's output is not a probability per digit (NaN, infinite, negative, summing to over 1)."""


def check_probabilities(probabilities: np.ndarray, tolerance: float = 1e-3) -> None:
    """Raise BadOutput unless every row is finite, in [0, 1] and sums to at most 1 (within `tolerance`).

    A model with a "not a digit" class answers rows summing to less than 1 (digits.models.digit_outputs).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != NUM_CLASSES:
        raise BadOutput(f"the model answered shape {p.shape}, expected (n, {NUM_CLASSES})")
    if not np.isfinite(p).all():
        raise BadOutput("the model answered NaN or infinite values")
    sums = p.sum(axis=1)
    if p.min() < -tolerance or sums.max() > 1 + tolerance:
        raise BadOutput(
            f"the model answered values in {p.min():g}..{p.max():g}, rows summing to "
            f"{sums.min():g}..{sums.max():g}: not probabilities"
        )


class Predictor(ABC):
    """A loaded, warmed-up classifier: (n, 28, 28) or (n, 28, 28, 1) float32 -> (n, 10) probabilities."""

    precision = "float32"  # of the weights and activations; input and output are float32 either way

    def __init__(self, path: Path, data: bytes) -> None:
        self.path = path
        self.sha = hashlib.sha256(data).hexdigest()[:12]  # what /ready and every prediction report

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.shape[1:] not in ((SIDE, SIDE), (SIDE, SIDE, 1)):
            raise ValueError(f"expected images of shape (n, 28, 28) or (n, 28, 28, 1), got {images.shape}")
        if len(images) == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        probabilities = self._predict(np.ascontiguousarray(images.reshape(len(images), SIDE, SIDE, 1)))
        if not np.isfinite(probabilities).all():  # never a NaN in a response (JSON has no NaN)
            raise BadOutput("the model answered NaN or infinite values")
        return probabilities

    @abstractmethod
    def _predict(self, images: np.ndarray) -> np.ndarray:
        """(n, 28, 28, 1) float32 with n >= 1 -> (n, 10) float32."""

    def warm_up(self, batch: int = 1) -> None:
        """Run once now, so the first request does not pay for tracing or allocation, and check the output.

        A damaged file (overwritten weights) often still loads and answers NaN: refuse it here, so a server
        on it never becomes ready.
        """
        probe = np.zeros((batch, SIDE, SIDE), np.float32)
        probe[:, 4:24, 13:16] = 1  # a "1", so the check sees ink as well as background
        try:
            check_probabilities(self(probe))
        except BadOutput as e:
            raise DigitsError(
                f"{self.path}: {e} on a warm-up input, so the file is damaged or not a softmax "
                "classifier; rebuild it (dvc repro) or fetch it again (dvc pull)"
            ) from None


class KerasPredictor(Predictor):
    """A .keras file called through a tf.function with a fixed signature (one trace for any batch size)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, path.read_bytes())
        # Imported here: a LiteRT server never imports TensorFlow.
        import tensorflow as tf

        from digits.models import load_model

        model = load_model(path)
        if tuple(model.input_shape) != (None, SIDE, SIDE, 1) or tuple(model.output_shape) != (None, 10):
            raise DigitsError(f"{path}: expected a (28, 28, 1) -> 10 classifier, got {model.input_shape}")
        self.model = model
        # Several times faster than eager model(x), and far faster than model.predict (a dataset per call).
        # XLA (jit_compile) wins for one image but recompiles for every new batch size.
        spec = tf.TensorSpec([None, SIDE, SIDE, 1], tf.float32)
        self._call = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        self.warm_up()

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return self._call(images).numpy()


class _Lane:
    """One LiteRT interpreter and the lock that serialises it (an interpreter is not thread-safe)."""

    def __init__(self, interpreter_class: type, data: bytes, num_threads: int | None) -> None:
        self.interpreter = interpreter_class(model_content=data, num_threads=num_threads)
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        if not self.inputs or not self.outputs:
            raise ValueError("the model has no input or no output")
        self.input, self.output = self.inputs[0]["index"], self.outputs[0]["index"]
        self.batch = int(self.inputs[0]["shape"][0])
        self.interpreter.allocate_tensors()
        self.lock = threading.Lock()

    def run(self, images: np.ndarray) -> np.ndarray:
        with self.lock:
            if len(images) != self.batch:
                # Costs a re-planning of the graph, so the single-image lane never resizes.
                self.interpreter.resize_tensor_input(self.input, images.shape, strict=False)
                self.interpreter.allocate_tensors()
                self.batch = len(images)
            self.interpreter.set_tensor(self.input, images)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self.output)  # a copy: safe after the lock is released


class LiteRTPredictor(Predictor):
    """A .tflite file run by the LiteRT interpreter (XNNPACK CPU kernels), without TensorFlow.

    Two interpreters, each behind its own lock: one fixed at batch size 1 for single pictures, one resized
    to each batch request's size, so a batch never makes single requests wait for it or pay a resize.
    """

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        """`num_threads`: default, the CPUs this process may use, at most 4 (LiteRT's own default is 1).

        More threads than one cut the latency of one image and raise batch throughput (benchmarks/
        README.md). The cap of 4 is a guess: a 28x28 CNN has too little work per layer to split further.
        """
        data = path.read_bytes()
        super().__init__(path, data)
        probes = _bundle_probes(path, data)  # before loading: a damaged file is named as such
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise DigitsError(
                f"{path}: running a .tflite model needs the LiteRT runtime: pip install ai-edge-litert "
                "(included in the `serve` extra), or serve the .keras file instead"
            ) from None
        try:
            threads = num_threads or _cpus()
            self._single = _Lane(Interpreter, data, threads)
            self._batch = _Lane(Interpreter, data, threads)
        except (ValueError, RuntimeError) as e:
            raise DigitsError(f"{path}: not a loadable TFLite model ({e})") from None
        inputs, outputs = self._single.inputs, self._single.outputs
        if (
            len(inputs) != 1
            or len(outputs) != 1
            or tuple(inputs[0]["shape"][1:]) != (SIDE, SIDE, 1)
            or tuple(outputs[0]["shape"][1:]) != (NUM_CLASSES,)
            or inputs[0]["dtype"] != np.float32
        ):
            shapes = [tuple(d["shape"]) for d in inputs], [tuple(d["shape"]) for d in outputs]
            raise DigitsError(f"{path}: expected a float32 (28, 28, 1) -> 10 classifier, got {shapes}")
        tensors = self._single.interpreter.get_tensor_details()
        self.precision = "int8" if any(t["dtype"] == np.int8 for t in tensors) else "float32"
        self.warm_up()  # the single-image interpreter
        self.warm_up(batch=2)  # and the batch one
        if probes is not None:
            difference = float(np.abs(self(probe_images()) - probes).max())
            tolerance = PROBE_TOLERANCE[self.precision]
            if not difference <= tolerance:
                raise DigitsError(
                    f"{path}: answers the probe pictures {difference:.2g} away from what "
                    f"{path.parent / BUNDLE_META} recorded (allowed {tolerance:g}); {_BUNDLE_FIX}"
                )

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return (self._single if len(images) == 1 else self._batch).run(images)


_BUNDLE_FIX = "export it again (`dvc repro export`) or restore it (`dvc checkout models/serving`)"


def _bundle_probes(path: Path, data: bytes) -> np.ndarray | None:
    """With a model.json beside the file: check the file against its entry there, return its probe outputs."""
    meta_path = path.parent / BUNDLE_META
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format", 1) not in FORMATS:
            raise DigitsError(
                f"{meta_path}: format {meta.get('format')!r}, not one this server reads "
                f"({', '.join(map(str, FORMATS))}); {_BUNDLE_FIX}"
            )
        entry = meta["files"][path.name]
        expected = entry["sha256"]
        # Format 1 (one file) kept its probe outputs at the top level.
        recorded = entry["probes"] if meta.get("format", 1) >= 2 else meta["probes"]["probabilities"]
        probes = np.asarray(recorded, dtype=np.float32)
        classes = int(meta["classes"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DigitsError(
            f"{meta_path}: not serving bundle metadata for {path.name} ({type(e).__name__}: {e})"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise DigitsError(
            f"{path}: sha256 {digest[:16]}… is not the {expected[:16]}… in {meta_path}: the file is damaged "
            f"or was replaced; {_BUNDLE_FIX}"
        )
    if classes != NUM_CLASSES or probes.shape != (PROBES, NUM_CLASSES):
        raise DigitsError(f"{meta_path}: {classes} classes, probes of shape {probes.shape}; expected 10")
    return probes


def bundle_calibration(path: str | Path) -> Calibration | None:
    """The calibration (temperature, rejection threshold) in the model.json beside a .tflite file.

    None for a .keras file, a .tflite without model.json, or a model.json without a "calibration" key (an
    older bundle): the server then uses Calibration()'s defaults. Only that key is read here, so the rest of
    the metadata can change without this caring; its sha256 and probes are checked by LiteRTPredictor.
    """
    path = model_file(path)
    meta_path = path.parent / BUNDLE_META
    if path.suffix != ".tflite" or not meta_path.is_file():
        return None
    try:
        raw = json.loads(meta_path.read_text()).get("calibration")
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise TypeError(f"expected an object, got {type(raw).__name__}")
        return Calibration.from_dict(raw)
    except (ValueError, TypeError, AttributeError) as e:
        raise DigitsError(f"{meta_path}: bad calibration ({e}); {_BUNDLE_FIX}") from None


def _cpus(cap: int = 4) -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return min(available, cap)


def servable_file(path: str | Path, precision: str = "auto") -> Path:
    """model_file(path, precision), refused with a DigitsError unless it exists and has a known suffix.
    The server checks this when it builds the app, before the model loads."""
    path = model_file(path, precision)
    if not path.is_file():
        raise DigitsError(
            f"{path}: no model file; train one with `make run` (dvc repro) or fetch it with `dvc pull`"
        )
    if path.suffix not in SUFFIXES:
        raise DigitsError(f"{path}: unknown model format; expected a {' or '.join(SUFFIXES)} file")
    return path


def load_predictor(path: str | Path, threads: int | None = None, precision: str = "auto") -> Predictor:
    """The runtime for the model: LiteRT for a .tflite file or a serving bundle folder (`threads` for its
    kernels; `precision` picks the bundle's file, see model_file), Keras for .keras."""
    path = servable_file(path, precision)
    if path.suffix == ".tflite":
        if not (path.parent / BUNDLE_META).is_file():
            log(
                f"warning: {path} has no {BUNDLE_META} beside it: its sha256 and answers go unchecked and "
                "the default calibration is used (serve the export's folder, models/serving/, to have both)"
            )
        return LiteRTPredictor(path, threads)
    return KerasPredictor(path)
