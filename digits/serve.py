"""The web app: a drawing page at `/`, a JSON API for single and batch prediction, health and readiness.

    python -m digits.serve --model models/serving --host 127.0.0.1 --port 8000

Every answer is calibrated and may be refused (digits.confidence): `probabilities` are temperature-scaled,
`confidence` is the calibrated probability of the answered digit, and below the thresholds `accepted` is false
with a `reason` ("not a digit", "unsure between 4 and 9"). Temperature and thresholds come with the bundle
(model.json); flags override them.

A .tflite model (the export stage's) runs on LiteRT and the server never imports TensorFlow; a .keras model
runs through a tf.function (digits.runtime has both).

Endpoints are plain `def` functions: FastAPI runs them in its thread pool, so CPU-bound preprocessing and
inference never block the event loop. Every input goes through digits.drawing (MNIST-style centring) and
bad input is a 4xx with a `{"detail": "..."}` message, never a 500.
"""

import argparse
import base64
import binascii
import contextlib
import ctypes
import json
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import h11
import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.h11_impl import H11Protocol

from digits import DigitsError
from digits.confidence import Calibration
from digits.drawing import MAX_PIXELS, BadInput, decode_image, mnistify, open_image, prepare_pixels
from digits.runtime import (
    PRECISIONS,
    SUFFIXES,
    BadOutput,
    Predictor,
    bundle_calibration,
    load_predictor,
    model_file,
)
from digits.shapes import NUM_CLASSES

STATIC = Path(__file__).parent / "static"
MAX_BODY = 2 * 1024 * 1024  # bytes; a 280x280 canvas PNG is 1-5 KB, a phone photo JPEG 1-2 MB
MAX_ITEMS = 256  # per batch request
# Decoded pixels per request: a full batch of the page's 280x280 canvases, or one of the largest pictures
# and a few more. Decoding costs ~25 ms of CPU per megapixel, so this bounds a request to ~0.5 CPU-s.
MAX_REQUEST_PIXELS = MAX_ITEMS * 280 * 280
DECODE_SLOTS = 4  # pictures decoded at once (each up to ~70 MB while it decodes); the rest wait ...
QUEUE_TIMEOUT = 5.0  # ... this many seconds for a slot, then get a 503 with Retry-After
BODY_TIMEOUT = 20.0  # seconds for the whole body to arrive (2 MiB at 1 Mbit/s takes 17 s)
HEADER_TIMEOUT = 10.0  # seconds for the request line and headers to arrive
DEFAULT_MODELS = (Path("models/serving"), Path("models/model.keras"))  # the first that exists
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
HEADER_TIMEOUT_ENV = "DIGITS_HEADER_TIMEOUT"  # read by HeaderTimeoutProtocol, in every worker process
OPTIONS_ENV = "DIGITS_SERVE"  # create_app's arguments (JSON) for the --workers processes
DISCONNECTED = "digits.disconnected"  # scope key: a threading.Event set when the client has gone

# A real 12x12 PNG of a "1" and a 28x28 "1" as pixels: the examples /docs offers work as they are.
EXAMPLE_IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAwAAAAMCAAAAABzHgM7AAAAGklEQVR42mNgwA/+/2dgYGBgYEIWoy4H"
    "NwAA+ukCDaInnboAAAAASUVORK5CYII="
)
EXAMPLE_PIXELS = [[255 if 4 <= r < 24 and 13 <= c < 16 else 0 for c in range(28)] for r in range(28)]
_NUMBER = {"type": "number", "minimum": 0, "maximum": 255}
_ITEM_SCHEMA = {  # what JSON Schema can say about one picture; digits.drawing checks the rest
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "image": {
            "type": "string",
            "description": "a PNG/JPEG/... file as a base64 data URL (data:image/png;base64,...) or bare "
            f"base64; at most {MAX_PIXELS} pixels",
            "pattern": r"^(data:[-\w.+]+/[-\w.+]+;base64,)?[A-Za-z0-9+/]+={0,2}$",
            "examples": [EXAMPLE_IMAGE],
        },
        "pixels": {
            "description": "28x28 nested or 784 flat numbers: [0, 1] (white ink on black), or 0..255 if any "
            "value is above 1",
            "oneOf": [
                {"type": "array", "items": _NUMBER, "minItems": 784, "maxItems": 784},
                {
                    "type": "array",
                    "minItems": 28,
                    "maxItems": 28,
                    "items": {"type": "array", "items": _NUMBER, "minItems": 28, "maxItems": 28},
                },
            ],
            "examples": [EXAMPLE_PIXELS],
        },
    },
    "oneOf": [{"required": ["image"]}, {"required": ["pixels"]}],
}
CONTENT_ERRORS = (  # the 422s JSON Schema cannot rule out: said in the docs of each operation
    "A schema-valid body can still get a 422 for its content: base64 that does not decode, bytes that are "
    "not an image Pillow reads or a damaged one, smaller than 2x2 or over the pixel limit, or a blank "
    "picture (no ink stands out, so there is no digit to guess)."
)


