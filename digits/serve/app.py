"""The FastAPI app: the drawing page, health and readiness, the model's description, prediction of one
picture or a batch, and reading a whole number, every answer calibrated and accepted or refused
(digits.confidence).

Endpoints are plain `def` functions: FastAPI runs them in its thread pool, so CPU-bound preprocessing and
inference never block the event loop.
"""

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from digits import DigitsError
from digits.confidence import Calibration
from digits.feedback import Collector, FeedbackRefused
from digits.mnistify import BadInput, mnistify
from digits.numbers import MAX_DIGITS, split_number
from digits.occlusion import occlusion_map
from digits.runtime import BadOutput, Predictor, bundle_calibration, load_predictor, servable_file
from digits.serve.inputs import ClientGone, Inputs, read_batch, read_correction, read_item
from digits.serve.limits import Limits
from digits.serve.middleware import Guard, LimitBody
from digits.serve.schema import (
    BATCH_BODY,
    CONTENT_ERRORS,
    FEEDBACK_BODY,
    PREDICT_BODY,
    Batch,
    BatchPrediction,
    Correction,
    Item,
    ModelInfo,
    Prediction,
    Reading,
    Stored,
    error_responses,
    problem,
)
from digits.shapes import NUM_CLASSES

STATIC = Path(__file__).parent.parent / "static"
INPUT = "add the 28x28 model input"
EXPLAIN = (
    "add the occlusion map: per pixel of the model input, how much hiding it (a 6x6 black patch) lowers "
    "the answer's probability"
)


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


def create_app(
    model_path: str | Path,
    threads: int | None = None,
    *,
    predictor: Predictor | None = None,
    calibration: Mapping[str, float] | None = None,
    limits: Limits = Limits(),  # noqa: B008 (frozen: sharing the default is safe)
    collect: str | Path | None = None,
) -> FastAPI:
    """The app; the model is loaded and warmed up at startup (lifespan), /ready says when that is done.

    `collect`: a folder to store corrections in (POST /api/feedback; None: they are refused).
    `threads`: LiteRT kernel threads (default: the CPUs, at most 4). `predictor`: one already loaded (the
    CLI loads it first, so a bad model file is one line of error, not a traceback). `calibration`: any of
    Calibration's values (temperature, threshold, unsure_mass, digit_threshold) to use instead of the
    bundle's (the server flags); the one in use is app.state.calibration, its sources
    app.state.calibration_source. `limits`: what one request may cost.
    """
    model_path = servable_file(model_path)  # a missing or unknown file fails here, not at startup
    in_use, source = resolve_calibration(model_path, calibration)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.predictor = predictor or load_predictor(model_path, threads)
        yield
        app.state.predictor = None

    app = FastAPI(title="digits", summary="Handwritten digit recognition (MNIST CNN)", lifespan=lifespan)
    app.router.redirect_slashes = False  # its redirects name the request's Host: no redirect at all
    app.state.predictor = predictor  # ready at once if given (the lifespan sets it anyway)
    app.state.calibration, app.state.calibration_source = in_use, source
    app.state.limits = limits
    collector = Collector(collect, limits.feedback_items, limits.feedback_per_minute) if collect else None
    app.add_middleware(
        LimitBody, max_bytes=limits.max_body, timeout=limits.body_timeout, max_buffered=limits.max_buffered
    )
    app.add_middleware(Guard, allowed_hosts=limits.allowed_hosts)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _publish_request_bodies(app)
    _add_error_handlers(app)
    _add_status_routes(app, in_use, source, collecting=collector is not None)
    inputs = Inputs(limits)  # one set of decode slots for both endpoints
    _add_predict_route(app, inputs, in_use)
    _add_batch_route(app, inputs, in_use, limits)
    _add_read_route(app, inputs, in_use)
    _add_feedback_route(app, inputs, collector)
    return app


