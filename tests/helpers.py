"""Helpers shared by the test modules: repo root, image bytes, data URLs, loopback ports, a real server."""

from __future__ import annotations

import base64
import io
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

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


def bound_socket() -> socket.socket:
    """A TCP socket bound to a free port on 127.0.0.1 (the caller closes it): hand it to a server, no race."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A loopback port that was free a moment ago (bound, then released), for a server started by number."""
    with bound_socket() as sock:
        return sock.getsockname()[1]


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