class Item(BaseModel):
    """One picture: `image` (a data URL or bare base64 of a PNG/JPEG/...) or `pixels` (28x28 or 784)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=lambda schema: schema.update(_ITEM_SCHEMA))
    # Not nullable (None is only the default for a missing key); checked by digits.drawing rather than
    # pydantic, for messages that name the actual problem.
    image: str = None  # type: ignore[assignment]
    pixels: list[Any] = None  # type: ignore[assignment]


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Counted by the endpoint (413 past the limit, which create_app can change), said here for the schema.
    items: list[Item] = Field(
        description="the pictures", json_schema_extra={"minItems": 1, "maxItems": MAX_ITEMS}
    )


class Problem(BaseModel):
    """Every error: one readable line."""

    detail: str = Field(examples=["items[3]: the picture is blank: no ink stands out from the background"])


# Example answers for the docs: accepted, not a digit, unsure (each row of probabilities sums to 1).
_ACCEPTED = {
    "digit": 7,
    "probabilities": [0.0004, 0.0021, 0.0035, 0.0012, 0.0003, 0.0002, 0.0001, 0.9861, 0.0009, 0.0052],
    "accepted": True,
    "confidence": 0.9861,
    "reason": None,
}
_NOT_A_DIGIT = {
    "digit": 8,
    "probabilities": [0.112, 0.043, 0.094, 0.128, 0.051, 0.097, 0.038, 0.062, 0.301, 0.074],
    "accepted": False,
    "confidence": 0.021,
    "reason": "not a digit",
}
_UNSURE = {
    "digit": 9,
    "probabilities": [0.002, 0.004, 0.003, 0.006, 0.431, 0.011, 0.001, 0.052, 0.018, 0.472],
    "accepted": False,
    "confidence": 0.472,
    "reason": "unsure between 4 and 9",
}
_MODEL_SHA = "665bf96ea53a"


class Result(BaseModel):
    """One picture's answer: the digit and how far to trust it."""

    model_config = ConfigDict(json_schema_extra={"examples": [_ACCEPTED, _NOT_A_DIGIT, _UNSURE]})
    digit: int = Field(ge=0, le=9, description="the most probable digit, also when not accepted")
    probabilities: list[float] = Field(
        min_length=10,
        max_length=10,
        description="per digit 0..9, calibrated (temperature-scaled), sum 1: how likely each digit is if the "
        "picture is one; rounded to 6 decimals",
    )
    accepted: bool = Field(
        description="whether the answer passed the server's thresholds (`confidence`, and the probability of "
        "any digit): true means trust `digit`; false "
        "means show `reason` instead of a digit"
    )
    confidence: float = Field(
        ge=0,
        le=1,
        description="the calibrated probability that the picture is `digit`: the largest of `probabilities` "
        'times the chance that it is a digit at all (a model trained with a "not a digit" class knows it)',
    )
    reason: str | None = Field(
        description='why it was not accepted: "not a digit" (no digit holds much probability), or "unsure '
        'between A and B" (two digits, A < B, hold most of it); null when accepted',
        pattern=r"^(not a digit|unsure between [0-9] and [0-9])$",
        examples=[None, "not a digit", "unsure between 4 and 9"],
    )


class Prediction(Result):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**e, "model": _MODEL_SHA} for e in (_ACCEPTED, _NOT_A_DIGIT, _UNSURE)]
        }
    )
    model: str = Field(description="the first 12 hex digits of the model file's sha256")
    input: list[list[float]] | None = Field(None, description="the 28x28 model input, with ?input=true")


class BatchPrediction(BaseModel):
    results: list[Result] = Field(description="one per item, in order")
    model: str


