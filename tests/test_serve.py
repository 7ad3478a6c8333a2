"""The web app through FastAPI's TestClient: every input form, batch, health/ready, every error path."""

import base64
import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import data_url, png
from PIL import Image

from digits import DigitsError
from digits.idx import read_idx
from digits.numbers import compose_number
from digits.serve import MAX_BODY, MAX_ITEMS, Limits, create_app, main
from digits.serve import inputs as serve_inputs


def _never_500(response) -> None:
    assert response.status_code < 500, f"{response.request.url}: {response.status_code} {response.read()!r}"


@pytest.fixture(scope="module")
def client(small_model_path):
    app = create_app(small_model_path)
    with TestClient(app, raise_server_exceptions=False) as c:  # `with` runs the lifespan: model loaded
        c.event_hooks["response"] = [_never_500]
        yield c


@pytest.fixture(scope="module")
def digits(tiny_mnist_dir):
    """A few real MNIST test digits (uint8 28x28) and their labels."""
    images = read_idx(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz")[:8]
    return images, read_idx(tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz")[:8]


def check_prediction(body: dict, label: int, model_path) -> None:
    assert body["digit"] == label
    assert len(body["probabilities"]) == 10 and sum(body["probabilities"]) == pytest.approx(1, abs=1e-4)
    # A .keras file has no calibration metadata: T = 1 and threshold 0, so every answer is accepted.
    assert body["accepted"] is True and body["reason"] is None
    assert body["confidence"] == max(body["probabilities"])
    assert body["model"] == hashlib.sha256(model_path.read_bytes()).hexdigest()[:12]
    assert "input" not in body  # only on request: ?input=true


# --- health, readiness, page, docs --------------------------------------------------------------------


def test_health_and_ready(client, small_model_path):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    sha = hashlib.sha256(small_model_path.read_bytes()).hexdigest()[:12]
    assert ready.status_code == 200 and ready.json() == {
        "status": "ready",
        "model": sha,
        "file": "model-small.keras",
        "precision": "float32",
    }


def test_not_ready_before_startup(small_model_path):
    client = TestClient(create_app(small_model_path))  # no `with`: the lifespan has not run
    assert client.get("/health").status_code == 200
    ready = client.get("/ready")
    assert ready.status_code == 503 and "loading" in ready.json()["detail"]
    assert client.post("/api/predict", json={"pixels": [0.5] * 784}).status_code == 503


def test_page_and_static_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="pad"' in page.text and "/static/app.js" in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_openapi_docs_describe_both_predict_bodies(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}
    assert "/api/predict/batch" in spec["paths"]


# --- every input form ---------------------------------------------------------------------------------


def test_multipart_png_upload(client, digits, small_model_path):
    image, label = digits[0][0], int(digits[1][0])
    r = client.post("/api/predict", files={"file": ("digit.png", png(image), "image/png")})
    assert r.status_code == 200, r.text
    check_prediction(r.json(), label, small_model_path)


def test_upload_of_a_dark_on_light_photo_on_a_big_canvas(client, digits, small_model_path):
    paper = np.full((240, 320), 220, np.uint8)
    big = np.asarray(Image.fromarray(255 - digits[0][1]).resize((112, 112), Image.BILINEAR))
    paper[40:152, 150:262] = np.minimum(paper[40:152, 150:262], big)
    r = client.post("/api/predict", files={"file": ("photo.jpg", png(paper), "image/jpeg")})
    assert r.status_code == 200, r.text
    check_prediction(r.json(), int(digits[1][1]), small_model_path)


def test_json_data_url(client, digits, small_model_path):
    r = client.post("/api/predict", json={"image": data_url(png(digits[0][2]))})
    assert r.status_code == 200, r.text
    check_prediction(r.json(), int(digits[1][2]), small_model_path)


@pytest.mark.parametrize("query", ["input=true", "input=1"])
def test_input_preview_on_request(client, digits, query):
    upload = {"file": ("digit.png", png(digits[0][0]), "image/png")}
    r = client.post(f"/api/predict?{query}", files=upload)
    assert r.status_code == 200, r.text
    body = r.json()
    x = np.array(body["input"])
    assert x.shape == (28, 28) and x.min() >= 0 and x.max() == 1
    assert body["digit"] == digits[1][0]
    assert client.post("/api/predict?input=maybe", json={"pixels": [0.5] * 784}).status_code == 422


def test_json_bare_base64(client, digits):
    r = client.post("/api/predict", json={"image": base64.b64encode(png(digits[0][2])).decode()})
    assert r.status_code == 200 and r.json()["digit"] == digits[1][2]


@pytest.mark.parametrize(
    "to_pixels",
    [
        lambda x: (x / 255).tolist(),  # 28x28 in [0, 1]
        lambda x: (x / 255).ravel().tolist(),  # 784 flat
        lambda x: x.tolist(),  # 0..255 scale
        lambda x: x.ravel().astype(float).tolist(),
    ],
    ids=["28x28", "784", "28x28 0..255", "784 0..255"],
)
def test_json_pixels(client, digits, small_model_path, to_pixels):
    r = client.post("/api/predict", json={"pixels": to_pixels(digits[0][3])})
    assert r.status_code == 200, r.text
    check_prediction(r.json(), int(digits[1][3]), small_model_path)


def test_batch_mixes_images_and_pixels_in_order(client, digits):
    images, labels = digits
    items = [{"image": data_url(png(x))} if i % 2 else {"pixels": x.tolist()} for i, x in enumerate(images)]
    r = client.post("/api/predict/batch", json={"items": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [res["digit"] for res in body["results"]] == labels.tolist()
    assert all(len(res["probabilities"]) == 10 for res in body["results"])
    assert body["model"] == client.get("/ready").json()["model"]


def test_batch_at_the_item_limit_is_accepted(client, digits):
    items = [{"pixels": digits[0][i % 8].ravel().tolist()} for i in range(MAX_ITEMS)]
    r = client.post("/api/predict/batch", json={"items": items})
    assert r.status_code == 200 and len(r.json()["results"]) == MAX_ITEMS


# --- whole numbers, and why -----------------------------------------------------------------------------


def test_a_number_is_read_digit_by_digit(client, digits, small_model_path):
    images, labels = digits
    picture, boxes = compose_number(images[:5], np.random.default_rng(3), touching=0)
    upload = {"file": ("number.png", png(np.rint(picture * 255).astype(np.uint8)), "image/png")}
    r = client.post("/api/read?input=true", files=upload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["number"] == "".join(map(str, labels[:5])) and body["accepted"] is True
    assert body["model"] == hashlib.sha256(small_model_path.read_bytes()).hexdigest()[:12]
    for answer, box in zip(body["digits"], boxes, strict=True):
        left, top, width, height = answer["box"]
        assert (
            box[0] <= left < left + width <= box[0] + box[2]
            and box[1] <= top < top + height <= box[1] + box[3]
        )
        assert np.array(answer["input"]).shape == (28, 28) and "explain" not in answer
        assert len(answer["probabilities"]) == 10 and answer["reason"] is None


def test_a_number_as_json_and_its_errors(client, digits):
    two = np.concatenate([digits[0][0], np.zeros((28, 8), np.uint8), digits[0][1]], axis=1)
    r = client.post("/api/read", json={"image": data_url(png(two))})
    assert r.status_code == 200 and r.json()["number"] == f"{digits[1][0]}{digits[1][1]}"
    blank = client.post("/api/read", json={"image": data_url(png(np.zeros((40, 90), np.uint8)))})
    assert blank.status_code == 422 and "blank" in blank.json()["detail"]
    ones = np.zeros((40, 12 * 21), np.uint8)
    ones[5:35, 4::12] = 255
    many = client.post("/api/read", files={"file": ("ones.png", png(ones), "image/png")})
    assert many.status_code == 422 and "more than 20 digits" in many.json()["detail"]
    assert client.post("/api/read", content=b"x", headers={"content-type": "text/plain"}).status_code == 415


def test_explain_returns_an_occlusion_map_that_lights_the_ink(client, digits):
    r = client.post("/api/predict?explain=true&input=true", json={"pixels": digits[0][2].tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    why, x = np.array(body["explain"]), np.array(body["input"])
    assert why.shape == (28, 28) and why[x > 0.2].mean() > 3 * max(why[x <= 0.2].mean(), 1e-6)
    assert "explain" not in client.post("/api/predict", json={"pixels": digits[0][2].tolist()}).json()
    read = client.post("/api/read?explain=true", json={"pixels": digits[0][2].tolist()}).json()
    assert np.array(read["digits"][0]["explain"]).shape == (28, 28)


def test_corrections_are_refused_unless_the_server_collects(client, digits):
    body = {"image": data_url(png(digits[0][0])), "label": 1, "answered": int(digits[1][0])}
    r = client.post("/api/feedback", json=body)
    assert r.status_code == 403 and "--collect DIR" in r.json()["detail"]
    assert client.get("/api/model").json()["collecting"] is False


def test_a_collecting_server_stores_a_correction(small_model_path, digits, tmp_path):
    app = create_app(small_model_path, collect=tmp_path / "collected", limits=Limits(feedback_per_minute=2))
    with TestClient(app) as c:
        assert c.get("/api/model").json()["collecting"] is True
        body = {"image": data_url(png(digits[0][0])), "label": "not a digit", "answered": 7}
        first = c.post("/api/feedback", json=body)
        assert first.status_code == 201 and first.json() == {"stored": "000001.png"}
        assert c.post("/api/feedback", json={**body, "label": 7, "model": "0123456789ab"}).status_code == 201
        busy = c.post("/api/feedback", json=body)
        assert busy.status_code == 429 and int(busy.headers["retry-after"]) >= 1
        bad = c.post("/api/feedback", json={**body, "label": 12})
        assert (
            bad.status_code == 422
            and bad.json()["detail"] == 'label: must be a digit 0..9 or "not a digit", got 12'
        )
        blank = c.post("/api/feedback", json={**body, "image": data_url(png(np.zeros((28, 28), np.uint8)))})
        assert blank.status_code == 422 and "blank" in blank.json()["detail"]
    items = [json.loads(line) for line in (tmp_path / "collected" / "labels.jsonl").read_text().splitlines()]
    sha = hashlib.sha256(small_model_path.read_bytes()).hexdigest()[:12]
    assert [(i["label"], i["answered"], i["model"]) for i in items] == [
        ("not a digit", 7, sha),
        (7, 7, "0123456789ab"),
    ]


# --- every error path: 4xx with a specific message, never 500 ------------------------------------------


PREDICT, BATCH = "/api/predict", "/api/predict/batch"


def _post_json(client: TestClient, path: str, body: bytes):
    return client.post(path, content=body, headers={"content-type": "application/json"})


def _detail(response, status: int) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    return detail


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"pixels": np.zeros((27, 28)).tolist()}, r"shape (27, 28)"),
        ({"pixels": [0.5] * 783}, "shape (783,)"),
        ({"pixels": [[0.5] * 28] * 27 + [[0.5] * 3]}, "28x28 array or a flat list of 784"),
        ({"pixels": ["x"] * 784}, "must be numbers"),
        ({"pixels": ["255"] + [0] * 783}, "pixels must be numbers, got the string '255' at pixels[0]"),
        ({"pixels": [0] * 783 + [True]}, "got true at pixels[783]"),
        (
            {"pixels": [[0] * 28] * 3 + [[0] * 5 + [None] + [0] * 22] + [[0] * 28] * 24},
            "got null at pixels[3][5]",
        ),
        ({"pixels": [[0] * 28] * 27 + [[0] * 27 + [{}]]}, "got an object at pixels[27][27]"),
        ({"pixels": None}, "pixels: Input should be a valid list"),
        ({"image": None, "pixels": [0.5] * 784}, "image: Input should be a valid string"),
        ({"pixels": [-1.0] + [0.0] * 783}, "must lie in [0, 1] or 0..255, got -1..0"),
        ({"pixels": [300.0] + [0.0] * 783}, "got 0..300"),
        ({"pixels": [0.0] * 784}, "blank"),  # the empty canvas: no guess
        ({"pixels": [255.0] * 784}, "blank"),
        ({"image": "data:image/png;base64,!!!not-base64!!!"}, "not valid base64"),
        ({"image": "data:image/png,rawbytes"}, "base64 data URL"),
        ({"image": ""}, "empty"),
        ({"image": base64.b64encode(b"GIF89a but not really").decode()}, "not an image"),
        ({"image": data_url(png(np.zeros((280, 280), np.uint8)))}, "blank"),
        ({}, "exactly one of `image`"),
        ({"image": "x", "pixels": [0] * 784}, "exactly one of `image`"),
        ({"pixel": [0] * 784}, "pixel: Extra inputs are not permitted"),
        ({"pixels": "abc"}, "pixels: Input should be a valid list"),
        ([1, 2, 3], "valid dictionary"),
    ],
)
def test_bad_json_input_is_422_with_a_specific_message(client, body, message):
    assert message in _detail(client.post("/api/predict", json=body), 422)


def test_nan_and_infinity_in_json_are_422(client):
    # Python's JSON parser accepts NaN/Infinity literals (some clients send them): they must not get through.
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        body = '{"pixels": [' + ",".join([literal] + ["0"] * 783) + "]}"
        r = client.post("/api/predict", content=body, headers={"content-type": "application/json"})
        assert "NaN or infinite" in _detail(r, 422)


def test_not_an_image_upload(client):
    r = client.post("/api/predict", files={"file": ("x.png", b"\x89PNG but not really", "image/png")})
    assert "not an image" in _detail(r, 422)


def test_truncated_png_upload(client, digits):
    data = png(np.asarray(Image.fromarray(digits[0][0]).resize((200, 200))))
    r = client.post("/api/predict", files={"file": ("x.png", data[: len(data) // 2], "image/png")})
    assert "damaged image" in _detail(r, 422)


def test_empty_canvas_upload_is_422(client):
    r = client.post("/api/predict", files={"file": ("blank.png", png(np.zeros((280, 280), np.uint8)))})
    assert "blank" in _detail(r, 422)


def test_multipart_without_a_file_field(client):
    r = client.post("/api/predict", files={"image": ("x.png", b"abc", "image/png")})
    assert "field named `file`" in _detail(r, 422)


def test_malformed_multipart_is_400(client):
    for content_type in ("multipart/form-data", "multipart/form-data; boundary=xyz"):
        r = client.post("/api/predict", content=b"garbage", headers={"content-type": content_type})
        assert "multipart" in _detail(r, 400)


def test_malformed_json_is_400(client):
    r = client.post("/api/predict", content=b'{"pixels": [1, 2', headers={"content-type": "application/json"})
    assert "not valid JSON" in _detail(r, 400)
    deep = b"[" * 100_000 + b"]" * 100_000  # would blow Python's recursion limit
    assert "not valid JSON" in _detail(
        client.post("/api/predict", content=deep, headers={"content-type": "application/json"}), 400
    )


def test_unsupported_content_type_is_415(client):
    r = client.post("/api/predict", content=b"1,2,3", headers={"content-type": "text/csv"})
    assert "multipart/form-data" in _detail(r, 415)


def test_too_many_batch_items_is_413(client):
    items = [{"pixels": [1.0] * 784}] * (MAX_ITEMS + 1)
    r = client.post("/api/predict/batch", json={"items": items})
    assert f"too many items: {MAX_ITEMS + 1} objects, at most {MAX_ITEMS}" in _detail(r, 413)


def _not_parsed(body: bytes) -> None:
    raise AssertionError("the body was parsed")


NOT_PARSED = SimpleNamespace(loads=_not_parsed)


def test_a_body_of_empty_items_is_refused_before_it_is_parsed(client, monkeypatch):
    body = b'{"items": [' + b",".join([b"{}"] * 699_000) + b"]}"  # 2 MiB
    monkeypatch.setattr(serve_inputs, "json", NOT_PARSED)
    assert "too many items: 699000 objects, at most 256" in _detail(_post_json(client, BATCH, body), 413)


def test_too_many_numbers_are_refused_before_they_are_parsed(client, monkeypatch):
    monkeypatch.setattr(serve_inputs, "json", NOT_PARSED)
    single = b'{"pixels": [' + b",".join([b"0"] * 1000) + b"]}"
    r = _post_json(client, PREDICT, single)
    assert "too many values: more than 786 in all (1 x 784 at most)" in _detail(r, 413)
    batch = b'{"items": [{"pixels": [' + b",".join([b"0"] * 300_000) + b"]}]}"
    assert "too many values" in _detail(_post_json(client, BATCH, batch), 413)


def test_bad_batch_item_names_its_index(client, digits):
    items = [{"pixels": digits[0][0].tolist()}, {"pixels": [0.0] * 784}]
    assert _detail(client.post("/api/predict/batch", json={"items": items}), 422).startswith("items[1]: ")
    assert "items is empty" in _detail(client.post("/api/predict/batch", json={"items": []}), 422)
    assert "items: Field required" in _detail(client.post("/api/predict/batch", json={}), 422)


def test_oversized_body_is_413_by_content_length(client):
    r = client.post("/api/predict", files={"file": ("big.png", b"\0" * (MAX_BODY + 1), "image/png")})
    assert "larger than the limit" in _detail(r, 413)


def test_oversized_body_is_413_while_reading_without_content_length(client):
    def chunks():  # a generator body goes out chunked, with no Content-Length to check up front
        for _ in range(MAX_BODY // 65536 + 2):
            yield b" " * 65536

    r = client.post("/api/predict", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert "larger than the limit" in _detail(r, 413)


def test_small_limits_are_configurable(small_model_path, digits):
    app = create_app(small_model_path, limits=Limits(max_body=1000, max_items=2))
    with TestClient(app) as c:
        assert c.post("/api/predict", content=b"x" * 1001).status_code == 413
        items = [{"pixels": digits[0][0].tolist()}] * 3
        assert c.post("/api/predict/batch", json={"items": items}).status_code == 413


# --- the model file -----------------------------------------------------------------------------------


def test_missing_model_file_is_a_clear_error_at_app_creation(tmp_path):
    with pytest.raises(DigitsError, match=r"no model file.*make run.*dvc pull"):
        create_app(tmp_path / "model.keras")


def test_cli_exits_with_the_message_when_the_model_is_missing(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nope.keras")]) == 1
    err = capsys.readouterr().err
    assert "nope.keras: no model file" in err and "make run" in err


def test_damaged_model_file_fails_at_startup(tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"not a zip")
    zip_expected = r"not a Keras model: a \.keras file is a zip archive and this is none"
    with pytest.raises(DigitsError, match=zip_expected), TestClient(create_app(bad)):
        pass
