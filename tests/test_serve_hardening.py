"""What the API does at its edges, in-process: pixel budget, busy decoders, clients that leave, allowed
hosts, security headers, a model that answers NaN, the published schema and its examples."""

import json
import struct
import threading

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import data_url, encode, png
from PIL import Image

import digits.serve
import digits.serve.inputs
import digits.serve.middleware
import digits.serve.server
from digits import DigitsError
from digits.runtime import Predictor
from digits.serve import (
    EXAMPLE_IMAGE,
    EXAMPLE_PIXELS,
    OPTIONS_ENV,
    STARTUP_FAILURE,
    Limits,
    app_from_env,
    create_app,
)

DIGIT = np.zeros((28, 28), np.uint8)
DIGIT[4:24, 12:16] = 255  # a "1"


@pytest.fixture(scope="module")
def client(small_model_path):
    with TestClient(create_app(small_model_path), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def predictor(client):
    return client.app.state.predictor  # loaded once, lent to the apps made here


def _detail(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["detail"]


def test_batch_with_a_wrong_content_type_is_415_like_single(client):
    for path in ("/api/predict", "/api/predict/batch"):
        r = client.post(path, content=b'{"items": []}', headers={"content-type": "text/plain"})
        assert "content type 'text/plain'" in _detail(r, 415)


def test_bmp_with_a_negative_width_is_a_damaged_image(client):
    bmp = bytearray(encode(Image.new("L", (8, 8), 255), "BMP"))
    bmp[18:22] = struct.pack("<i", -8)
    r = client.post("/api/predict", files={"file": ("x.bmp", bytes(bmp), "image/bmp")})
    detail = _detail(r, 422)
    assert "damaged image" in detail and "width" in detail and "pixels" not in detail


def test_an_image_over_the_pixel_limit_is_422_before_decoding(client):
    big = encode(Image.new("1", (4097, 4096)), "PNG")  # 2 KB of PNG, 16.8 million pixels
    assert "image is 4097x4096: more than 16777216 pixels" in _detail(
        client.post("/api/predict", json={"image": data_url(big)}), 422
    )


def test_a_request_has_a_total_pixel_budget(small_model_path, predictor):
    app = create_app(small_model_path, predictor=predictor, limits=Limits(max_request_pixels=100 * 100))
    with TestClient(app) as c:
        one = {"image": data_url(png(np.asarray(Image.fromarray(DIGIT).resize((70, 70)))))}  # 4,900 pixels
        assert c.post("/api/predict/batch", json={"items": [one, one]}).status_code == 200
        r = c.post("/api/predict/batch", json={"items": [one, one, one]})
        assert "14700 pixels in all, more than the limit of 10000 per request" in _detail(r, 413)
        # pixels count 784 each
        assert (
            c.post("/api/predict/batch", json={"items": [one, one, {"pixels": DIGIT.tolist()}]}).status_code
            == 413
        )


def test_busy_decoders_answer_503_with_retry_after(small_model_path, predictor, monkeypatch):
    app = create_app(small_model_path, predictor=predictor, limits=Limits(decode_slots=1, queue_timeout=0.2))
    decoding, release = threading.Event(), threading.Event()
    real = digits.serve.inputs.decode_image

    def slow_decode(image):
        decoding.set()
        release.wait(10)
        return real(image)

    monkeypatch.setattr(digits.serve.inputs, "decode_image", slow_decode)
    body = {"image": data_url(png(DIGIT))}
    with TestClient(app) as first, TestClient(app) as second:
        holder = threading.Thread(target=lambda: first.post("/api/predict", json=body))
        holder.start()
        try:
            assert decoding.wait(10)
            r = second.post("/api/predict", json={"pixels": DIGIT.tolist()})  # pixels need no decoder
            assert r.status_code == 200
            r = second.post("/api/predict", json=body)
            assert "decoders are busy" in _detail(r, 503) and r.headers["retry-after"] == "1"
        finally:
            release.set()
            holder.join()


def test_work_stops_when_the_client_disconnects(client, monkeypatch):
    """The client sends a 20-picture batch and leaves: the server decodes at most the first picture."""
    decoded = []
    real = digits.serve.inputs.decode_image
    monkeypatch.setattr(digits.serve.inputs, "decode_image", lambda image: decoded.append(1) or real(image))
    body = json.dumps({"items": [{"image": data_url(png(DIGIT))}] * 20}).encode()
    messages = iter([{"type": "http.request", "body": body, "more_body": False}])
    sent = []

    async def receive() -> dict:
        return next(messages, {"type": "http.disconnect"})  # gone as soon as the body is sent

    async def send(message: dict) -> None:
        sent.append(message)

    anyio.run(client.app, _scope("/api/predict/batch", len(body)), receive, send)
    assert len(decoded) <= 1, f"decoded {len(decoded)} of 20 pictures for a client that had left"
    assert sent[0]["status"] == 499


def _scope(path: str, body_length: int) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(body_length).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


def test_slow_uploads_make_room_for_fast_ones(small_model_path, predictor, monkeypatch):
    """Two slow bodies hold most of the upload budget; a fast one needing room drops the older, not itself."""
    monkeypatch.setattr(digits.serve.middleware, "SLOW", 0.05)
    app = create_app(small_model_path, predictor=predictor, limits=Limits(max_buffered=100_000))
    fast = json.dumps({"pixels": DIGIT.tolist()}).encode()  # 3.2 kB
    answers: dict[str, list[dict]] = {"slow 1": [], "slow 2": [], "fast": []}

    def sends(*messages: dict):
        """An ASGI receive: these messages, then nothing more (the client neither sends nor leaves)."""
        queue = list(messages)

        async def receive() -> dict:
            if queue:
                return queue.pop(0)
            await anyio.Event().wait()
            return {}

        return receive

    async def slow(name: str, size: int) -> None:
        receive = sends({"type": "http.request", "body": b" " * size, "more_body": True})
        await app(_scope("/api/predict", size * 2), receive, lambda m: _append(answers[name], m))

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(slow, "slow 1", 60_000)
            await anyio.sleep(0.1)
            tasks.start_soon(slow, "slow 2", 38_000)
            await anyio.sleep(0.1)  # both slow now, 98 kB of the 100 kB held
            receive = sends({"type": "http.request", "body": fast, "more_body": False})
            await app(_scope("/api/predict", len(fast)), receive, lambda m: _append(answers["fast"], m))
            await anyio.sleep(0.05)
            tasks.cancel_scope.cancel()  # slow 2 is still waiting for the rest of its body

    anyio.run(main)
    assert answers["fast"][0]["status"] == 200
    assert answers["slow 1"][0]["status"] == 503 and answers["slow 2"] == []  # the oldest went, only it
    assert b"still arriving after 0.05 s when faster ones needed room" in answers["slow 1"][1]["body"]


async def _append(answers: list[dict], message: dict) -> None:
    answers.append(message)


def test_allowed_hosts(small_model_path, predictor):
    app = create_app(
        small_model_path, predictor=predictor, limits=Limits(allowed_hosts=["digits.example.org", "::1"])
    )
    with TestClient(app, base_url="http://digits.example.org") as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"host": "[::1]:8000"}).status_code == 200
        r = c.get("/static", headers={"host": "evil.example.com"})
        assert "Host 'evil.example.com' is not served here" in _detail(r, 400)