def _publish_request_bodies(app: FastAPI) -> None:
    """The bodies are parsed by read_item/read_batch/read_correction, so FastAPI does not list their
    schemas itself."""
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate_openapi()
            batch = Batch.model_json_schema(ref_template="#/components/schemas/{model}")
            spec["components"]["schemas"].update(batch.pop("$defs"), Batch=batch)
            spec["components"]["schemas"]["Correction"] = Correction.model_json_schema()
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_error_handlers(app: FastAPI) -> None:
    """Bad input is a 4xx with one readable line, never a 500."""

    @app.exception_handler(BadInput)
    def bad_input(request: Request, e: BadInput) -> JSONResponse:
        return problem(422, str(e))

    @app.exception_handler(BadOutput)
    def bad_output(request: Request, e: BadOutput) -> JSONResponse:
        return problem(503, f"{e}: the model file may be damaged; this server cannot answer")

    @app.exception_handler(ClientGone)
    def client_gone(request: Request, e: ClientGone) -> JSONResponse:
        return problem(499, "the client disconnected")  # nobody reads it; nginx's code for the case

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        # One readable line per problem instead of pydantic's nested structure.
        lines = [
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in e.errors()
        ]
        return problem(422, "; ".join(lines))


def get_predictor(request: Request) -> Predictor:
    predictor = request.app.state.predictor
    if predictor is None:
        raise HTTPException(503, "the model is still loading; retry when GET /ready says 200")
    return predictor


def _add_status_routes(
    app: FastAPI, calibration: Calibration, source: Mapping[str, str], collecting: bool
) -> None:
    """The page, health, readiness and the model's description."""

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    def health() -> dict[str, str]:
        """The process is alive (says nothing about the model)."""
        return {"status": "ok"}

    @app.get("/ready", responses=error_responses(503, said={503: "the model is not loaded yet"}))
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
        responses=error_responses(503, said={503: "the model is not loaded yet"}),
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
            "calibration": {**calibration.as_dict(), "source": source},
            "collecting": collecting,
        }


def _add_predict_route(app: FastAPI, prepare: Inputs, calibration: Calibration) -> None:
    @app.post(
        "/api/predict",
        openapi_extra=PREDICT_BODY,
        responses={200: {"model": Prediction}, **error_responses(400, 408, 413, 415, 422, 503)},
        description=f"One picture -> the digit, the 10 calibrated probabilities, whether the answer is "
        f"accepted (else why not); on request the 28x28 model input and why (an occlusion map). "
        f"{CONTENT_ERRORS}",
    )
    def predict(
        request: Request,
        item: Annotated[bytes | Item, Depends(read_item)],
        model: Annotated[Predictor, Depends(get_predictor)],
        with_input: Annotated[bool, Query(alias="input", description=INPUT)] = False,
        explain: Annotated[bool, Query(description=EXPLAIN)] = False,
    ) -> JSONResponse:
        x = prepare(request, [item], lambda i: "")[0]
        body = {**_results(model(x[None]), calibration)[0], "model": model.sha}
        _add_views(body, x, model, calibration, with_input, explain)
        # Plain JSON types already: a JSONResponse skips FastAPI's per-element encoder (slow for `input`).
        return JSONResponse(body)


def _add_read_route(app: FastAPI, prepare: Inputs, calibration: Calibration) -> None:
    @app.post(
        "/api/read",
        openapi_extra=PREDICT_BODY,
        responses={200: {"model": Reading}, **error_responses(400, 408, 413, 415, 422, 503)},
        description=f'A picture of a number written on one line ("2026") -> the number read and, per digit '
        f"left to right, its box in the picture and the answer /api/predict would give for it alone. At most "
        f"{MAX_DIGITS} digits. {CONTENT_ERRORS}",
    )
    def read(
        request: Request,
        item: Annotated[bytes | Item, Depends(read_item)],
        model: Annotated[Predictor, Depends(get_predictor)],
        with_input: Annotated[bool, Query(alias="input", description=INPUT)] = False,
        explain: Annotated[bool, Query(description=EXPLAIN)] = False,
    ) -> JSONResponse:
        def score(x: np.ndarray) -> np.ndarray:  # which cuts of touching digits read best
            return calibration.apply(model(x)).max(axis=1)

        found = prepare.each(request, [item], lambda i: "", lambda gray: split_number(gray, score))[0]
        x = np.stack([d.image for d in found])
        digits = []
        for result, digit, image in zip(_results(model(x), calibration), found, x, strict=True):
            digits.append({**result, "box": list(digit.box)})
            _add_views(digits[-1], image, model, calibration, with_input, explain)
        return JSONResponse(
            {
                "number": "".join(str(d["digit"]) for d in digits),
                "accepted": all(d["accepted"] for d in digits),
                "digits": digits,
                "model": model.sha,
            }
        )


