"""Can slow clients shut others out? Hold slow request bodies and heads open against the real server while
normal requests are timed.

    .venv/bin/python benchmarks/slow_clients.py                       # 300 slow bodies, 1000 slow heads
    .venv/bin/python benchmarks/slow_clients.py --same-address        # attackers and users on one address
    .venv/bin/python benchmarks/slow_clients.py --server-args='--limit-concurrency 100'   # the old limit

The server runs as users start it (`python -m digits.serve`, serve_load.py's helpers). The attackers
connect from 127.0.0.1: each slow body sends its headers and half of its body (`--body-kib`, 50 KiB of
100), each slow head half a request head, then nothing; a connection the server closes is opened again at
once, so as many are held as the server lets in. Normal clients (`--clients` threads, from 127.0.0.2
unless `--same-address`) post a canvas PNG to /api/predict one after another, each on a new connection,
for `--seconds`. Reports the share answered 200 within 1 s (the goal: 95% or more), latency percentiles,
what the attackers held and the server's memory.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import resource
import selectors
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from serve_load import (
    DEFAULT_MODELS,
    HOST,
    canvas_data_url,
    sample_digits,
    start_server,
    stop_server,
    wait_ready,
)

from digits import log
from digits.measure import free_port, memory_mib


def slow_body(sent: int) -> bytes:
    """A request's head and the first `sent` bytes of a body twice as long."""
    head = "POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return (head + f"Content-Length: {2 * sent}\r\n\r\n").encode() + b" " * sent


HALF_HEAD = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"


class Attackers(threading.Thread):
    """Keeps `n` connections open, each having sent `first` and nothing more, reopening any that close."""

    def __init__(self, port: int, n: int, first: bytes, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.n, self.first, self.stop = port, n, first, stop
        self.open = selectors.DefaultSelector()  # epoll: select() stops at file number 1024
        self.opened = self.refused = 0

    def held(self) -> int:
        return len(self.open.get_map())

    def _connect(self) -> None:
        try:
            s = socket.create_connection((HOST, self.port), timeout=2)
            s.sendall(self.first)
        except OSError:
            self.refused += 1
            return
        s.setblocking(False)
        self.open.register(s, selectors.EVENT_READ)
        self.opened += 1

    def run(self) -> None:
        while not self.stop.is_set():
            while self.held() < self.n and not self.stop.is_set():
                self._connect()
            for key, _ in self.open.select(timeout=0.2):  # an answer (408, 503) or a close: it is gone
                with contextlib.suppress(OSError):
                    key.fileobj.recv(65536)
                self.open.unregister(key.fileobj)
                key.fileobj.close()
        for key in list(self.open.get_map().values()):
            key.fileobj.close()


def normal_client(port: int, body: bytes, source: str, until: float, out: list[tuple[int, float]]) -> None:
    while time.perf_counter() < until:
        start = time.perf_counter()
        try:
            c = http.client.HTTPConnection(HOST, port, timeout=10, source_address=(source, 0))
            c.request("POST", "/api/predict", body, {"Content-Type": "application/json"})
            response = c.getresponse()
            response.read()
            status = response.status
            c.close()
        except OSError:
            status = 0
        out.append((status, time.perf_counter() - start))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=next((p for p in DEFAULT_MODELS if p.exists()), None))
    parser.add_argument("--bodies", type=int, default=300, help="slow bodies held (default: %(default)s)")
    parser.add_argument("--heads", type=int, default=1000, help="slow heads held (default: %(default)s)")
    parser.add_argument(
        "--body-kib", type=int, default=50, help="of each slow body sent, half of it (default: %(default)s)"
    )
    parser.add_argument("--clients", type=int, default=4, help="normal clients (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=15, help="normal traffic for (default: %(default)s)")
    parser.add_argument("--same-address", action="store_true", help="normal clients from 127.0.0.1 too")
    parser.add_argument("--server-args", default="--no-access-log", help="extra digits.serve options")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the attackers need a few thousand
    body = json.dumps({"image": canvas_data_url(sample_digits()[7][0])}).encode()
    source = HOST if args.same_address else "127.0.0.2"
    port = free_port()
    with tempfile.TemporaryFile() as output:
        server = start_server(args.model.resolve(), port, output, args.server_args.split())
        try:
            wait_ready(server, port, output, 120)
            ready = memory_mib(server.pid)["VmRSS"]
            stop = threading.Event()
            attackers = [
                Attackers(port, args.bodies, slow_body(args.body_kib * 1024), stop),
                Attackers(port, args.heads, HALF_HEAD, stop),
            ]
            for a in attackers:
                a.start()
            time.sleep(3)  # let them take what they can
            held = [a.held() for a in attackers]
            results: list[tuple[int, float]] = []
            until = time.perf_counter() + args.seconds
            clients = [
                threading.Thread(target=normal_client, args=(port, body, source, until, results))
                for _ in range(args.clients)
            ]
            for c in clients:
                c.start()
            for c in clients:
                c.join()
            stop.set()
            memory = memory_mib(server.pid)
        finally:
            stop_server(server)
    ok = sorted(t for s, t in results if s == 200)
    fast = sum(1 for s, t in results if s == 200 and t <= 1.0)
    report = {
        "normal_requests": len(results),
        "statuses": dict(sorted(Counter(s for s, _ in results).items())),
        "share_200_within_1s": round(fast / max(1, len(results)), 4),
        "p50_s": round(ok[len(ok) // 2], 3) if ok else None,
        "p99_s": round(ok[int(len(ok) * 0.99)], 3) if ok else None,
        "held_bodies_heads": held,
        "attack_connections_opened": [a.opened for a in attackers],
        "server_rss_ready_mb": round(ready, 1),
        "server_peak_mb": round(memory["VmHWM"], 1),
        "same_address": args.same_address,
        "body_kib": args.body_kib,
        "server_args": args.server_args,
    }
    print(json.dumps(report, indent=2))
    log(f"normal requests answered 200 within 1 s: {report['share_200_within_1s']:.1%} (goal: 95%)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return 0


if __name__ == "__main__":
    sys.exit(main())
