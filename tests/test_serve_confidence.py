"""Calibrated answers: `accepted`, `confidence` and `reason` on every prediction, GET /api/model, and where
the calibration comes from (the bundle's model.json, the server flags, or the defaults).

The fixture bundle (conftest `calibrated_bundle`) carries helpers.FIXTURE_CALIBRATION: real MNIST digits are
accepted and the fixed scribble (helpers.SCRIBBLE) is refused as "not a digit", in every input form.
"""

import base64
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import FIXTURE_CALIBRATION, SCRIBBLE, data_url, png, render_strokes, with_calibration
from PIL import Image

from digits import DigitsError
from digits.confidence import calibrate
from digits.idx import read_idx
from digits.mnistify import prepare_pixels
from digits.runtime import Predictor, bundle_calibration, load_predictor
from digits.serve import OPTIONS_ENV, app_from_env, create_app, main

THRESHOLD = FIXTURE_CALIBRATION["threshold"]


@pytest.fixture(scope="module")
def client(calibrated_bundle):
    with TestClient(create_app(calibrated_bundle)) as c:
        yield c


@pytest.fixture(scope="module")
def digits(tiny_mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    """The first 8 tiny MNIST test digits (uint8 28x28), each >= 0.98 calibrated, and their labels."""
    images = read_idx(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz")[:8]
    return images, read_idx(tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz")[:8]


@pytest.fixture(scope="module")
def scribble() -> np.ndarray:
    """The fixed scribble as the page's 280x280 canvas would hold it (uint8, white on black)."""
    return render_strokes(SCRIBBLE)


def small(picture: np.ndarray) -> np.ndarray:
    """A 280x280 picture shrunk to 28x28, for the `pixels` forms."""
    return np.asarray(Image.fromarray(picture).resize((28, 28), Image.BOX))


def check_answer(answer: dict, accepted: bool) -> None:
    """One answer's fields agree with each other: digit = argmax, confidence = top probability, reason."""
    p = answer["probabilities"]
    assert len(p) == 10 and math.fsum(p) == pytest.approx(1, abs=1e-4)
    assert answer["digit"] == int(np.argmax(p)) and answer["confidence"] == max(p)
    assert answer["accepted"] is accepted
    if accepted:
        assert answer["reason"] is None and answer["confidence"] >= THRESHOLD
    else:
        assert answer["reason"] == "not a digit" and answer["confidence"] < THRESHOLD


# Every way /api/predict takes one picture; each gets a 280x280 canvas-like picture or 28x28 pixels.
FORMS = {
    "multipart PNG": lambda x: {"files": {"file": ("digit.png", png(x), "image/png")}},
    "JSON data URL": lambda x: {"json": {"image": data_url(png(x))}},
    "JSON bare base64": lambda x: {"json": {"image": base64.b64encode(png(x)).decode()}},
    "JSON pixels 28x28 0..255": lambda x: {"json": {"pixels": small(x).tolist()}},
    "JSON pixels 784 [0, 1]": lambda x: {"json": {"pixels": (small(x).ravel() / 255).tolist()}},
}


@pytest.mark.parametrize("form", FORMS)
def test_every_input_form_accepts_a_digit_and_refuses_the_scribble(client, digits, scribble, form):
    image, label = digits[0][0], int(digits[1][0])
    canvas = np.asarray(Image.fromarray(image).resize((280, 280), Image.BILINEAR))  # a big, drawn-size digit
    answer = client.post("/api/predict", **FORMS[form](canvas))
    assert answer.status_code == 200, answer.text
    check_answer(answer.json(), accepted=True)
    assert answer.json()["digit"] == label

    refused = client.post("/api/predict", **FORMS[form](scribble))
    assert refused.status_code == 200, refused.text  # a refusal is an answer, not an error
    check_answer(refused.json(), accepted=False)
    assert set(refused.json()) == {"digit", "probabilities", "accepted", "confidence", "reason", "model"}


def test_batch_gives_each_item_its_own_verdict(client, digits, scribble):
    images, labels = digits
    items = [{"pixels": x.tolist()} if i % 2 else {"image": data_url(png(x))} for i, x in enumerate(images)]
    items[2:2] = [{"image": data_url(png(scribble))}]
    items.append({"pixels": small(scribble).tolist()})
    r = client.post("/api/predict/batch", json={"items": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [a["accepted"] for a in results] == [True, True, False, *[True] * 6, False]
    for answer in results:
        check_answer(answer, accepted=answer["accepted"])
        assert set(answer) == {"digit", "probabilities", "accepted", "confidence", "reason"}
    assert [a["digit"] for a in results[:2] + results[3:-1]] == labels.tolist()


def test_probabilities_are_the_models_temperature_scaled(calibrated_bundle, client, digits):
    images = digits[0]
    answers = client.post("/api/predict/batch", json={"items": [{"pixels": x.tolist()} for x in images]})
    results = answers.json()["results"]
    raw = load_predictor(calibrated_bundle)(np.stack([prepare_pixels(x) for x in images]))
    expected = calibrate(raw, FIXTURE_CALIBRATION["temperature"])
    np.testing.assert_allclose([a["probabilities"] for a in results], expected, atol=1e-6)  # 6 decimals
    assert [a["digit"] for a in results] == raw.argmax(axis=1).tolist()  # the argmax never changes
    assert (np.array([a["confidence"] for a in results]) < raw.max(axis=1)).all()  # T > 1 softens


class FixedPredictor(Predictor):
    """Answers the same probabilities for every picture."""

    def __init__(self, path: Path, probabilities: list[float]) -> None:
        super().__init__(path, path.read_bytes())
        self.probabilities = np.asarray(probabilities, np.float32)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return np.tile(self.probabilities, (len(images), 1))


def test_an_answer_split_between_two_digits_is_unsure(small_model_path, digits):
    p = [0.005, 0.01, 0.005, 0.01, 0.47, 0.02, 0.005, 0.03, 0.015, 0.43]  # 4 or 9: 0.90 in two
    app = create_app(
        small_model_path, predictor=FixedPredictor(small_model_path, p), calibration={"threshold": 0.6}
    )
    with TestClient(app) as client:
        one = client.post("/api/predict", json={"pixels": digits[0][0].tolist()}).json()
        batch = client.post("/api/predict/batch", json={"items": [{"pixels": digits[0][0].tolist()}]})
    for answer in (one, batch.json()["results"][0]):
        assert answer["accepted"] is False and answer["reason"] == "unsure between 4 and 9"
        assert answer["digit"] == 4 and answer["confidence"] == 0.47
        assert answer["probabilities"] == pytest.approx(p, abs=1e-6)  # T = 1: as the model said


def test_flags_override_the_bundle(calibrated_bundle, digits, scribble):
    digit, canvas = {"pixels": digits[0][0].tolist()}, {"image": data_url(png(scribble))}
    with TestClient(create_app(calibrated_bundle, calibration={"threshold": 0.0})) as client:
        answer = client.post("/api/predict", json=canvas).json()
        assert answer["accepted"] is True and answer["reason"] is None  # threshold 0: all accepted
    with TestClient(create_app(calibrated_bundle, calibration={"threshold": 1.0})) as client:
        answer = client.post("/api/predict", json=digit).json()
        # Refused only for the threshold: its top two hold nearly everything, so "unsure", not "not a digit"
        assert answer["accepted"] is False and answer["reason"].startswith("unsure between ")
        assert str(answer["digit"]) in answer["reason"]


def test_without_calibration_metadata_everything_is_accepted_as_before(small_model_path, scribble):
    with TestClient(create_app(small_model_path)) as client:  # a .keras file: Calibration() defaults
        answer = client.post("/api/predict", json={"image": data_url(png(scribble))}).json()
        assert answer["accepted"] is True and answer["reason"] is None
        assert answer["confidence"] == max(answer["probabilities"])
        model = client.get("/api/model").json()
    assert model["calibration"] == {
        "temperature": 1.0,
        "threshold": 0.0,
        "unsure_mass": 0.8,
        "digit_threshold": 0.0,
        "source": dict.fromkeys(["temperature", "threshold", "unsure_mass", "digit_threshold"], "default"),
    }
    assert model["file"] == "model-small.keras" and model["runtime"] == "Keras"


# --- GET /api/model -----------------------------------------------------------------------------------


def test_api_model_shows_the_model_and_its_calibration(calibrated_bundle, client):
    sha = hashlib.sha256((calibrated_bundle / "model.tflite").read_bytes()).hexdigest()[:12]
    assert client.get("/api/model").json() == {
        "model": sha,
        "file": "model.tflite",
        "runtime": "LiteRT",
        "precision": "float32",
        "classes": 10,
        "collecting": False,
        "calibration": {
            **FIXTURE_CALIBRATION,
            "source": dict.fromkeys(["temperature", "threshold", "unsure_mass", "digit_threshold"], "bundle"),
        },
    }
    assert client.get("/ready").json()["model"] == sha
    with TestClient(create_app(calibrated_bundle, calibration={"threshold": 0.9})) as overridden:
        shown = overridden.get("/api/model").json()["calibration"]
    assert shown["threshold"] == 0.9 and shown["temperature"] == FIXTURE_CALIBRATION["temperature"]
    assert shown["source"] == {
        "temperature": "bundle",
        "threshold": "flag",
        "unsure_mass": "bundle",
        "digit_threshold": "bundle",
    }


def test_api_model_waits_for_the_model(calibrated_bundle):
    r = TestClient(create_app(calibrated_bundle)).get("/api/model")  # no `with`: not loaded yet
    assert r.status_code == 503 and "loading" in r.json()["detail"]


def test_openapi_documents_the_new_fields(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("Result", "Prediction"):
        fields = schemas[name]["properties"]
        assert {"accepted", "confidence", "reason"} <= set(schemas[name]["required"])
        assert fields["accepted"]["type"] == "boolean" and "description" in fields["confidence"]
        reasons = [e for e in fields["reason"]["examples"] if e]
        assert reasons == ["not a digit", "unsure between 4 and 9"]
        assert any(e["accepted"] is False for e in schemas[name]["examples"])
    model = spec["paths"]["/api/model"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert model == {"$ref": "#/components/schemas/ModelInfo"}
    calibration = set(schemas["CalibrationInUse"]["properties"])
    assert calibration == {"temperature", "threshold", "unsure_mass", "digit_threshold", "source"}


# --- where the calibration comes from -----------------------------------------------------------------


def copy_bundle(bundle: Path, to: Path) -> Path:
    shutil.copytree(bundle, to)
    return to


def test_bundle_calibration_reads_only_its_key(calibrated_bundle, small_model_path, tmp_path):
    assert bundle_calibration(calibrated_bundle).as_dict() == FIXTURE_CALIBRATION
    assert bundle_calibration(calibrated_bundle / "model.tflite").as_dict() == FIXTURE_CALIBRATION
    assert bundle_calibration(small_model_path) is None  # a .keras file has no bundle metadata
    copy = with_calibration(copy_bundle(calibrated_bundle, tmp_path / "serving"), None)
    assert bundle_calibration(copy) is None  # an older bundle
    assert load_predictor(copy).sha == load_predictor(calibrated_bundle).sha  # the key is not part of it
    (copy / "model.json").unlink()
    assert bundle_calibration(copy) is None  # a bare .tflite file


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        ({"threshold": 1.5}, r"threshold must lie in \[0, 1\], got 1.5"),
        ({"temperature": 0}, r"temperature must be a positive number, got 0.0"),
        ({"temprature": 2}, r"unknown calibration keys \['temprature'\]"),
        ("0.5", r"expected an object, got str"),
    ],
    ids=["threshold", "temperature", "unknown key", "not an object"],
)
def test_bad_calibration_in_the_bundle_is_refused(calibrated_bundle, tmp_path, calibration, message):
    copy = with_calibration(copy_bundle(calibrated_bundle, tmp_path / "serving"), calibration)
    with pytest.raises(DigitsError, match=rf"model.json: bad calibration \({message}\)"):
        create_app(copy)
    assert main(["--model", str(copy)]) == 1  # the server does not start


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--threshold", "1.5", "--threshold must lie in [0, 1], got 1.5"),
        ("--threshold", "nan", "--threshold must lie in [0, 1], got nan"),
        ("--temperature", "0", "--temperature must be a positive number, got 0.0"),
        ("--temperature", "inf", "--temperature must be a positive number, got inf"),
        ("--unsure-mass", "-0.1", "--unsure-mass must lie in [0, 1], got -0.1"),
    ],
    ids=["threshold", "threshold nan", "temperature 0", "temperature inf", "unsure-mass"],
)
def test_bad_flag_exits_naming_it_and_its_range(calibrated_bundle, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit:
        main(["--model", str(calibrated_bundle), flag, value])
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {message}")


def test_cli_flags_reach_the_app_and_are_said_at_startup(calibrated_bundle, capsys, monkeypatch):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    flags = ["--threshold", "0.9", "--unsure-mass", "0.5", "--digit-threshold", "0.3"]
    assert main(["--model", str(calibrated_bundle), *flags]) == 0
    assert (
        "calibration: temperature 1.5 (bundle), threshold 0.9 (flag), unsure_mass 0.5 (flag), "
        "digit_threshold 0.3 (flag)" in capsys.readouterr().err
    )
    with TestClient(served[0]) as client:
        shown = client.get("/api/model").json()["calibration"]
    assert (shown["threshold"], shown["unsure_mass"], shown["source"]["threshold"]) == (0.9, 0.5, "flag")
    assert (shown["digit_threshold"], shown["source"]["digit_threshold"]) == (0.3, "flag")


def test_worker_processes_get_the_flags(calibrated_bundle, monkeypatch):
    # What `--workers N` hands each process: create_app's arguments as JSON in the environment.
    options = {"model_path": str(calibrated_bundle), "threads": 1, "calibration": {"threshold": 0.25}}
    monkeypatch.setitem(os.environ, OPTIONS_ENV, json.dumps(options))
    with TestClient(app_from_env()) as client:
        shown = client.get("/api/model").json()["calibration"]
    assert shown["threshold"] == 0.25 and shown["source"]["threshold"] == "flag"
