"""What one request may cost the server: body size, items, decoded pixels, decoders, timeouts, Host names.

The defaults are today's limits; `Limits` bundles them for create_app, and the CLI's `--workers` processes
get the same ones through the environment (digits.serve.server). The figures behind them are in
benchmarks/README.md, "Measurements behind design choices".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_BODY = 2 * 1024 * 1024  # bytes: a phone photo fits, the page's canvas PNGs many times over
MAX_ITEMS = 256  # per batch request
# Decoded pixels per request: a full batch of the page's 280x280 canvases, or one of the largest pictures
# and a few more. Decoding costs CPU in proportion to the pixels: this bounds a request's CPU time.
MAX_REQUEST_PIXELS = MAX_ITEMS * 280 * 280
DECODE_SLOTS = 4  # pictures decoded at once (each holds a large buffer while it decodes); the rest wait ...
QUEUE_TIMEOUT = 5.0  # ... this many seconds for a slot, then get a 503 with Retry-After
BODY_TIMEOUT = 20.0  # seconds for the whole body to arrive (2 MiB at 1 Mbit/s takes 17 s)
# Bytes held by all the bodies still arriving: 32 full ones. Slow bodies are dropped to make room for fast
# ones (digits.serve.middleware.Arrivals), so held connections cannot shut others out.
MAX_BUFFERED = 32 * MAX_BODY
HEADER_TIMEOUT = 10.0  # seconds for the request line and headers to arrive
# With --collect: corrections stored in all, and a minute, by all workers together (digits.feedback).
FEEDBACK_ITEMS = 10_000
FEEDBACK_PER_MINUTE = 30


@dataclass(frozen=True)
class Limits:
    """The server's limits. `allowed_hosts`: the Host header names served (None: any). `header_timeout` is
    kept by the HTTP protocol (digits.serve.server.HeaderTimeoutProtocol), not by the app."""

    max_body: int = MAX_BODY
    max_items: int = MAX_ITEMS
    max_request_pixels: int = MAX_REQUEST_PIXELS
    decode_slots: int = DECODE_SLOTS
    queue_timeout: float = QUEUE_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    max_buffered: int = MAX_BUFFERED
    header_timeout: float = HEADER_TIMEOUT
    feedback_items: int = FEEDBACK_ITEMS
    feedback_per_minute: int = FEEDBACK_PER_MINUTE
    allowed_hosts: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.allowed_hosts is not None:  # a tuple, so a frozen Limits holds nothing mutable
            object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))