def _add_feedback_route(app: FastAPI, prepare: Inputs, collector: Collector | None) -> None:
    off = "this server does not collect corrections (start it with --collect DIR to store them)"

    @app.post(
        "/api/feedback",
        status_code=201,
        openapi_extra=FEEDBACK_BODY,
        responses={
            201: {"model": Stored},
            **error_responses(
                400,
                403,
                408,
                413,
                415,
                422,
                429,
                503,
                507,
                said={
                    403: off,
                    429: "more corrections a minute than the server stores (see Retry-After)",
                    507: "the collection is full",
                },
            ),
        },
        description='What a picture really was ("Wrong? It was a ..." on the page): the picture, '
        "re-encoded in grey at most 512 pixels a side, and one JSON line (label, the answer, the model, the "
        "time; nothing about the client) are stored in the server's --collect folder for review. Off "
        f"unless the server runs with --collect: then 403. {CONTENT_ERRORS}",
    )
    def feedback(
        request: Request,
        correction: Annotated[Correction, Depends(read_correction)],
        model: Annotated[Predictor, Depends(get_predictor)],
    ) -> JSONResponse:
        if collector is None:
            return problem(403, off)
        gray = prepare.each(request, [Item(image=correction.image)], lambda i: "", _inked)[0]
        try:
            name = collector.store(gray, correction.label, correction.answered, correction.model or model.sha)
        except FeedbackRefused as e:
            headers = {"Retry-After": str(e.retry_after)} if e.retry_after else None
            return problem(e.status, str(e), headers)
        return JSONResponse({"stored": name}, status_code=201)


def _inked(gray: np.ndarray) -> np.ndarray:
    """The picture as it is, once it is known to hold a digit's worth of ink (EmptyInput otherwise)."""
    mnistify(gray)
    return gray


def _add_views(
    body: dict[str, Any],
    x: np.ndarray,
    model: Predictor,
    calibration: Calibration,
    with_input: bool,
    explain: bool,
) -> None:
    """What the page draws, on request: the 28x28 model input and the occlusion map of the answer."""
    if with_input:  # API clients rarely want it
        body["input"] = np.round(x, 3).tolist()
    if explain:
        why = occlusion_map(lambda batch: calibration.apply(model(batch)), x, body["digit"])
        body["explain"] = np.round(why, 4).tolist()


def _add_batch_route(app: FastAPI, prepare: Inputs, calibration: Calibration, limits: Limits) -> None:
    max_items, max_pixels = limits.max_items, limits.max_request_pixels
    too_much = {413: f"body, more than {max_items} items, or more than {max_pixels} pixels in all"}

    @app.post(
        "/api/predict/batch",
        openapi_extra=BATCH_BODY,
        responses={
            200: {"model": BatchPrediction},
            **error_responses(400, 408, 413, 415, 422, 503, said=too_much),
        },
        description="Several pictures in one call (JSON only) -> one result per item, in order. An error "
        f"names the item (`items[3]: ...`). {CONTENT_ERRORS}",
    )
    def predict_batch(
        request: Request,
        batch: Annotated[Batch, Depends(read_batch)],
        model: Annotated[Predictor, Depends(get_predictor)],
    ) -> JSONResponse:
        if not batch.items:  # too many were refused before parsing (read_batch)
            raise BadInput("items is empty: send at least one picture")
        probabilities = model(prepare(request, batch.items, lambda i: f"items[{i}]: "))
        return JSONResponse({"results": _results(probabilities, calibration), "model": model.sha})


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
