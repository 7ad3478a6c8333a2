"""What the API publishes: the request and answer models, the examples /docs offers, the error responses
each operation documents, and the request bodies the endpoints parse themselves (OpenAPI `requestBody`).

Changing anything here changes the OpenAPI document (tests/fixtures/openapi.json holds the published one).
"""

from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from digits.feedback import check_label
from digits.mnistify import MAX_PIXELS
from digits.serve.limits import MAX_ITEMS, MAX_REQUEST_PIXELS

# A real 12x12 PNG of a "1" and a 28x28 "1" as pixels: the examples /docs offers work as they are.
EXAMPLE_IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAwAAAAMCAAAAABzHgM7AAAAGklEQVR42mNgwA/+/2dgYGBgYEIWoy4H"
    "NwAA+ukCDaInnboAAAAASUVORK5CYII="
)
EXAMPLE_PIXELS = [[255 if 4 <= r < 24 and 13 <= c < 16 else 0 for c in range(28)] for r in range(28)]
_NUMBER = {"type": "number", "minimum": 0, "maximum": 255}
# What digits.serve.inputs.decode_data_url accepts, said once for it and the schema: the data URL's header,
# and base64 in whole, padded quartets (what base64.b64decode(validate=True) decodes).
DATA_URL_HEADER = r"data:[-\w.+]+/[-\w.+]+;base64"
BASE64 = r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)"
_ITEM_SCHEMA = {  # what JSON Schema can say about one picture; digits.mnistify checks the rest
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "image": {
            "type": "string",
            "description": "a PNG, JPEG, WebP, GIF or BMP file as a base64 data URL (data:image/png;base64,"
            f"...) or bare base64; at most {MAX_PIXELS} pixels",
            "pattern": f"^({DATA_URL_HEADER},)?{BASE64}$",
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
    "not a PNG, JPEG, WebP, GIF or BMP image or a damaged one, smaller than 2x2 or over the pixel limit, or "
    "a blank picture (no ink stands out, so there is no digit to guess)."
)


class Item(BaseModel):
    """One picture: `image` (a PNG, JPEG, WebP, GIF or BMP, base64 or data URL) or `pixels` (28x28 or 784)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=lambda schema: schema.update(_ITEM_SCHEMA))
    # Not nullable (None is only the default for a missing key); checked by digits.mnistify rather than
    # pydantic, for messages that name the actual problem.
    image: str = None  # type: ignore[assignment]
    pixels: list[Any] = None  # type: ignore[assignment]


def _digit_or_none(value: object) -> int | str:
    """One readable message for a bad label (pydantic's would name both branches of the union)."""
    try:
        return check_label(value)
    except ValueError as e:
        raise ValueError(str(e).removeprefix("label ")) from None


DigitOrNone = Annotated[
    int | str,
    BeforeValidator(_digit_or_none),
    WithJsonSchema({"oneOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"const": "not a digit"}]}),
]


class Correction(BaseModel):
    """What a picture really was, said by its user: stored only by a server run with --collect DIR."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"image": EXAMPLE_IMAGE, "label": 1, "answered": 7, "model": "665bf96ea53a"}]
        },
    )
    image: str = Field(
        description="the picture, as for /api/predict: a PNG, JPEG, WebP, GIF or BMP as a base64 data URL or "
        "bare base64",
        pattern=f"^({DATA_URL_HEADER},)?{BASE64}$",
    )
    label: DigitOrNone = Field(description='what it is: a digit 0..9, or "not a digit"')
    answered: DigitOrNone | None = Field(None, description="what the server answered for it, if known")
    model: str | None = Field(
        None, pattern="^[0-9a-f]{12}$", description="the model that answered (a prediction's `model`)"
    )


class Stored(BaseModel):
    stored: str = Field(description="the file name the picture was stored under in the collection folder")


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Counted by the endpoint (413 past the limit, which Limits can change), said here for the schema.
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
EXPLAIN_FIELD = (
    "with ?explain=true, the 28x28 occlusion map: per pixel, the mean drop of the answered digit's "
    "calibrated probability when a 6x6 black patch covering it hides the picture (positive: the model "
    "relied on it)"
)


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
    explain: list[list[float]] | None = Field(None, description=EXPLAIN_FIELD)


class ReadDigit(Result):
    """One digit of a number: its answer, as /api/predict gives it, and where it is."""

    box: list[int] = Field(
        min_length=4,
        max_length=4,
        description="left, top, width, height of the digit's ink, in pixels of the picture as read (one over "
        "1024 pixels a side is first shrunk to 1024)",
    )
    input: list[list[float]] | None = Field(None, description="the 28x28 model input, with ?input=true")
    explain: list[list[float]] | None = Field(None, description=EXPLAIN_FIELD)


class Reading(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "number": "79",
                    "accepted": False,
                    "digits": [{**_ACCEPTED, "box": [12, 20, 40, 72]}, {**_UNSURE, "box": [70, 18, 44, 75]}],
                    "model": _MODEL_SHA,
                }
            ]
        }
    )
    number: str = Field(pattern="^[0-9]+$", description="the most probable digit of each, left to right")
    accepted: bool = Field(description="every digit accepted: trust `number` only then")
    digits: list[ReadDigit] = Field(min_length=1, description="left to right")
    model: str = Field(description="the first 12 hex digits of the model file's sha256")


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
                    "collecting": False,
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
    collecting: bool = Field(
        description="whether POST /api/feedback stores corrections (server run with --collect)"
    )


def error_responses(*statuses: int, said: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
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


def problem(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error body, `{"detail": message}`, as a response."""
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _request_body(content: dict[str, Any], description: str) -> dict[str, Any]:
    """openapi_extra for an endpoint that parses its body itself (read_item, read_batch)."""
    return {"requestBody": {"required": True, "content": content, "description": description}}


PREDICT_BODY = _request_body(
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
FEEDBACK_BODY = _request_body(
    {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/Correction"},
            "example": {"image": EXAMPLE_IMAGE, "label": 1, "answered": 7},
        }
    },
    "one picture and what it really was",
)
BATCH_BODY = _request_body(
    {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/Batch"},
            "example": {"items": [{"image": EXAMPLE_IMAGE}, {"pixels": EXAMPLE_PIXELS}]},
        }
    },
    f"1 to {MAX_ITEMS} pictures, with at most {MAX_REQUEST_PIXELS} decoded pixels in all",
)