CalibrationSource = Literal["bundle", "flag", "default"]


class CalibrationSources(BaseModel):
    temperature: CalibrationSource
    threshold: CalibrationSource
    unsure_mass: CalibrationSource
    digit_threshold: CalibrationSource


class CalibrationInUse(BaseModel):
    """What turns the model's probabilities into calibrated ones and decides `accepted` and `reason`."""

    temperature: float = Field(
        gt=0, description="T in softmax(log p / T): above 1 softens the probabilities, below 1 sharpens"
    )
    threshold: float = Field(ge=0, le=1, description="confidence below this is not accepted (0: all are)")
    unsure_mass: float = Field(
        ge=0,
        le=1,
        description='a rejected answer whose top two probabilities sum to at least this is "unsure between '
        'A and B", else "not a digit"',
    )
    digit_threshold: float = Field(
        ge=0,
        le=1,
        description='the calibrated probability of any digit (a model with a "not a digit" class knows it) '
        'below which the answer is "not a digit" (0: never)',
    )
    source: CalibrationSources = Field(
        description="where each value came from: the serving bundle's model.json, a server flag "
        "(--temperature, --threshold, --unsure-mass, --digit-threshold), or the default (no calibration in "
        "the model's metadata: an older bundle or a .keras file)"
    )


class ModelInfo(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": _MODEL_SHA,
                    "file": "model_int8.tflite",
                    "runtime": "LiteRT",
                    "precision": "int8",
                    "classes": 10,
                    "calibration": {
                        "temperature": 1.42,
                        "threshold": 0.71,
                        "unsure_mass": 0.8,
                        "digit_threshold": 0.89,
                        "source": {
                            "temperature": "bundle",
                            "threshold": "flag",
                            "unsure_mass": "bundle",
                            "digit_threshold": "bundle",
                        },
                    },
                }
            ]
        }
    )
    model: str = Field(description="the first 12 hex digits of the model file's sha256")
    file: str = Field(description="the model file's name (a bundle's model.tflite or model_int8.tflite)")
    runtime: Literal["LiteRT", "Keras"]
    precision: Literal["float32", "int8"] = Field(description="of the model's weights and activations")
    classes: int
    calibration: CalibrationInUse


def resolve_calibration(
    model_path: str | Path, overrides: Mapping[str, float] | None = None
) -> tuple[Calibration, dict[str, str]]:
    """The calibration to serve with: the bundle's (Calibration() without one), each value in `overrides`
    replacing it; and the source of each value (bundle, flag or default) for GET /api/model."""
    overrides = dict(overrides or {})
    bundled = bundle_calibration(model_path)
    try:
        calibration = Calibration.from_dict({**(bundled or Calibration()).as_dict(), **overrides})
    except ValueError as e:
        raise DigitsError(f"calibration: {e}") from None
    default = "default" if bundled is None else "bundle"
    return calibration, {name: "flag" if name in overrides else default for name in calibration.as_dict()}


class ClientGone(Exception):
    """The client disconnected: stop working on its request."""


def _errors(*statuses: int, said: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the one error body (`said`: own wording)."""
    text = {
        400: "malformed body: not JSON, broken multipart, a bad Content-Length, or a Host not served here",
        408: "the body did not arrive in time",
        413: "body, item count or total pixels over the limit",
        415: "a content type other than the ones listed",
        422: "a body or query value the API cannot use; the message names it",
        503: "the model is still loading, or all decoders stayed busy (see Retry-After)",
        **(said or {}),
    }
    return {s: {"model": Problem, "description": text[s]} for s in statuses}


def decode_data_url(text: str) -> bytes:
    """`data:image/png;base64,....` (or bare base64) -> the image bytes."""
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise BadInput("image must be a base64 data URL (data:image/png;base64,...)")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("image is not valid base64") from None
    if not data:
        raise BadInput("image is empty")
    return data


def _detail(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


class LimitBody:
    """ASGI middleware: the body within `max_bytes` (413) and `timeout` seconds (408), and disconnects seen.

    The body is read here and replayed to the app, so a chunked upload without a Content-Length cannot run
    past the limit, and a slow one holds its buffer for `timeout` seconds at most. After the body, a task
    waits for the client's disconnect and sets scope[DISCONNECTED], so CPU-bound work in the thread pool
    can stop for a client that has gone.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        close = {"connection": "close"}  # do not read the rest of a body we refused
        too_big = _detail(413, f"request body is larger than the limit of {self.max_bytes} bytes", close)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit():
            return await _detail(400, "bad Content-Length header")(scope, receive, send)
        if int(length) > self.max_bytes:
            return await too_big(scope, receive, send)
        body, more = bytearray(), True
        with anyio.move_on_after(self.timeout) as deadline:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_bytes:
                    return await too_big(scope, receive, send)
        if deadline.cancelled_caught:
            late = f"the request body did not arrive within {self.timeout:g} s ({len(body)} bytes came)"
            return await _detail(408, late, close)(scope, receive, send)

        gone, gone_async = threading.Event(), anyio.Event()
        scope[DISCONNECTED] = gone
        replayed = False

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            gone_async.set()

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            await gone_async.wait()  # after the body: the disconnect, as the watcher saw it
            return {"type": "http.disconnect"}

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch)
            await self.app(scope, replay, send)
            tasks.cancel_scope.cancel()


