"""The web app: a drawing page at `/`, a JSON API for single and batch prediction, health and readiness.

    python -m digits.serve --model models/model.tflite --host 127.0.0.1 --port 8000

A .tflite model (the export stage's) runs on LiteRT and the server never imports TensorFlow; a .keras model
runs through a tf.function (digits.runtime has both).

Endpoints are plain `def` functions: FastAPI runs them in its thread pool, so CPU-bound preprocessing and
inference never block the event loop. Every input goes through digits.drawing (MNIST-style centring) and
bad input is a 4xx with a `{"detail": "..."}` message, never a 500.
"""

import argparse
import base64
import binascii
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from digits import DigitsError
from digits.drawing import BadInput, prepare_image, prepare_pixels
from digits.runtime import SUFFIXES, Predictor, load_predictor

STATIC = Path(__file__).parent / "static"
MAX_BODY = 2 * 1024 * 1024  # bytes; a 280x280 canvas PNG is 1-5 KB, a phone photo JPEG 1-2 MB
MAX_ITEMS = 256  # per batch request
DEFAULT_MODELS = (Path("models/model.tflite"), Path("models/model.keras"))  # the first that exists


class Item(BaseModel):
    """One picture: `image` (a data URL or bare base64 of a PNG/JPEG/...) or `pixels` (28x28 or 784)."""

    model_config = ConfigDict(extra="forbid")
    image: str | None = Field(None, examples=["data:image/png;base64,iVBORw0KGgo..."])
    # Checked by digits.drawing rather than pydantic, for messages that name the actual problem.
    pixels: list[Any] | None = Field(None, description="28x28 nested or 784 flat numbers, [0, 1] or 0..255")


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Item] = Field(description=f"at most {MAX_ITEMS} pictures")


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


def prepare_item(item: Item) -> np.ndarray:
    if (item.image is None) == (item.pixels is None):
        raise BadInput("give exactly one of `image` (a PNG data URL) or `pixels` (28x28 or 784 numbers)")
    if item.image is not None:
        return prepare_image(decode_data_url(item.image))
    return prepare_pixels(item.pixels)


def _result(probabilities: np.ndarray) -> dict[str, Any]:
    return {
        "digit": int(probabilities.argmax()),
        "probabilities": [round(float(p), 6) for p in probabilities],
    }


def _detail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


class LimitBody:
    """ASGI middleware: bodies over `max_bytes` get a 413, judged by Content-Length and while reading.

    The body is read here (at most max_bytes) and replayed to the app, so a chunked upload without a
    Content-Length cannot run past the limit either.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = _detail(413, f"request body is larger than the limit of {self.max_bytes} bytes")
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit():
            return await _detail(400, "bad Content-Length header")(scope, receive, send)
        if int(length) > self.max_bytes:
            return await too_big(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await too_big(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def get_predictor(request: Request) -> Predictor:
    predictor = request.app.state.predictor
    if predictor is None:
        raise HTTPException(503, "the model is still loading; retry when GET /ready says 200")
    return predictor


async def read_item(request: Request) -> bytes | Item:
    """The one picture of /api/predict: the uploaded file's bytes (multipart) or a JSON Item."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise BadInput("multipart upload needs the image in a file field named `file`")
            return await upload.read()
    if content_type.startswith("application/json"):
        try:
            # ValueError covers JSONDecodeError, invalid UTF-8 (UnicodeDecodeError) and integer literals
            # past Python's 4,300-digit conversion limit; RecursionError, nesting deeper than the stack.
            body = json.loads(await request.body())
        except (ValueError, RecursionError) as e:
            raise HTTPException(400, f"body is not valid JSON: {e}") from None
        try:
            return Item.model_validate(body)
        except ValidationError as e:
            raise RequestValidationError(e.errors()) from None
    raise HTTPException(415, "send the image as multipart/form-data (field `file`) or JSON {image|pixels}")


_PREDICT_BODY = {  # read_item parses the body itself, so describe it for /docs by hand
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/Item"}},
        },
    }
}


MODEL_ENV, THREADS_ENV = "DIGITS_MODEL", "DIGITS_THREADS"  # how main() configures --workers processes