def test_host_names_are_compared_in_any_case(small_model_path, predictor):
    limits = Limits(allowed_hosts=["Digits.Example.org"])
    app = create_app(small_model_path, predictor=predictor, limits=limits)
    with TestClient(app, base_url="http://DIGITS.example.ORG") as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"host": "digits.example.org:8000"}).status_code == 200


@pytest.mark.parametrize("path", ["/", "/health", "/ready", "/static/app.js", "/openapi.json"])
def test_head_is_answered_wherever_get_is(client, path):
    get, head = client.get(path), client.head(path)
    assert get.status_code == head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["content-type"] == get.headers["content-type"]


@pytest.mark.parametrize(
    "content_type", ["application/jsonfoo", "application/json-seq", "multipart/form-datax; boundary=a"]
)
def test_content_types_are_matched_exactly_not_by_prefix(client, content_type):
    for path in ("/api/predict", "/api/predict/batch"):
        r = client.post(path, content=b'{"pixels": []}', headers={"content-type": content_type})
        assert f"content type {content_type.partition(';')[0]!r}" in _detail(r, 415)


def test_media_type_parameters_and_case_are_allowed(client):
    body = json.dumps({"pixels": DIGIT.tolist()}).encode()
    r = client.post("/api/predict", content=body, headers={"content-type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200, r.text


def test_content_length_with_transfer_encoding_is_refused_and_closes(client):
    sent = []
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/predict",
        "raw_path": b"/api/predict",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-length", b"4"), (b"transfer-encoding", b"chunked")],
    }

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    anyio.run(client.app, scope, receive, send)
    assert sent[0]["status"] == 400 and (b"connection", b"close") in sent[0]["headers"]
    assert b"Content-Length and Transfer-Encoding together" in sent[1]["body"]


def test_no_redirect_names_the_request_host(client):
    r = client.get("/static", headers={"host": "evil.example.com"}, follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers


def test_security_headers(client):
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    docs = client.get("/docs")  # Swagger UI loads from a CDN: only framing is restricted there
    assert docs.headers["content-security-policy"] == "frame-ancestors 'none'"
    api = client.post("/api/predict", json={"pixels": DIGIT.tolist()})
    assert api.headers["x-content-type-options"] == "nosniff"


class NaNPredictor(Predictor):
    def __init__(self, path) -> None:
        super().__init__(path, b"")

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return np.full((len(images), 10), np.nan, np.float32)


def test_a_model_answering_nan_is_a_503_never_a_500_or_a_null(small_model_path):
    app = create_app(small_model_path, predictor=NaNPredictor(small_model_path))
    with TestClient(app, raise_server_exceptions=False) as c:
        for path, body in [
            ("/api/predict", {"pixels": DIGIT.tolist()}),
            ("/api/predict/batch", {"items": [{"pixels": DIGIT.tolist()}]}),
        ]:
            assert "NaN or infinite" in _detail(c.post(path, json=body), 503)


def test_a_model_answering_nan_never_becomes_ready(small_model_path):
    with pytest.raises(DigitsError, match=r"NaN or infinite values on a warm-up input.*damaged"):
        NaNPredictor(small_model_path).warm_up()


def test_a_worker_that_cannot_load_the_model_exits_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(OPTIONS_ENV, json.dumps({"model_path": str(tmp_path / "none.tflite"), "threads": 1}))
    with pytest.raises(SystemExit) as stopped:
        app_from_env()
    assert stopped.value.code == STARTUP_FAILURE  # what makes uvicorn's supervisor stop the others
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no model file" in err[0]


def test_openapi_documents_the_real_error_model_and_working_examples(client):
    spec = client.get("/openapi.json").json()
    problem = {"$ref": "#/components/schemas/Problem"}
    expected = {
        "/api/predict": {400, 408, 413, 415, 422, 503},
        "/api/predict/batch": {400, 408, 413, 415, 422, 503},
    }
    for path, statuses in expected.items():
        responses = spec["paths"][path]["post"]["responses"]
        assert {int(s) for s in responses if s.startswith("4") or s.startswith("5")} == statuses
        for status in statuses:
            assert responses[str(status)]["content"]["application/json"]["schema"] == problem
        assert "blank picture" in spec["paths"][path]["post"]["description"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    item = spec["components"]["schemas"]["Item"]
    assert item["additionalProperties"] is False and item["properties"]["image"]["examples"] == [
        EXAMPLE_IMAGE
    ]
    # The examples /docs offers are real pictures that the API accepts.
    for body in ({"image": EXAMPLE_IMAGE}, {"pixels": EXAMPLE_PIXELS}):
        r = client.post("/api/predict", json=body)
        assert r.status_code == 200 and r.json()["digit"] == 1, r.text


def test_workers_that_fail_to_start_make_the_cli_exit_non_zero(monkeypatch):
    import uvicorn.supervisors

    class FailedWorker:
        exitcode = STARTUP_FAILURE

    class Supervisor:  # what uvicorn's Multiprocess leaves behind when a worker could not start
        def __init__(self, config, sockets):
            self.processes = [FailedWorker(), FailedWorker()]
            sockets[0].close()

        def run(self):
            pass

    monkeypatch.setattr(uvicorn.supervisors, "Multiprocess", Supervisor)
    # (Not capsys: uvicorn.Config points logging at the sys.stderr of the moment, which capsys closes.)
    assert digits.serve.server._run_workers(2, {"host": "127.0.0.1", "port": 0, "access_log": False}) == 1
