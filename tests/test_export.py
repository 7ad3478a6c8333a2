"""The TFLite export and the LiteRT runtime: parity with Keras, the int8 file's parity with the float32 one,
serving a .tflite file or a bundle at either precision, no TF import."""

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import ROOT, serve

from digits import DigitsError
from digits.export import (
    TOLERANCE,
    Int8Inputs,
    Parity,
    ParitySet,
    convert_int8,
    export_bundle,
    export_tflite,
    int8_parity,
    predict_all,
)
from digits.idx import read_idx
from digits.models import load_model
from digits.params import ExportParams, ModelParams
from digits.runtime import KerasPredictor, LiteRTPredictor, load_predictor, model_file, probe_images
from digits.serve import create_app, main
from digits.shapes import to_model_input


@pytest.fixture(scope="module")
def tflite_path(small_model_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model-small.tflite"
    result = export_tflite(small_model_path, out)
    assert result.path == out and result.size == out.stat().st_size > 10_000
    assert result.max_difference <= TOLERANCE
    return out


# 100 digits decide: one changed prediction is already 1 point of accuracy.
TINY_LIMITS = ExportParams(representative=500, int8_max_changed=0.02, int8_max_accuracy_change=0.01)


@pytest.fixture(scope="module")
def int8_inputs(tiny_mnist_dir) -> Int8Inputs:
    """The tiny MNIST's training digits (500 calibrate), its first 100 test digits deciding and the other
    100 reported, as the export stage passes the prepared splits (no non-digits: a 10-class model)."""
    images = read_idx(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz")
    return Int8Inputs(
        read_idx(tiny_mnist_dir / "train-images-idx3-ubyte.gz")[:500],
        ParitySet(images[:100], labels[:100]),
        ParitySet(images[100:], labels[100:]),
        TINY_LIMITS,
    )


@pytest.fixture(scope="module")
def bundle(small_model_path, int8_inputs, tmp_path_factory) -> Path:
    """The export stage's bundle for the small model: serving/{model.tflite,model_int8.tflite,model.json}."""
    out = tmp_path_factory.mktemp("bundle") / "serving"
    return export_bundle(small_model_path, out, int8_inputs).float32.path.parent


@pytest.fixture(scope="module")
def float_bundle(small_model_path, tmp_path_factory) -> Path:
    """A bundle exported without int8 inputs: model.tflite and model.json only."""
    return export_bundle(small_model_path, tmp_path_factory.mktemp("float") / "serving").float32.path.parent


@pytest.fixture(scope="module")
def test_digits(tiny_mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    """The 200 tiny MNIST test digits as float32 (200, 28, 28) in [0, 1], and their labels."""
    images = to_model_input(read_idx(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz"))[..., 0]
    return images, read_idx(tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz")


def copy_bundle(bundle: Path, to: Path) -> Path:
    shutil.copytree(bundle, to)
    return to


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


# --- parity -------------------------------------------------------------------------------------------


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


# --- the export ---------------------------------------------------------------------------------------


def test_export_is_byte_identical_when_rerun(small_model_path, tflite_path, tmp_path):
    """So `dvc repro` on an unchanged model leaves models/model.tflite unchanged."""
    again = export_tflite(small_model_path, tmp_path / "again.tflite").path
    assert again.read_bytes() == tflite_path.read_bytes()


def test_bundle_describes_its_models_and_is_byte_identical_when_rerun(
    small_model_path, bundle, int8_inputs, tmp_path
):
    names = ["model.json", "model.tflite", "model_int8.tflite"]
    assert sorted(p.name for p in bundle.iterdir()) == names
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["format"] == 2 and meta["classes"] == 10
    for name, precision in [("model.tflite", "float32"), ("model_int8.tflite", "int8")]:
        data = (bundle / name).read_bytes()
        entry = meta["files"][name]
        assert entry["precision"] == precision and LiteRTPredictor(bundle / name).precision == precision
        assert (entry["sha256"], entry["bytes"]) == (hashlib.sha256(data).hexdigest(), len(data))
        probes = np.array(entry["probes"])
        np.testing.assert_allclose(probes, LiteRTPredictor(bundle / name)(probe_images()), atol=1e-6)
    assert meta["files"]["model.tflite"]["max_difference_from_keras"] <= TOLERANCE
    assert meta["files"]["model_int8.tflite"]["bytes"] < meta["files"]["model.tflite"]["bytes"] / 3
    assert (
        meta["source"]["model-small.keras"]["sha256"]
        == hashlib.sha256(small_model_path.read_bytes()).hexdigest()
    )
    assert meta["int8"]["representative"] == {"split": "train", "pictures": 500, "seed": 42}
    assert meta["int8"]["included"] is True and meta["int8"]["reason"] is None
    again = export_bundle(small_model_path, tmp_path / "serving", int8_inputs).float32.path.parent
    for name in names:
        assert (again / name).read_bytes() == (bundle / name).read_bytes(), name
    export_bundle(small_model_path, again)  # over an existing bundle: replaced whole, nothing left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving"]
    assert sorted(p.name for p in again.iterdir()) == ["model.json", "model.tflite"]


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


# --- int8 -------------------------------------------------------------------------------------------


def test_int8_parity_is_computed_and_recorded(small_model_path, bundle, test_digits):
    images, labels = test_digits
    float32 = predict_all(LiteRTPredictor(bundle / "model.tflite"), images)
    int8 = predict_all(LiteRTPredictor(bundle / "model_int8.tflite"), images)
    meta = json.loads((bundle / "model.json").read_text())["int8"]

    def figures(part: slice) -> dict:
        f, i, y = float32[part], int8[part], labels[part]
        return {
            "digits": 100,
            "changed": int((f.argmax(1) != i.argmax(1)).sum()),
            "accuracy_float32": float((f.argmax(1) == y).mean()),
            "accuracy_int8": float((i.argmax(1) == y).mean()),
            "pictures": 100,
            "decisions_changed": None,
        }

    assert meta["parity"] == {
        "split": "val",
        **figures(slice(0, 100)),
        "max_changed": 0.02,
        "max_accuracy_change": 0.01,
        "max_decisions_changed": 0.002,
        "passed": True,
    }
    assert meta["test_parity"] == {"split": "test", **figures(slice(100, 200))}
    assert meta["parity"]["changed"] <= 2 and meta["parity"]["accuracy_int8"] > 0.95
    # int8 inside, float32 outside: probabilities, and a float softmax (not multiples of 1/256).
    assert int8.dtype == np.float32
    np.testing.assert_allclose(int8.sum(1), 1, atol=1e-5)
    assert not np.allclose(int8 * 256, np.round(int8 * 256), atol=1e-3)
    np.testing.assert_allclose(int8, float32, atol=0.1)
    singles = np.concatenate([LiteRTPredictor(bundle / "model_int8.tflite")(x[None]) for x in images[:20]])
    np.testing.assert_array_equal(singles, int8[:20])  # integer kernels: batch size changes nothing


def test_int8_keeps_a_not_a_digit_models_probabilities_fine(test_digits, tmp_path):
    from digits.models import build_model, digit_outputs

    images, _ = test_digits
    model = digit_outputs(build_model(ModelParams(preset="fast", filters=[4, 8], dense=8), not_a_digit=True))
    (tmp_path / "m.tflite").write_bytes(convert_int8(model, images[:50, ..., None]))
    int8 = LiteRTPredictor(tmp_path / "m.tflite")(images)
    float32 = np.asarray(model(images[..., None], training=False))
    assert int8.shape == (len(images), 10) and (int8.sum(1) < 1 - 1e-3).all()  # "not a digit" dropped
    # The slice after the softmax stays float: no rounding of the probabilities to multiples of 1/256.
    assert not np.allclose(int8 * 256, np.round(int8 * 256), atol=1e-3)
    np.testing.assert_allclose(int8, float32, atol=0.05)


def test_int8_parity_counts_changes_and_accept_decisions():
    float32 = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
    int8 = np.array([[0.8, 0.2], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    labels = np.array([0, 0, 1])  # the last row is a non-digit: its decision counts, its argmax does not
    parity = int8_parity(float32, int8, labels, accept=lambda p: p.max(1) >= 0.7)
    assert parity == Parity(3, 1, 1.0, 2 / 3, pictures=4, decisions_changed=1)  # [1] rejected both times
    assert int8_parity(float32, int8, labels, lambda p: p.max(1) >= 0.85).decisions_changed == 1
    assert int8_parity(float32, int8, labels).decisions_changed is None


def test_parity_problems_name_each_figure_and_its_limit():
    limits = ExportParams(
        int8_max_changed=0.0005, int8_max_accuracy_change=0.0003, int8_max_decisions_changed=0.0005
    )
    assert Parity(10000, 5, 0.9958, 0.9955, 10000, 5).problems(limits) == []  # at every limit: passes
    assert Parity(10000, 6, 0.9958, 0.9954, 12000, 7).problems(limits) == [
        "it changes 6 of 10000 predictions (export.int8_max_changed: 0.05% of them)",
        "its accuracy is 99.54% against float32's 99.58%, 0.04 points apart "
        "(export.int8_max_accuracy_change: 0.03 points)",
        "it accepts or rejects 7 of 12000 pictures otherwise "
        "(export.int8_max_decisions_changed: 0.05% of them)",
    ]
    assert Parity(10000, 0, 0.9958, 0.9958, 12000, 6).problems(limits) == []  # 6 of 12000: at the limit


def test_export_whose_int8_fails_parity_ships_float32_and_says_why(
    small_model_path, int8_inputs, tmp_path, monkeypatch, capsys
):
    import digits.export

    strict = Int8Inputs(int8_inputs.representative, int8_inputs.decide, int8_inputs.report, ExportParams())
    monkeypatch.setattr(digits.export, "int8_parity", lambda *_: Parity(200, 7, 0.99, 0.97, 200))
    result = export_bundle(small_model_path, tmp_path / "serving", strict)
    reason = (
        "its parity with float32 on the validation pictures fails: it changes 7 of 200 predictions "
        "(export.int8_max_changed: 0.10% of them); its accuracy is 97.00% against float32's 99.00%, 2.00 "
        "points apart (export.int8_max_accuracy_change: 0.10 points)"
    )
    assert result.int8 is None and result.int8_refused == reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving"]  # no temp folder left beside it
    bundle = tmp_path / "serving"
    assert sorted(p.name for p in bundle.iterdir()) == ["model.json", "model.tflite"]
    meta = json.loads((bundle / "model.json").read_text())["int8"]
    assert meta["included"] is False and meta["reason"] == reason and meta["parity"]["passed"] is False
    # The server's auto precision serves float32, with one line saying why; int8 asked for is refused.
    capsys.readouterr()
    assert model_file(bundle) == bundle / "model.tflite"
    assert capsys.readouterr().err == (
        f"serving {bundle / 'model.tflite'} (float32), not int8: "
        f"model.json lists no model_int8.tflite: {reason}\n"
    )
    with pytest.raises(
        DigitsError, match=r"no int8 model to serve \(model.json lists no model_int8.tflite: its"
    ):
        model_file(bundle, "int8")


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


def test_cli_precision_flag(bundle, tmp_path, monkeypatch, capsys):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    for flag, name, precision in [
        ([], "model_int8.tflite", "int8"),
        (["--precision", "float32"], "model.tflite", "float32"),
        (["--precision", "int8"], "model_int8.tflite", "int8"),
    ]:
        assert main(["--model", str(bundle), *flag]) == 0
        with TestClient(served[-1]) as client:
            ready = client.get("/ready").json()
        assert ready == {"status": "ready", "model": sha(bundle / name), "file": name, "precision": precision}
        assert f"serving {bundle / name} (LiteRT" in capsys.readouterr().err
    assert main(["--model", str(bundle / "model.tflite"), "--precision", "int8"]) == 1
    assert "chooses a file in a serving bundle folder" in capsys.readouterr().err


def test_export_that_fails_the_check_writes_nothing(small_model_path, tmp_path, monkeypatch):
    import digits.export

    monkeypatch.setattr(digits.export, "max_difference", lambda *_: 0.5)
    out = tmp_path / "model.tflite"
    with pytest.raises(DigitsError, match=r"differs from .* by 0\.5"):
        export_tflite(small_model_path, out)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


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


# --- serving ------------------------------------------------------------------------------------------


def test_serve_app_runs_the_tflite_model(tflite_path, test_digits):
    images, labels = test_digits
    with TestClient(create_app(tflite_path)) as client:
        assert client.get("/ready").json() == {
            "status": "ready",
            "model": sha(tflite_path),
            "file": tflite_path.name,
            "precision": "float32",
        }
        pixels = (images[:3] * 255).round().astype(int).tolist()
        one = client.post("/api/predict", json={"pixels": pixels[0]})
        assert one.status_code == 200
        assert one.json()["digit"] == labels[0] and one.json()["model"] == sha(tflite_path)
        batch = client.post("/api/predict/batch", json={"items": [{"pixels": p} for p in pixels]})
        assert batch.status_code == 200
        assert [r["digit"] for r in batch.json()["results"]] == labels[:3].tolist()


def test_cli_serves_the_bundle_by_default(bundle, small_model_path, tmp_path, monkeypatch):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/model.keras").write_bytes(small_model_path.read_bytes())
    shutil.copytree(bundle, tmp_path / "models/serving")
    assert main([]) == 0
    with TestClient(served[0]) as client:  # the int8 file: its parity check passed
        assert client.get("/ready").json()["model"] == sha(bundle / "model_int8.tflite")
    shutil.rmtree(tmp_path / "models/serving")
    assert main([]) == 0  # no export: the .keras file
    with TestClient(served[1]) as client:
        assert client.get("/ready").json()["model"] == sha(small_model_path)


SERVE_WITHOUT_TF = """
import json, sys
from digits.idx import read_idx
from digits.serve import create_app
from fastapi.testclient import TestClient
pixels = read_idx(sys.argv[2] + "/t10k-images-idx3-ubyte.gz")[0].tolist()
with TestClient(create_app(sys.argv[1])) as client:
    answer = client.post("/api/predict", json={"pixels": pixels})
print(json.dumps({
    "status": answer.status_code,
    "digit": answer.json().get("digit"),
    "imported": sorted(m for m in ("tensorflow", "keras", "tf_keras") if m in sys.modules),
}))
"""


@pytest.mark.parametrize("served", ["model.tflite", "bundle (int8)"])
def test_serving_a_tflite_model_never_imports_tensorflow(served, tflite_path, bundle, tiny_mnist_dir):
    path = tflite_path if served == "model.tflite" else bundle
    done = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_TF, str(path), str(tiny_mnist_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    label = int(read_idx(tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz")[0])
    assert result == {"status": 200, "digit": label, "imported": []}


def test_cli_with_two_workers_and_no_access_log(tflite_path, tiny_mnist_dir, tmp_path):
    log = tmp_path / "server.log"
    with serve(tflite_path, log, "--workers", "2") as (_, url):
        pixels = read_idx(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz")[:8]
        labels = read_idx(tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz")[:8]
        for x, label in zip(pixels, labels, strict=True):
            answer = httpx.post(f"{url}/api/predict", json={"pixels": x.tolist()})
            assert answer.status_code == 200 and answer.json()["digit"] == label
    text = log.read_text()
    assert text.count("Started server process") == 2, text  # two worker processes
    assert "with 2 worker(s)" in text and "POST /api/predict" not in text, text  # no access log


def test_workers_get_a_listening_socket_marked_tcp(monkeypatch):
    # Marked TCP, asyncio sets TCP_NODELAY on every accepted connection; uvicorn's own socket (protocol 0)
    # leaves Nagle on and costs each keep-alive response a ~40 ms delayed ACK (Kludex/uvicorn#3149).
    import uvicorn.supervisors

    from digits.serve import _run_workers

    seen = []

    class Capture:
        processes = ()  # none started, so none failed

        def __init__(self, config, sockets):
            seen.append((config, sockets))

        def run(self):
            pass

    monkeypatch.setattr(uvicorn.supervisors, "Multiprocess", Capture)
    _run_workers(2, {"host": "127.0.0.1", "port": 0, "access_log": False})
    config, [sock] = seen[0]
    try:
        assert config.workers == 2 and sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
