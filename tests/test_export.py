"""The TFLite export: parity with Keras, the int8 file's parity with the float32 one, and serving what it
writes (a .tflite file or a bundle at either precision, no TF import)."""

import hashlib
import json
import shutil
import socket
import subprocess
import sys

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import ROOT, serve, sha

from digits import DigitsError
from digits.export import (
    TOLERANCE,
    Int8Inputs,
    Parity,
    convert_int8,
    export_bundle,
    export_tflite,
    int8_parity,
    predict_all,
)
from digits.idx import read_idx
from digits.params import ExportParams, ModelParams
from digits.runtime import LiteRTPredictor, model_file, probe_images
from digits.serve import create_app, main

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

    from digits.serve.server import _run_workers

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
