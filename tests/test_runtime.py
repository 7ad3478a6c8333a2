"""The serving runtimes (digits.runtime): LiteRT and Keras predictors, bundle checks, precision choice."""

import hashlib
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import sha

from digits import DigitsError
from digits.export import export_bundle
from digits.models import load_model
from digits.runtime import KerasPredictor, LiteRTPredictor, load_predictor, model_file
from digits.serve import create_app, main


@pytest.fixture(scope="module")
def float_bundle(small_model_path, tmp_path_factory) -> Path:
    """A bundle exported without int8 inputs: model.tflite and model.json only."""
    return export_bundle(small_model_path, tmp_path_factory.mktemp("float") / "serving").float32.path.parent


def copy_bundle(bundle: Path, to: Path) -> Path:
    shutil.copytree(bundle, to)
    return to


# --- the predictors -----------------------------------------------------------------------------------


def test_litert_matches_keras_on_real_digits(small_model_path, tflite_path, test_digits):
    images, labels = test_digits
    expected = np.asarray(load_model(small_model_path)(images[..., None], training=False))
    litert = LiteRTPredictor(tflite_path)
    batch = litert(images)  # the resized batch interpreter
    singles = np.concatenate([litert(images[i : i + 1]) for i in range(len(images))])  # the batch-1 one
    for got in (batch, singles):
        assert got.shape == (200, 10) and got.dtype == np.float32
        np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert (batch.argmax(1) == labels).mean() > 0.95  # and it is the real model, not a blank


def test_keras_predictor_matches_the_model(small_model_path, test_digits):
    images = test_digits[0][:32]
    expected = np.asarray(load_model(small_model_path)(images[..., None], training=False))
    keras_predictor = load_predictor(small_model_path)
    assert isinstance(keras_predictor, KerasPredictor) and keras_predictor.sha == sha(small_model_path)
    np.testing.assert_allclose(keras_predictor(images), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(keras_predictor(images[..., None]), expected, rtol=0, atol=1e-6)


def test_litert_predictor_shapes(tflite_path, test_digits):
    litert = load_predictor(tflite_path)
    assert isinstance(litert, LiteRTPredictor) and litert.sha == sha(tflite_path)
    images = test_digits[0][:5]
    np.testing.assert_array_equal(litert(images[..., None]), litert(images))
    assert litert(images[:0]).shape == (0, 10)
    for bad in (np.zeros((28, 28)), np.zeros((2, 28, 27)), np.zeros((2, 28, 28, 3))):
        with pytest.raises(ValueError, match="expected images of shape"):
            litert(bad)


def test_litert_is_safe_from_many_threads(tflite_path, test_digits):
    """One predictor shared by threads with mixed batch sizes gives what it gives serially."""
    litert = LiteRTPredictor(tflite_path)
    images = test_digits[0]
    sizes = (1, 2, 1, 7, 1, 64)
    expected = {n: litert(images[:n]) for n in sizes}
    wrong: list[int] = []

    def hammer(k: int) -> None:
        for i in range(60):
            n = sizes[(i + k) % len(sizes)]
            if not np.array_equal(litert(images[:n]), expected[n]):
                wrong.append(n)

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


# --- model files: bundle checks, precision, old bundles, bad files ------------------------------------


def test_bundle_folder_serves_and_a_damaged_or_swapped_file_is_refused(
    float_bundle, tflite_path, tmp_path, capsys
):
    bundle = float_bundle
    assert load_predictor(bundle).sha == sha(bundle / "model.tflite")  # the folder means its .tflite
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "model.json").write_bytes((bundle / "model.json").read_bytes())
    data = bytearray((bundle / "model.tflite").read_bytes())
    data[-100] ^= 0xFF
    (damaged / "model.tflite").write_bytes(data)
    with pytest.raises(DigitsError, match=r"model.tflite: sha256 .* is not the .* damaged or was replaced"):
        load_predictor(damaged)
    assert main(["--model", str(damaged)]) == 1  # the server refuses to start, in one line
    assert "damaged or was replaced" in capsys.readouterr().err
    # The right hash for other bytes: still refused, by the probe pictures' answers.
    meta = json.loads((bundle / "model.json").read_text())
    meta["files"]["model.tflite"]["sha256"] = hashlib.sha256(tflite_path.read_bytes()).hexdigest()
    meta["files"]["model.tflite"]["probes"] = meta["files"]["model.tflite"]["probes"][::-1]
    (damaged / "model.tflite").write_bytes(tflite_path.read_bytes())
    (damaged / "model.json").write_text(json.dumps(meta))
    with pytest.raises(
        DigitsError, match=r"answers the probe pictures .* away from what .*model.json recorded"
    ):
        load_predictor(damaged / "model.tflite")
    (damaged / "model.json").write_text("{}")
    with pytest.raises(
        DigitsError, match=r"model.json: not serving bundle metadata for model.tflite \(KeyError"
    ):
        load_predictor(damaged)


