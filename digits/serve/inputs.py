"""What a request's pictures become: its body read as one Item (or an uploaded file) or a Batch, each
picture opened and counted against the request's pixel budget before any is decoded, then decoded by at
most `decode_slots` threads at once into the 28x28 model inputs (digits.mnistify)."""

import base64
import binascii
import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from digits.mnistify import BadInput, decode_image, mnistify, open_image, pixels_to_array
from digits.serve.limits import Limits
from digits.serve.middleware import DISCONNECTED
from digits.serve.schema import DATA_URL_HEADER, Batch, Correction, Item
from digits.shapes import SIDE

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected: stop working on its request."""


def decode_data_url(text: str) -> bytes:
    """`data:image/png;base64,....` (or bare base64) -> the image bytes."""
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not re.fullmatch(DATA_URL_HEADER, header):
            raise BadInput("image must be a base64 data URL (data:image/png;base64,...)")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("image is not valid base64") from None
    if not data:
        raise BadInput("image is empty")
    return data


def check_size(body: bytes, max_items: int) -> None:
    """Refuse (413) a JSON body that cannot be at most `max_items` pictures, before it is parsed into objects
    (a 2 MiB body of `{}`s is 700,000 of them: seconds of CPU and hundreds of MiB).

    Counting bytes bounds it from above: every item is an object, so one `{` (besides the body's own), and
    every picture at most 784 numbers, so 783 commas, plus one between items and one in a data URL.
    """
    objects = body.count(b"{") - 1
    if objects > max_items:
        raise HTTPException(413, f"too many items: {objects} objects, at most {max_items} per request")
    most = max_items * (SIDE * SIDE + 2)
    if body.count(b",") > most:
        raise HTTPException(413, f"too many values: more than {most} in all ({max_items} x 784 at most)")


async def _parse_json(request: Request, model: type[BaseModel], max_items: int) -> Any:
    raw = await request.body()
    check_size(raw, max_items)
    try:
        # ValueError covers JSONDecodeError, invalid UTF-8 (UnicodeDecodeError) and integer literals
        # past Python's 4,300-digit conversion limit; RecursionError, nesting deeper than the stack.
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise HTTPException(400, f"body is not valid JSON: {e}") from None
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None


def _content_type(request: Request) -> str:
    """The media type alone, lower case: `Application/JSON; charset=utf-8` -> `application/json`."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


async def read_item(request: Request) -> bytes | Item:
    """The one picture of /api/predict: the uploaded file's bytes (multipart) or a JSON Item."""
    content_type = _content_type(request)
    if content_type == "multipart/form-data":
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise BadInput("multipart upload needs the image in a file field named `file`")
            return await upload.read()
    if content_type == "application/json":
        return await _parse_json(request, Item, 1)
    raise HTTPException(
        415,
        f"content type {content_type or '(none)'!r}: send the image as multipart/form-data (field "
        "`file`) or JSON {image|pixels}",
    )


async def read_correction(request: Request) -> Correction:
    """The body of /api/feedback: JSON only, one picture."""
    content_type = _content_type(request)
    if content_type != "application/json":
        raise HTTPException(415, f'content type {content_type or "(none)"!r}: send JSON {{"image", "label"}}')
    return await _parse_json(request, Correction, 1)


async def read_batch(request: Request) -> Batch:
    """The body of /api/predict/batch: JSON only."""
    content_type = _content_type(request)
    if content_type != "application/json":
        raise HTTPException(415, f'content type {content_type or "(none)"!r}: send JSON {{"items": [...]}}')
    return await _parse_json(request, Batch, request.app.state.limits.max_items)


class Inputs:
    """Pictures -> model inputs within the limits: the request's total pixels checked before any picture is
    decoded (413), decoders shared by all requests (503 with Retry-After when none frees up in time), and
    no more decoding once the client has gone (ClientGone). Safe to call from the thread pool."""

    def __init__(self, limits: Limits) -> None:
        self.slots = threading.BoundedSemaphore(limits.decode_slots)
        self.queue_timeout = limits.queue_timeout
        self.max_request_pixels = limits.max_request_pixels

    def __call__(
        self, request: Request, items: Sequence[bytes | Item], prefix: Callable[[int], str]
    ) -> np.ndarray:
        """The (n, 28, 28) model inputs; `prefix(i)` starts the message of an error in item i."""
        return np.stack(self.each(request, items, prefix, mnistify))

    def each(
        self,
        request: Request,
        items: Sequence[bytes | Item],
        prefix: Callable[[int], str],
        prepare: Callable[[np.ndarray], T],
    ) -> list[T]:
        """`prepare` of each picture as a grayscale (h, w) array in [0, 1] (28x28 for `pixels`)."""
        opened = self._open(items, prefix)
        gone = request.scope.get(DISCONNECTED) or threading.Event()
        inputs = []
        for i, source in enumerate(opened):
            if gone.is_set():
                raise ClientGone
            opened[i] = None  # its decoder's buffers go with the picture, not at the end of the request
            try:
                if isinstance(source, Image.Image):
                    with self._slot():
                        inputs.append(prepare(decode_image(source)))
                else:
                    inputs.append(prepare(pixels_to_array(source)))
            except BadInput as e:
                raise BadInput(f"{prefix(i)}{e}") from None
        return inputs

    def _open(
        self, items: Sequence[bytes | Item], prefix: Callable[[int], str]
    ) -> list[Image.Image | list[Any]]:
        """Every item checked and opened (its size known, nothing decoded), within the pixel budget."""
        opened: list[Image.Image | list[Any]] = []
        pixels = 0
        for i, item in enumerate(items):
            try:
                if isinstance(item, bytes):
                    with self._slot():  # opening a picture reads its headers and metadata: costs memory too
                        opened.append(open_image(item))
                elif ("image" in item.model_fields_set) == ("pixels" in item.model_fields_set):
                    raise BadInput("give exactly one of `image` (a PNG data URL) or `pixels` (28x28 or 784)")
                elif item.image is not None:
                    data = decode_data_url(item.image)
                    with self._slot():
                        opened.append(open_image(data))
                else:
                    opened.append(item.pixels)
            except BadInput as e:
                raise BadInput(f"{prefix(i)}{e}") from None
            pixels += opened[-1].width * opened[-1].height if isinstance(opened[-1], Image.Image) else 784
        if pixels > self.max_request_pixels:
            raise HTTPException(
                413,
                f"the pictures have {pixels} pixels in all, more than the limit of {self.max_request_pixels} "
                "per request: send fewer or smaller pictures (a digit needs no more than 1000x1000)",
            )
        return opened

    @contextmanager
    def _slot(self) -> Iterator[None]:
        """A decode slot, held while a picture is opened or decoded; 503 if none frees up in time."""
        if not self.slots.acquire(timeout=self.queue_timeout):
            raise HTTPException(503, "all image decoders are busy; retry in a second", {"Retry-After": "1"})
        try:
            yield
        finally:
            self.slots.release()
