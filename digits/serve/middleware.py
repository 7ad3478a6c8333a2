"""ASGI middleware around the app: the body within its size and time limits (LimitBody), only the allowed
Host names and security headers on every answer (Guard). Both answer with the API's one error body."""

import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
from fastapi.responses import JSONResponse

from digits.serve.schema import problem

DISCONNECTED = "digits.disconnected"  # scope key: a threading.Event set when the client has gone
CLOSE = {"connection": "close"}  # with a refusal: do not read the rest of that body as the next request
RETRY = {**CLOSE, "retry-after": "1"}


SLOW = 1.0  # seconds: a body still arriving after this long is a slow one


@dataclass(eq=False)
class _Arriving:
    started: float
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    held: int = 0  # bytes of it received so far
    dropped: bool = False


class Arrivals:
    """The request bodies still arriving, over all requests, and the bytes they hold: at most `budget`.

    A body that needs room has the slow ones (still arriving after SLOW seconds), oldest first, dropped for
    it, and a body that arrives whole, in one piece, any other that is still arriving: however many uploads
    are held open, a client that sends its body at once is served, and the memory they hold stays bounded.
    Only the event loop's thread uses it: no lock.
    """

    def __init__(self, budget: int) -> None:
        self.budget, self.held = budget, 0
        self.bodies: list[_Arriving] = []  # oldest first

    def begin(self) -> _Arriving:
        self.bodies.append(_Arriving(anyio.current_time()))
        return self.bodies[-1]

    def take(self, me: _Arriving, n: int, whole: bool = False) -> bool:
        """Room for n more bytes of `me` (all of its body if `whole`), dropping others if need be; False if
        there is none."""
        now = anyio.current_time()
        for other in self.bodies:
            if self.held + n <= self.budget or (now - other.started < SLOW and not whole):
                break  # room, or no slower body left to drop
            if other is not me and not other.dropped:
                other.dropped = True
                other.scope.cancel()
                self.held -= other.held
                other.held = 0
        if self.held + n > self.budget:
            return False
        me.held += n
        self.held += n
        return True

    def end(self, me: _Arriving) -> None:
        self.held -= me.held
        self.bodies.remove(me)


class LimitBody:
    """ASGI middleware: the body within `max_bytes` (413) and `timeout` seconds (408), and disconnects seen.

    The body is read here and replayed to the app, so a chunked upload without a Content-Length cannot run
    past the limit, and a slow one holds its buffer for `timeout` seconds at most. After the body, a task
    waits for the client's disconnect and sets scope[DISCONNECTED], so CPU-bound work in the thread pool
    can stop for a client that has gone.
    """

    def __init__(
        self, app: Callable[..., Awaitable[None]], max_bytes: int, timeout: float, max_buffered: int
    ) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout
        self.arrivals = Arrivals(max_buffered)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body = self._framing(dict(scope["headers"])) or await self._read(receive)
        if body is None:
            return  # the client left
        if isinstance(body, JSONResponse):
            return await body(scope, receive, send)

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
                return {"type": "http.request", "body": body, "more_body": False}
            await gone_async.wait()  # after the body: the disconnect, as the watcher saw it
            return {"type": "http.disconnect"}

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch)
            await self.app(scope, replay, send)
            tasks.cancel_scope.cancel()

    async def _read(self, receive: Callable) -> bytes | JSONResponse | None:
        """The whole body; or the refusal to answer with; or None when the client disconnected."""
        body, more = bytearray(), True
        me = self.arrivals.begin()
        try:
            with me.scope, anyio.move_on_after(self.timeout) as deadline:
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) + len(chunk) > self.max_bytes:
                        return problem(
                            413, f"request body is larger than the limit of {self.max_bytes} bytes", CLOSE
                        )
                    if not self.arrivals.take(me, len(chunk), whole=not body and not more):
                        return problem(503, "too many uploads are arriving at once; retry in a second", RETRY)
                    body += chunk
        finally:
            self.arrivals.end(me)
        if me.dropped:
            return problem(
                503, f"the body was still arriving after {SLOW:g} s when faster ones needed room", RETRY
            )
        if deadline.cancelled_caught:
            late = f"the request body did not arrive within {self.timeout:g} s ({len(body)} bytes came)"
            return problem(408, late, CLOSE)
        return bytes(body)

    def _framing(self, headers: dict[bytes, bytes]) -> JSONResponse | None:
        """The answer for a body framed wrongly or declared too big; None when it may be read."""
        if b"content-length" in headers and b"transfer-encoding" in headers:
            # Two framings: a proxy in front may read the body by the other one (request smuggling), so
            # refuse, and close the connection rather than read what follows as another request.
            return problem(400, "Content-Length and Transfer-Encoding together: send one", CLOSE)
        length = headers.get(b"content-length", b"0")
        if not length.isdigit():
            return problem(400, "bad Content-Length header")
        if int(length) > self.max_bytes:
            return problem(413, f"request body is larger than the limit of {self.max_bytes} bytes", CLOSE)
        return None


class Guard:
    """ASGI middleware: only the allowed Host headers (no answer for a name an attacker points at us),
    security headers on every response (no MIME sniffing, no framing, and a strict CSP except on /docs:
    Swagger UI loads its script from a CDN), and HEAD answered wherever GET is."""

    PAGE_CSP = (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )

    def __init__(self, app: Callable[..., Awaitable[None]], allowed_hosts: Sequence[str] | None) -> None:
        self.app = app
        any_host = allowed_hosts is None or "*" in allowed_hosts
        self.allowed = None if any_host else {h.lower() for h in allowed_hosts}  # names are case-blind

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = host_name(dict(scope["headers"]).get(b"host", b"").decode("latin-1")).lower()
        if self.allowed is not None and host not in self.allowed:
            allowed = ", ".join(sorted(self.allowed))
            message = f"Host {host!r} is not served here; allowed: {allowed} (digits.serve --allowed-hosts)"
            return await problem(400, message)(scope, receive, send)
        docs = scope["path"] in ("/docs", "/redoc", "/docs/oauth2-redirect")
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"content-security-policy", b"frame-ancestors 'none'" if docs else self.PAGE_CSP.encode()),
        ]

        head = scope["method"] == "HEAD"  # answered as GET would be, headers only (RFC 9110 9.3.2)
        if head:
            scope = {**scope, "method": "GET"}

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def host_name(host: str) -> str:
    """The name in a Host header, without the port: `[::1]:8000` -> `::1`, `localhost:8000` -> `localhost`."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host