class Guard:
    """ASGI middleware: only the allowed Host headers (no answer for a name an attacker points at us), and
    security headers on every response: no MIME sniffing, no framing, and a strict CSP except on /docs
    (Swagger UI loads its script from a CDN)."""

    PAGE_CSP = (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )

    def __init__(self, app: Callable[..., Awaitable[None]], allowed_hosts: Sequence[str] | None) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None or "*" in allowed_hosts else set(allowed_hosts)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = _host_name(dict(scope["headers"]).get(b"host", b"").decode("latin-1"))
        if self.allowed is not None and host not in self.allowed:
            allowed = ", ".join(sorted(self.allowed))
            message = f"Host {host!r} is not served here; allowed: {allowed} (digits.serve --allowed-hosts)"
            return await _detail(400, message)(scope, receive, send)
        docs = scope["path"] in ("/docs", "/redoc", "/docs/oauth2-redirect")
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"content-security-policy", b"frame-ancestors 'none'" if docs else self.PAGE_CSP.encode()),
        ]

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _host_name(host: str) -> str:
    """The name in a Host header, without the port: `[::1]:8000` -> `::1`, `localhost:8000` -> `localhost`."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's line and headers (config.header_timeout).

    uvicorn times out idle keep-alive connections but not a request whose headers trickle in (or never
    come), and such requests never reach the app: without this, each holds a connection forever.
    """

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: Any = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # part of the next request's head: its clock starts
            if self._header_timer is None:
                self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        timeout = float(os.environ.get(HEADER_TIMEOUT_ENV, HEADER_TIMEOUT))
        self._header_timer = self.loop.call_later(timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # something came: say why we hang up (h11 cannot, no request yet)
            body = b'{"detail": "the request headers did not arrive in time"}'
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
        self.transport.close()


def get_predictor(request: Request) -> Predictor:
    predictor = request.app.state.predictor
    if predictor is None:
        raise HTTPException(503, "the model is still loading; retry when GET /ready says 200")
    return predictor


async def _parse_json(request: Request, model: type[BaseModel]) -> Any:
    try:
        # ValueError covers JSONDecodeError, invalid UTF-8 (UnicodeDecodeError) and integer literals
        # past Python's 4,300-digit conversion limit; RecursionError, nesting deeper than the stack.
        body = json.loads(await request.body())
    except (ValueError, RecursionError) as e:
        raise HTTPException(400, f"body is not valid JSON: {e}") from None
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").lower()


async def read_item(request: Request) -> bytes | Item:
    """The one picture of /api/predict: the uploaded file's bytes (multipart) or a JSON Item."""
    content_type = _content_type(request)
    if content_type.startswith("multipart/form-data"):
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise BadInput("multipart upload needs the image in a file field named `file`")
            return await upload.read()
    if content_type.startswith("application/json"):
        return await _parse_json(request, Item)
    raise HTTPException(
        415,
        f"content type {content_type or '(none)'!r}: send the image as multipart/form-data (field "
        "`file`) or JSON {image|pixels}",
    )


async def read_batch(request: Request) -> Batch:
    """The body of /api/predict/batch: JSON only."""
    content_type = _content_type(request)
    if not content_type.startswith("application/json"):
        raise HTTPException(415, f'content type {content_type or "(none)"!r}: send JSON {{"items": [...]}}')
    return await _parse_json(request, Batch)


def _body(content: dict[str, Any], description: str) -> dict[str, Any]:
    """openapi_extra for an endpoint that parses its body itself (read_item, read_batch)."""
    return {"requestBody": {"required": True, "content": content, "description": description}}


_PREDICT_BODY = _body(
    {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        "application/json": {
            "schema": {"$ref": "#/components/schemas/Item"},
            "examples": {
                "image": {"summary": "a PNG data URL", "value": {"image": EXAMPLE_IMAGE}},
                "pixels": {"summary": "28x28 pixels, 0..255", "value": {"pixels": EXAMPLE_PIXELS}},
            },
        },
    },
    "one picture: an uploaded file (multipart, field `file`) or JSON with `image` or `pixels`",
)
_BATCH_BODY = _body(
    {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/Batch"},
            "example": {"items": [{"image": EXAMPLE_IMAGE}, {"pixels": EXAMPLE_PIXELS}]},
        }
    },
    f"1 to {MAX_ITEMS} pictures, with at most {MAX_REQUEST_PIXELS} decoded pixels in all",
)