def create_app(
    model_path: str | Path, max_body: int = MAX_BODY, max_items: int = MAX_ITEMS, threads: int | None = None
) -> FastAPI:
    """The app; the model is loaded and warmed up at startup (lifespan), /ready says when that is done.

    `threads`: LiteRT kernel threads (default: the CPUs, at most 4).
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise DigitsError(
            f"{model_path}: no model file; train one with `make run` (dvc repro) or fetch it with `dvc pull`"
        )
    if model_path.suffix not in SUFFIXES:
        raise DigitsError(f"{model_path}: unknown model format; expected a {' or '.join(SUFFIXES)} file")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.predictor = load_predictor(model_path, threads)
        yield
        app.state.predictor = None

    app = FastAPI(title="digits", summary="Handwritten digit recognition (MNIST CNN)", lifespan=lifespan)
    app.state.predictor = None
    app.add_middleware(LimitBody, max_bytes=max_body)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(BadInput)
    def bad_input(request: Request, e: BadInput) -> JSONResponse:
        return _detail(422, str(e))

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        # One readable line per problem instead of pydantic's nested structure.
        lines = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        return _detail(422, "; ".join(lines))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    def health() -> dict[str, str]:
        """The process is alive (says nothing about the model)."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"description": "model not loaded yet"}})
    def ready(request: Request) -> dict[str, str]:
        """200 once the model is loaded and warmed up, 503 before."""
        return {"status": "ready", "model": get_predictor(request).sha}

    @app.post("/api/predict", openapi_extra=_PREDICT_BODY)
    def predict(
        item: Annotated[bytes | Item, Depends(read_item)],
        model: Annotated[Predictor, Depends(get_predictor)],
        with_input: Annotated[bool, Query(alias="input", description="add the 28x28 model input")] = False,
    ) -> JSONResponse:
        """One picture -> the digit, the 10 probabilities (and with ?input=true the 28x28 model input)."""
        x = prepare_image(item) if isinstance(item, bytes) else prepare_item(item)
        body = {**_result(model(x[None])[0]), "model": model.sha}
        if with_input:  # 16 KB of JSON the page draws as a preview; API clients rarely want it
            body["input"] = np.round(x, 3).tolist()
        # Plain JSON types already: a JSONResponse skips FastAPI's per-element encoder (~1 ms for `input`).
        return JSONResponse(body)

    @app.post("/api/predict/batch", responses={413: {"description": f"more than {max_items} items"}})
    def predict_batch(batch: Batch, model: Annotated[Predictor, Depends(get_predictor)]) -> dict[str, Any]:
        """Several pictures in one call (JSON only) -> one result per item, in order."""
        if len(batch.items) > max_items:
            raise HTTPException(413, f"too many items: {len(batch.items)}, at most {max_items} per request")
        if not batch.items:
            raise BadInput("items is empty: send at least one picture")
        images = []
        for i, item in enumerate(batch.items):
            try:
                images.append(prepare_item(item))
            except BadInput as e:
                raise BadInput(f"items[{i}]: {e}") from None
        probabilities = model(np.stack(images))
        return {"results": [_result(p) for p in probabilities], "model": model.sha}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m digits.serve", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        help="a .tflite file (LiteRT, no TensorFlow) or a .keras file (default: models/model.tflite if it "
        "exists, else models/model.keras)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes, each with its own model copy (~80 MiB with LiteRT) and 1/N of the CPUs for "
        "LiteRT's threads (default: %(default)s)",
    )
    parser.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    model = args.model or next((p for p in DEFAULT_MODELS if p.is_file()), DEFAULT_MODELS[-1])
    try:
        app = create_app(model)
    except DigitsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    import uvicorn

    runtime = "LiteRT, no TensorFlow" if model.suffix == ".tflite" else "Keras on TensorFlow"
    print(f"serving {model} ({runtime}) with {args.workers} worker(s)", file=sys.stderr, flush=True)
    options = {"host": args.host, "port": args.port, "access_log": not args.no_access_log}
    if args.workers == 1:
        uvicorn.run(app, **options)
    else:  # each worker process builds its own app from the import string
        os.environ[MODEL_ENV] = str(model.resolve())
        # Kernel threads shared out, so that N workers do not each spin up a thread per core.
        os.environ[THREADS_ENV] = str(max(1, (os.cpu_count() or 1) // args.workers))
        _run_workers(args.workers, options)
    return 0


def _run_workers(workers: int, options: dict[str, Any]) -> None:
    """What uvicorn.run does for workers > 1, with the listening socket marked as TCP.

    uvicorn binds it with protocol 0, so asyncio never sets TCP_NODELAY on the accepted connections and
    every keep-alive response waits ~40 ms for the client's delayed ACK (Kludex/uvicorn#3149): measured
    here, 48 ms per request instead of 4.4 ms.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config("digits.serve:app_from_env", factory=True, workers=workers, **options)
    bound = config.bind_socket()
    sock = socket.socket(bound.family, bound.type, socket.IPPROTO_TCP, fileno=bound.detach())
    Multiprocess(config, sockets=[sock]).run()


def app_from_env() -> FastAPI:
    """The app for the model named by $DIGITS_MODEL: what `--workers` processes start."""
    return create_app(os.environ[MODEL_ENV], threads=int(os.environ.get(THREADS_ENV, 0)) or None)


if __name__ == "__main__":
    sys.exit(main())