def test_precision_picks_the_bundle_file(bundle, float_bundle, small_model_path, tmp_path):
    picked = {p: load_predictor(bundle, precision=p) for p in ("auto", "int8", "float32")}
    assert [(p.path.name, p.precision) for p in picked.values()] == [
        ("model_int8.tflite", "int8"),
        ("model_int8.tflite", "int8"),
        ("model.tflite", "float32"),
    ]
    assert picked["auto"].sha == sha(bundle / "model_int8.tflite")
    # A bundle without an int8 file (or from before int8): auto serves float32, int8 is refused.
    assert model_file(float_bundle) == float_bundle / "model.tflite"
    with pytest.raises(
        DigitsError, match=r"no int8 model to serve \(model.json lists no model_int8.tflite\)"
    ):
        load_predictor(float_bundle, precision="int8")
    # A failed parity check recorded (the export stage writes none, but a hand-edited bundle might).
    failed = copy_bundle(bundle, tmp_path / "failed")
    meta = json.loads((failed / "model.json").read_text())
    meta["int8"]["parity"]["passed"] = False
    (failed / "model.json").write_text(json.dumps(meta))
    assert model_file(failed) == failed / "model.tflite"
    with pytest.raises(DigitsError, match="says its parity check failed"):
        model_file(failed, "int8")
    # A precision chooses within a folder; for a file it is an error, not silently ignored.
    with pytest.raises(DigitsError, match="chooses a file in a serving bundle folder"):
        load_predictor(bundle / "model.tflite", precision="int8")
    with pytest.raises(DigitsError, match="chooses a file in a serving bundle folder"):
        load_predictor(small_model_path, precision="float32")


def test_damaged_or_swapped_int8_file_is_refused(bundle, tmp_path):
    damaged = copy_bundle(bundle, tmp_path / "damaged")
    data = bytearray((bundle / "model_int8.tflite").read_bytes())
    data[-100] ^= 0xFF
    (damaged / "model_int8.tflite").write_bytes(data)
    with pytest.raises(
        DigitsError, match=r"model_int8.tflite: sha256 .* is not the .* damaged or was replaced"
    ):
        load_predictor(damaged)
    assert load_predictor(damaged, precision="float32").precision == "float32"  # the other file still serves
    # The float32 file under the int8 name, with a matching hash: its probe answers give it away.
    meta = json.loads((bundle / "model.json").read_text())
    meta["files"]["model_int8.tflite"]["sha256"] = meta["files"]["model.tflite"]["sha256"]
    meta["files"]["model_int8.tflite"]["probes"] = meta["files"]["model_int8.tflite"]["probes"][::-1]
    (damaged / "model_int8.tflite").write_bytes((bundle / "model.tflite").read_bytes())
    (damaged / "model.json").write_text(json.dumps(meta))
    with pytest.raises(
        DigitsError, match=r"model_int8.tflite: answers the probe pictures .* \(allowed 0.0001\)"
    ):
        load_predictor(damaged)


def test_a_format_1_bundle_still_serves(float_bundle, tmp_path):
    """The bundle as exported before int8: one file, its probe outputs at the top level."""
    old = copy_bundle(float_bundle, tmp_path / "old")
    meta = json.loads((old / "model.json").read_text())
    entry = meta["files"]["model.tflite"]
    meta = {
        "format": 1,
        "classes": 10,
        "files": {"model.tflite": {"sha256": entry["sha256"], "bytes": entry["bytes"]}},
        "probes": {"images": "digits.runtime.probe_images()", "probabilities": entry["probes"]},
    }
    (old / "model.json").write_text(json.dumps(meta))
    assert load_predictor(old).sha == sha(old / "model.tflite")


def test_an_unknown_bundle_format_is_refused(float_bundle, tmp_path):
    newer = copy_bundle(float_bundle, tmp_path / "newer")
    meta = json.loads((newer / "model.json").read_text())
    (newer / "model.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(DigitsError, match=r"model.json: format 99, not one this server reads \(1, 2\)"):
        load_predictor(newer)


def test_a_tflite_without_model_json_is_served_with_a_warning(tflite_path, tmp_path, capsys):
    alone = tmp_path / "model.tflite"
    alone.write_bytes(tflite_path.read_bytes())
    load_predictor(alone)
    err = capsys.readouterr().err
    assert f"warning: {alone} has no model.json beside it" in err and "default calibration" in err


def test_bad_model_files_are_clear_errors(tmp_path):
    garbage = tmp_path / "model.tflite"
    garbage.write_bytes(b"not a flatbuffer")
    with pytest.raises(DigitsError, match="not a loadable TFLite model"):
        load_predictor(garbage)
    with pytest.raises(DigitsError, match="no model file"):
        load_predictor(tmp_path / "absent.tflite")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(DigitsError, match=r"unknown model format; expected a \.tflite or \.keras file"):
        load_predictor(onnx)
    with pytest.raises(DigitsError, match="unknown model format"):
        create_app(onnx)  # at once, not when the server starts