def create_app(
    model_path: str | Path,
    max_body: int = MAX_BODY,
    max_items: int = MAX_ITEMS,
    threads: int | None = None,
    *,
    predictor: Predictor | None = None,
    max_request_pixels: int = MAX_REQUEST_PIXELS,
    decode_slots: int = DECODE_SLOTS,
    queue_timeout: float = QUEUE_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
    allowed_hosts: Sequence[str] | None = None,
    calibration: Mapping[str, float] | None = None,
) -> FastAPI:
    """The app; the model is loaded and warmed up at startup (lifespan), /ready says when that is done.

    `threads`: LiteRT kernel threads (default: the CPUs, at most 4). `predictor`: one already loaded (the
    CLI loads it first, so a bad model file is one line of error, not a traceback). `allowed_hosts`: the
    Host header names served (None: any). `calibration`: any of Calibration's values (temperature,
    threshold, unsure_mass, digit_threshold) to use instead of the bundle's (the server flags).
    """
    model_path = model_file(model_path)
    if not model_path.is_file():
        raise DigitsError(
            f"{model_path}: no model file; train one with `make run` (dvc repro) or fetch it with `dvc pull`"
        )
    if model_path.suffix not in SUFFIXES:
        raise DigitsError(f"{model_path}: unknown model format; expected a {' or '.join(SUFFIXES)} file")
    slots = threading.BoundedSemaphore(decode_slots)
    calibration_in_use, calibration_source = resolve_calibration(model_path, calibration)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.predictor = predictor or load_predictor(model_path, threads)
        yield
        app.state.predictor = None

    app = FastAPI(title="digits", summary="Handwritten digit recognition (MNIST CNN)", lifespan=lifespan)
    app.router.redirect_slashes = False  # its redirects name the request's Host: no redirect at all
    app.state.predictor = predictor  # ready at once if given (the lifespan sets it anyway)
    app.add_middleware(LimitBody, max_bytes=max_body, timeout=body_timeout)
    app.add_middleware(Guard, allowed_hosts=allowed_hosts)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # The bodies are parsed by read_item/read_batch, so FastAPI does not list their schemas itself.
        if app.openapi_schema is None:
            spec = generate_openapi()
            batch = Batch.model_json_schema(ref_template="#/components/schemas/{model}")
            spec["components"]["schemas"].update(batch.pop("$defs"), Batch=batch)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(BadInput)
    def bad_input(request: Request, e: BadInput) -> JSONResponse:
        return _detail(422, str(e))

    @app.exception_handler(BadOutput)
    def bad_output(request: Request, e: BadOutput) -> JSONResponse:
        return _detail(503, f"{e}: the model file may be damaged; this server cannot answer")

    @app.exception_handler(ClientGone)
    def client_gone(request: Request, e: ClientGone) -> JSONResponse:
        return _detail(499, "the client disconnected")  # nobody reads it; nginx's code for the case

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        # One readable line per problem instead of pydantic's nested structure.
        lines = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        return _detail(422, "; ".join(lines))

    def prepare(request: Request, items: Sequence[bytes | Item], prefix: Callable[[int], str]) -> np.ndarray:
        """The model inputs, after checking every item and the request's total pixels before decoding any."""
        opened: list[Image.Image | list[Any]] = []
        pixels = 0
        for i, item in enumerate(items):
            try:
                if isinstance(item, bytes):
                    opened.append(open_image(item))
                elif ("image" in item.model_fields_set) == ("pixels" in item.model_fields_set):
                    raise BadInput("give exactly one of `image` (a PNG data URL) or `pixels` (28x28 or 784)")
                elif item.image is not None:
                    opened.append(open_image(decode_data_url(item.image)))
                else:
                    opened.append(item.pixels)
            except BadInput as e:
                raise BadInput(f"{prefix(i)}{e}") from None
            pixels += opened[-1].width * opened[-1].height if isinstance(opened[-1], Image.Image) else 784
        if pixels > max_request_pixels:
            raise HTTPException(
                413,
                f"the pictures have {pixels} pixels in all, more than the limit of {max_request_pixels} "
                "per request: send fewer or smaller pictures (a digit needs no more than 1000x1000)",
            )
        gone = request.scope.get(DISCONNECTED) or threading.Event()
        inputs = []
        for i, source in enumerate(opened):
            if gone.is_set():
                raise ClientGone
            try:
                if isinstance(source, Image.Image):
                    if not slots.acquire(timeout=queue_timeout):
                        raise HTTPException(
                            503, "all image decoders are busy; retry in a second", {"Retry-After": "1"}
                        )
                    try:
                        inputs.append(mnistify(decode_image(source)))
                    finally:
                        slots.release()
                else:
                    inputs.append(prepare_pixels(source))
            except BadInput as e:
                raise BadInput(f"{prefix(i)}{e}") from None
        return np.stack(inputs)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    def health() -> dict[str, str]:
        """The process is alive (says nothing about the model)."""
        return {"status": "ok"}

    @app.get("/ready", responses=_errors(503, said={503: "the model is not loaded yet"}))
    def ready(request: Request) -> dict[str, str]:
        """200 once the model is loaded and warmed up (its output checked), 503 before."""
        predictor = get_predictor(request)
        return {
            "status": "ready",
            "model": predictor.sha,
            "file": predictor.path.name,  # which of a bundle's files: model.tflite or model_int8.tflite
            "precision": predictor.precision,
        }

    @app.get(
        "/api/model",
        response_model=ModelInfo,
        responses=_errors(503, said={503: "the model is not loaded yet"}),
    )
    def model_info(model: Annotated[Predictor, Depends(get_predictor)]) -> dict[str, Any]:
        """The model being served and the calibration its answers go through, with where each value came
        from."""
        return {
            "model": model.sha,
            "file": model.path.name,
            "runtime": "LiteRT" if model.path.suffix == ".tflite" else "Keras",
            "precision": model.precision,
            "classes": NUM_CLASSES,
            "calibration": {**calibration_in_use.as_dict(), "source": calibration_source},
        }

    @app.post(
        "/api/predict",
        openapi_extra=_PREDICT_BODY,
        responses={200: {"model": Prediction}, **_errors(400, 408, 413, 415, 422, 503)},
        description=f"One picture -> the digit, the 10 calibrated probabilities, whether the answer is "
        f"accepted (else why not) (and with ?input=true the 28x28 model input). {CONTENT_ERRORS}",
    )
    def predict(
        request: Request,
        item: Annotated[bytes | Item, Depends(read_item)],
        model: Annotated[Predictor, Depends(get_predictor)],
        with_input: Annotated[bool, Query(alias="input", description="add the 28x28 model input")] = False,
    ) -> JSONResponse:
        x = prepare(request, [item], lambda i: "")[0]
        body = {**_results(model(x[None]), calibration_in_use)[0], "model": model.sha}
        if with_input:  # 16 KB of JSON the page draws as a preview; API clients rarely want it
            body["input"] = np.round(x, 3).tolist()
        # Plain JSON types already: a JSONResponse skips FastAPI's per-element encoder (~1 ms for `input`).
        return JSONResponse(body)

    @app.post(
        "/api/predict/batch",
        openapi_extra=_BATCH_BODY,
        responses={
            200: {"model": BatchPrediction},
            **_errors(
                400,
                408,
                413,
                415,
                422,
                503,
                said={
                    413: f"body, more than {max_items} items, or more than {max_request_pixels} pixels in all"
                },
            ),
        },
        description="Several pictures in one call (JSON only) -> one result per item, in order. An error "
        f"names the item (`items[3]: ...`). {CONTENT_ERRORS}",
    )
    def predict_batch(
        request: Request,
        batch: Annotated[Batch, Depends(read_batch)],
        model: Annotated[Predictor, Depends(get_predictor)],
    ) -> JSONResponse:
        if len(batch.items) > max_items:
            raise HTTPException(413, f"too many items: {len(batch.items)}, at most {max_items} per request")
        if not batch.items:
            raise BadInput("items is empty: send at least one picture")
        probabilities = model(prepare(request, batch.items, lambda i: f"items[{i}]: "))
        results = _results(probabilities, calibration_in_use)
        return JSONResponse({"results": results, "model": model.sha})

    return app


