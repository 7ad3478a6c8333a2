"""Helpers shared by the test modules: repo root, image bytes, data URLs, loopback ports, a real server,
and fixed strokes plus the rejection metadata for the calibrated fixture bundle."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageDraw

from digits.measure import free_port

ROOT = Path(__file__).resolve().parents[1]


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    """The file bytes of a PIL image saved in format fmt (options go to Image.save, e.g. exif=...)."""
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def png(array: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    """A numpy array as image file bytes: PNG unless fmt says otherwise, converted to mode first if given."""
    image = Image.fromarray(array)
    return encode(image if mode is None else image.convert(mode), fmt)


def data_url(data: bytes, mime: str = "image/png") -> str:
    """Bytes as a base64 data URL of the given media type."""
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@contextmanager
def serve(model: Path, log: Path, *options: str) -> Iterator[tuple[int, str]]:
    """`python -m digits.serve` as a subprocess on a free loopback port, once /ready says 200: (pid, URL).

    Its output goes to `log`; `options` are more CLI flags (the access log is always off).
    """
    port = free_port()
    command = [sys.executable, "-m", "digits.serve", "--model", str(model), "--port", str(port)]
    with log.open("wb") as out:
        server = subprocess.Popen([*command, "--no-access-log", *options], cwd=ROOT, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield server.pid, url
    finally:
        server.terminate()
        server.wait(timeout=20)


# --- calibrated answers: a fixture bundle with rejection metadata, a scribble and a digit --------------

# One continuous scribble across the canvas, as fractions of its width and height (0..1 across and down).
# Found by searching random strokes for a low, stable top probability under the fixture model (it has no
# "not a digit" training, so most scribbles still get a confident digit). Calibrated top probability with
# FIXTURE_CALIBRATION: 0.30-0.32 drawn in Chromium (also with the strokes shifted by up to 2% of the
# canvas), 0.32 rendered by render_strokes, 0.41 shrunk to 28x28 pixels; its top two hold at most 0.63.
SCRIBBLE = [
    [
        (0.87, 0.38), (0.48, 0.22), (0.41, 0.14), (0.83, 0.38), (0.85, 0.21), (0.63, 0.58), (0.63, 0.74),
        (0.16, 0.69), (0.12, 0.34), (0.78, 0.56), (0.84, 0.79), (0.44, 0.33), (0.26, 0.13),
    ]
]  # fmt: skip
SEVEN = [[(0.25, 0.2), (0.5, 0.2), (0.75, 0.2), (0.6, 0.5), (0.45, 0.85)]]  # 0.999 drawn in Chromium

# The rejection metadata the fixture bundle carries. T = 1.5 softens the small model, so the tests see
# calibrated probabilities that differ from the raw ones. The threshold lies between the scribble (<= 0.41
# in every form) and the drawn or real MNIST digits the tests send (>= 0.98), with a wide margin on both
# sides; the scribble's top two (<= 0.63) stay below unsure_mass, so its reason is "not a digit".
# The fixture model has 10 classes only: no "not a digit" step.
FIXTURE_CALIBRATION = {"temperature": 1.5, "threshold": 0.6, "unsure_mass": 0.8, "digit_threshold": 0.0}


def render_strokes(strokes: list[list[tuple[float, float]]], side: int = 280, width: int = 22) -> np.ndarray:
    """Strokes drawn like the page draws them: white on a black side x side canvas, round caps and joins,
    `width` pixels wide (the page's STROKE). uint8 (side, side)."""
    image = Image.new("L", (side, side))
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        points = [(x * side, y * side) for x, y in stroke]
        draw.line(points, fill=255, width=width, joint="curve")
        for x, y in points:  # round caps (and a dot for a one-point stroke)
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return np.asarray(image)


def with_calibration(bundle: Path, calibration: dict[str, Any] | None = None) -> Path:
    """The serving bundle folder with a "calibration" key written into its model.json (None: removed).

    The runtime checks model.json's sha256 and probes for the .tflite file only, so the bundle still loads.
    """
    meta_path = bundle / "model.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("calibration", None)
    if calibration is not None:
        meta["calibration"] = calibration
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return bundle


@contextmanager
def file_server(routes: dict[str, tuple[bytes, int]]) -> Iterator[str]:
    """A loopback HTTP server answering GET path with routes[path] = (body, the Content-Length to announce;
    less than announced is a connection cut mid-body), 404 for any other path. Yields its base URL."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in routes:
                self.send_error(404)
                return
            body, length = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # keep pytest output quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def sha(path: Path) -> str:
    """A file's sha256, short: enough to tell two files apart in a test."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
