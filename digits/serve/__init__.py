"""The web app: a drawing page at `/`, a JSON API for single and batch prediction, health and readiness.

    python -m digits.serve --model models/serving --host 127.0.0.1 --port 8000

Every answer is calibrated and may be refused (digits.confidence): `probabilities` are temperature-scaled,
`confidence` is the calibrated probability of the answered digit, and below the thresholds `accepted` is false
with a `reason` ("not a digit", "unsure between 4 and 9"). Temperature and thresholds come with the bundle
(model.json); flags override them.

A .tflite model (the export stage's) runs on LiteRT and the server never imports TensorFlow; a .keras model
runs through a tf.function (digits.runtime has both).

Endpoints are plain `def` functions: FastAPI runs them in its thread pool, so CPU-bound preprocessing and
inference never block the event loop. Every input goes through digits.mnistify (MNIST-style centring) and
bad input is a 4xx with a `{"detail": "..."}` message, never a 500.

The package, by concern: limits (what a request may cost: Limits), schema (the published models, examples
and error responses), middleware (body limits, allowed hosts, security headers), inputs (reading and
decoding a request's pictures), app (create_app and the endpoints), server (the command line, workers, the
HTTP protocol). The names below are its public interface.
"""

from uvicorn.config import STARTUP_FAILURE

from digits.serve.app import create_app, get_predictor, resolve_calibration
from digits.serve.inputs import ClientGone, decode_data_url, read_batch, read_item
from digits.serve.limits import (
    BODY_TIMEOUT,
    DECODE_SLOTS,
    HEADER_TIMEOUT,
    MAX_BODY,
    MAX_ITEMS,
    MAX_REQUEST_PIXELS,
    QUEUE_TIMEOUT,
    Limits,
)
from digits.serve.middleware import DISCONNECTED, Guard, LimitBody
from digits.serve.schema import (
    CONTENT_ERRORS,
    EXAMPLE_IMAGE,
    EXAMPLE_PIXELS,
    Batch,
    BatchPrediction,
    CalibrationInUse,
    Item,
    ModelInfo,
    Prediction,
    Problem,
    Result,
)
from digits.serve.server import (
    DEFAULT_MODELS,
    HEADER_TIMEOUT_ENV,
    LOOPBACK_HOSTS,
    OPTIONS_ENV,
    HeaderTimeoutProtocol,
    app_from_env,
    main,
)

__all__ = [
    "BODY_TIMEOUT",
    "CONTENT_ERRORS",
    "DECODE_SLOTS",
    "DEFAULT_MODELS",
    "DISCONNECTED",
    "EXAMPLE_IMAGE",
    "EXAMPLE_PIXELS",
    "HEADER_TIMEOUT",
    "HEADER_TIMEOUT_ENV",
    "LOOPBACK_HOSTS",
    "MAX_BODY",
    "MAX_ITEMS",
    "MAX_REQUEST_PIXELS",
    "OPTIONS_ENV",
    "QUEUE_TIMEOUT",
    "STARTUP_FAILURE",
    "Batch",
    "BatchPrediction",
    "CalibrationInUse",
    "ClientGone",
    "Guard",
    "HeaderTimeoutProtocol",
    "Item",
    "LimitBody",
    "Limits",
    "ModelInfo",
    "Prediction",
    "Problem",
    "Result",
    "app_from_env",
    "create_app",
    "decode_data_url",
    "get_predictor",
    "main",
    "read_batch",
    "read_item",
    "resolve_calibration",
]