def _results(probabilities: np.ndarray, calibration: Calibration) -> list[dict[str, Any]]:
    """The model's (n, 10) probabilities -> one answer per row, calibrated and accepted or not.

    `accepted` is decided on the unrounded confidence; the JSON carries it rounded like the probabilities,
    which are shown as the digits' shares (summing to 1) whatever the chance of no digit.
    """
    calibrated = calibration.apply(probabilities)
    accepted, reasons = calibration.decide(calibrated)
    return [
        {
            "digit": int(p.argmax()),
            "probabilities": [round(float(v), 6) for v in p / max(float(p.sum()), 1e-30)],
            "accepted": bool(ok),
            "confidence": round(float(p.max()), 6),
            "reason": reason,
        }
        for p, ok, reason in zip(calibrated, accepted, reasons, strict=True)
    ]


def _memory_back_to_the_os() -> None:
    """Buffers over 1 MiB (decoded pictures, their float arrays) mapped and unmapped one by one.

    glibc otherwise raises its mmap threshold to 32 MiB after the first big free and serves such buffers
    from heap arenas (one per thread), where they fragment: measured, 16 concurrent 4096x4096 uploads left
    the server at 660 MiB instead of going back to ~100. A few hundred page faults per picture are cheap.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL(None).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m digits.serve",
        description=__doc__.splitlines()[0],
        epilog="Limits: bodies over 2 MiB get 413, request heads over 16 KiB (h11's default) 400; more than "
        "--limit-concurrency connections get 503. Behind a reverse proxy, its own timeouts apply first.",
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="the export stage's serving bundle folder or a .tflite file (LiteRT, no TensorFlow; a .tflite "
        "beside a model.json is checked against it), or a .keras file (default: models/serving if it exists, "
        "else models/model.keras)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="which file of a serving bundle folder to serve: int8 (model_int8.tflite), float32 "
        "(model.tflite), or auto: int8 if the bundle's model.json says it passed its parity check against "
        "float32 on the test digits, else float32 (default: %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    parser.add_argument(
        "--allowed-hosts",
        help="comma-separated Host header names to answer (e.g. digits.example.org), others get 400; set it "
        "with --host 0.0.0.0 (default: any)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes, each with its own model copy (~80 MiB with LiteRT) and 1/N of the CPUs for "
        "LiteRT's threads (default: %(default)s)",
    )
    parser.add_argument(
        "--limit-concurrency",
        type=int,
        default=100,
        help="open connections per worker before new requests get 503; bounds the memory held by slow "
        "uploads to this many bodies (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout-keep-alive",
        type=float,
        default=5,
        help="seconds an idle connection stays open (default: 5)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=HEADER_TIMEOUT,
        help="seconds for a request's line and headers to arrive, else the connection is closed (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=BODY_TIMEOUT,
        help="seconds for a request's whole body to arrive, else 408 (default: %(default)s)",
    )
    parser.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    # Calibration: each flag replaces the one value in the bundle's model.json (see GET /api/model).
    parser.add_argument(
        "--temperature",
        type=float,
        help="T > 0: probabilities become softmax(log p / T) (default: the bundle's, else 1: unchanged)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="in [0, 1]: an answer whose calibrated top probability is below it is not accepted (default: "
        "the bundle's, else 0: all accepted)",
    )
    parser.add_argument(
        "--unsure-mass",
        type=float,
        help="in [0, 1]: a refused answer whose top two probabilities hold this much is 'unsure between A "
        "and B', else 'not a digit' (default: the bundle's, else 0.8)",
    )
    parser.add_argument(
        "--digit-threshold",
        type=float,
        help="in [0, 1]: an answer whose calibrated probability of any digit is below it is 'not a digit' "
        "(default: the bundle's, else 0: never)",
    )
    args = parser.parse_args(argv)
    for name in ("workers", "limit_concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("timeout_keep_alive", "header_timeout", "body_timeout"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    calibration = {
        name: getattr(args, name)
        for name in Calibration.__dataclass_fields__
        if getattr(args, name) is not None
    }
    for name, value in calibration.items():
        try:
            Calibration(**{name: value})
        except ValueError as e:  # "threshold must lie in [0, 1], got 1.5" -> "--threshold must lie ..."
            parser.error(f"--{name.replace('_', '-')}{str(e).removeprefix(name)}")
    try:  # a bundle folder means the file that --precision picks
        model = model_file(
            args.model or next((p for p in DEFAULT_MODELS if p.exists()), DEFAULT_MODELS[-1]), args.precision
        )
    except DigitsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    hosts = [h.strip() for h in args.allowed_hosts.split(",")] if args.allowed_hosts else None
    if hosts is None and args.host not in LOOPBACK_HOSTS:
        print(
            f"note: listening on {args.host} and answering any Host header; consider --allowed-hosts",
            file=sys.stderr,
        )
    app_options: dict[str, Any] = {
        "allowed_hosts": hosts,
        "body_timeout": args.body_timeout,
        "calibration": calibration,
    }
    try:
        # Loaded (and its output checked) before the server starts: a bad file is one line, not a traceback.
        # With --workers each process loads its own copy; this one checks the file once for all of them.
        predictor = load_predictor(model)
        app = create_app(model, predictor=predictor if args.workers == 1 else None, **app_options)
    except DigitsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.workers > 1:
        del predictor, app
    import uvicorn

    runtime = "LiteRT, no TensorFlow" if model.suffix == ".tflite" else "Keras on TensorFlow"
    print(f"serving {model} ({runtime}) with {args.workers} worker(s)", file=sys.stderr, flush=True)
    in_use, source = resolve_calibration(model, calibration)
    said = ", ".join(f"{k} {v:g} ({source[k]})" for k, v in in_use.as_dict().items())
    print(f"calibration: {said}", file=sys.stderr, flush=True)
    os.environ[HEADER_TIMEOUT_ENV] = str(args.header_timeout)
    options = {
        "host": args.host,
        "port": args.port,
        "access_log": not args.no_access_log,
        "http": "digits.serve:HeaderTimeoutProtocol",
        "limit_concurrency": args.limit_concurrency,
        "timeout_keep_alive": args.timeout_keep_alive,
    }
    if args.workers == 1:
        _memory_back_to_the_os()
        uvicorn.run(app, **options)
        return 0
    # Each worker process builds its own app from the import string; kernel threads are shared out, so
    # that N workers do not each spin up a thread per core.
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    os.environ[OPTIONS_ENV] = json.dumps(
        {"model_path": str(model.resolve()), "threads": threads, **app_options}
    )
    return _run_workers(args.workers, options)


def _run_workers(workers: int, options: dict[str, Any]) -> int:
    """What uvicorn.run does for workers > 1, with the listening socket marked as TCP; the exit status.

    uvicorn binds it with protocol 0, so asyncio never sets TCP_NODELAY on the accepted connections and
    every keep-alive response waits ~40 ms for the client's delayed ACK (Kludex/uvicorn#3149): measured
    here, 48 ms per request instead of 4.4 ms. uvicorn's supervisor stops when a worker fails to start but
    exits 0 all the same: the worker's exit code says it.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config("digits.serve:app_from_env", factory=True, workers=workers, **options)
    bound = config.bind_socket()
    sock = socket.socket(bound.family, bound.type, socket.IPPROTO_TCP, fileno=bound.detach())
    supervisor = Multiprocess(config, sockets=[sock])
    supervisor.run()
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        print("error: a worker could not load the model (its error is above); stopped", file=sys.stderr)
        return 1
    return 0


def app_from_env() -> FastAPI:
    """The app described by $DIGITS_SERVE: what `--workers` processes start. Loads the model right away,
    so a failure is one line and uvicorn's startup-failure exit code, which stops the other workers."""
    options = json.loads(os.environ[OPTIONS_ENV])
    _memory_back_to_the_os()
    try:
        predictor = load_predictor(options["model_path"], options.pop("threads"))
        return create_app(predictor=predictor, **options)
    except DigitsError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    sys.exit(main())
