"""The TFLite export and the LiteRT runtime: parity with Keras, serving a .tflite file, no TF import."""

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
from digits.export import TOLERANCE, export_bundle, export_tflite
from digits.idx import read_idx
from digits.models import load_model
from digits.runtime import KerasPredictor, LiteRTPredictor, load_predictor, probe_images
from digits.serve import create_app, main
from digits.shapes import to_model_input


@pytest.fixture(scope="module")
def tflite_path(small_model_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "model-small.tflite"
    result = export_tflite(small_model_path, out)
    assert result.path == out and result.size == out.stat().st_size > 10_000
    assert result.max_difference <= TOLERANCE
    return out


@pytest.fixture(scope="module")
def bundle(small_model_path, tmp_path_factory) -> Path:
    """The export stage's serving bundle for the small model: serving/{model.tflite,model.json}."""
    return export_bundle(small_model_path, tmp_path_factory.mktemp("bundle") / "serving").path.parent


@pytest.fixture(scope="module")
def test_digits(tiny_mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    """The 200 tiny MNIST test digits as float32 (200, 28, 28) in [0, 1], and their labels."""
    images = to_model_input(read_idx(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz"))[..., 0]
    return images, read_idx(tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz")


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


def test_bundle_describes_its_model_and_is_byte_identical_when_rerun(small_model_path, bundle, tmp_path):
    assert sorted(p.name for p in bundle.iterdir()) == ["model.json", "model.tflite"]
    meta = json.loads((bundle / "model.json").read_text())
    tflite = (bundle / "model.tflite").read_bytes()
    assert meta["classes"] == 10
    assert meta["files"]["model.tflite"] == {
        "sha256": hashlib.sha256(tflite).hexdigest(),
        "bytes": len(tflite),
    }
    assert (
        meta["source"]["model-small.keras"]["sha256"]
        == hashlib.sha256(small_model_path.read_bytes()).hexdigest()
    )
    probes = np.array(meta["probes"]["probabilities"])
    np.testing.assert_allclose(probes, LiteRTPredictor(bundle / "model.tflite")(probe_images()), atol=1e-6)
    again = export_bundle(small_model_path, tmp_path / "serving").path.parent
    for name in ["model.json", "model.tflite"]:
        assert (again / name).read_bytes() == (bundle / name).read_bytes(), name
    export_bundle(small_model_path, again)  # over an existing bundle: replaced whole, nothing left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving"]


def test_bundle_folder_serves_and_a_damaged_or_swapped_file_is_refused(bundle, tflite_path, tmp_path, capsys):
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
    meta["probes"]["probabilities"] = (np.array(meta["probes"]["probabilities"])[::-1]).tolist()
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
        assert client.get("/ready").json() == {"status": "ready", "model": sha(tflite_path)}
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
    with TestClient(served[0]) as client:
        assert client.get("/ready").json()["model"] == sha(bundle / "model.tflite")
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


def test_serving_a_tflite_model_never_imports_tensorflow(tflite_path, tiny_mnist_dir):
    done = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_TF, str(tflite_path), str(tiny_mnist_dir)],
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
