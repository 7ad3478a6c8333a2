"""Load-test the real web app over loopback: start `python -m digits.serve`, hammer /api/predict, report.

    .venv/bin/python benchmarks/serve_load.py                      # canvas PNG data URLs, 8 clients
    .venv/bin/python benchmarks/serve_load.py --payload pixels     # 28x28 pixel arrays instead
    .venv/bin/python benchmarks/serve_load.py --batch 64           # /api/predict/batch, 64 pictures each
    .venv/bin/python benchmarks/serve_load.py --server-args='--precision float32'  # the bundle's float file
    .venv/bin/python benchmarks/serve_load.py --json benchmarks/results/serve_load.json
    .venv/bin/python benchmarks/serve_load.py --worst --clients 16  # the costliest requests: memory, CPU

The server runs exactly as users start it (`python -m digits.serve`: uvicorn, one process, access log on;
`--server-args` adds options such as `--workers 2`). Each client is a thread
with one keep-alive http.client connection that sends a prebuilt body and times request -> full response,
so the client does little work per request. It still runs on the same machine: client and server share the
CPU cores, and the report says how much CPU each used. Every response must be a 200 naming the digit's
MNIST label; anything else counts as an error.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.client
import io
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, PngImagePlugin

from digits import log
from digits.idx import read_idx
from digits.measure import cpu_seconds, free_port, memory_mib
from digits.mnistify import MAX_FORMAT_PIXELS
from digits.serve import MAX_BODY, MAX_ITEMS, MAX_REQUEST_PIXELS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = tuple(
    ROOT / p for p in ("models/serving", "models/model.keras", "tests/fixtures/model-small.keras")
)
MNIST_TEST = ROOT / "tests" / "fixtures" / "mnist-tiny"
CANVAS = 280  # px, the drawing page's canvas
HOST = "127.0.0.1"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "serve_load.json"


# --- payloads: one real MNIST test digit per class ----------------------------------------------------


@dataclass(frozen=True)
class Payload:
    body: bytes  # the JSON request body, encoded once
    label: int | list[int]  # the digit the server must answer; a batch request's, one per picture
    path: str = "/api/predict"


def sample_digits() -> list[tuple[np.ndarray, int]]:
    """The first MNIST test digit of each class 0-9, as (uint8 28x28, label)."""
    images = read_idx(MNIST_TEST / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(MNIST_TEST / "t10k-labels-idx1-ubyte.gz")
    return [(images[int(np.flatnonzero(labels == d)[0])], d) for d in range(10)]


def canvas_data_url(image: np.ndarray) -> str:
    """What the page sends for this digit: a 280x280 RGBA PNG data URL, white ink on black.

    Upscaled 10x, then contrast-stretched so strokes are solid white with a soft edge of a few pixels, as
    the canvas draws them (a plain bilinear upscale is a blurry gradient, a PNG three times as big).
    """
    big = Image.fromarray(image).resize((CANVAS, CANVAS), Image.BILINEAR)
    ink = ((np.asarray(big, dtype=np.float32) - 96) * 4).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(ink).convert("RGBA").save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def make_payloads(kind: str, batch: int = 0) -> list[Payload]:
    """One request per sample digit; with `batch`, ten batch requests of `batch` pictures each."""
    items = []
    for image, label in sample_digits():
        items.append(
            ({"image": canvas_data_url(image)} if kind == "image" else {"pixels": image.tolist()}, label)
        )
    if not batch:
        return [Payload(json.dumps(item).encode(), label) for item, label in items]
    payloads = []
    for first in range(len(items)):
        chosen = [items[(first + i) % len(items)] for i in range(batch)]
        body = json.dumps({"items": [item for item, _ in chosen]}).encode()
        payloads.append(Payload(body, [label for _, label in chosen], "/api/predict/batch"))
    return payloads


# --- the server under test ------------------------------------------------------------------------------


class ServerDied(RuntimeError):
    pass


def start_server(model: Path, port: int, output: IO[bytes], extra: list[str]) -> subprocess.Popen[bytes]:
    # Output to a file, not a pipe: thousands of access-log lines would fill a pipe nobody reads and
    # block the server.
    command = [sys.executable, "-m", "digits.serve", "--model", str(model)]
    command += ["--host", HOST, "--port", str(port), *extra]
    log(f"starting: {' '.join(command)}")
    return subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)


def server_output(output: IO[bytes], lines: int = 40) -> str:
    output.flush()
    output.seek(0)
    return "\n".join(output.read().decode(errors="replace").splitlines()[-lines:])


def wait_ready(
    server: subprocess.Popen[bytes], port: int, output: IO[bytes], timeout: float
) -> tuple[float, dict[str, Any]]:
    """Poll GET /ready until 200; returns the seconds it took and its answer (the model file served).
    Raises ServerDied or TimeoutError."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if server.poll() is not None:
            raise ServerDied(f"the server exited with code {server.returncode}:\n{server_output(output)}")
        connection = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            connection.request("GET", "/ready")
            response = connection.getresponse()
            if response.status == 200:
                return time.perf_counter() - start, json.loads(response.read())
        except OSError:
            pass  # not listening yet, or still loading the model
        finally:
            connection.close()
        time.sleep(0.2)
    raise TimeoutError(f"the server was not ready after {timeout:.0f} s:\n{server_output(output)}")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# --- the load ---------------------------------------------------------------------------------------------


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    bad_status: int = 0
    wrong_digit: int = 0
    connection_errors: int = 0
    first_errors: list[str] = field(default_factory=list)  # a few examples for the report
    lock: threading.Lock = field(default_factory=threading.Lock)  # the client threads share one Results

    @property
    def errors(self) -> int:
        return self.bad_status + self.wrong_digit + self.connection_errors

    def note(self, message: str) -> None:
        if len(self.first_errors) < 5:
            self.first_errors.append(message)


class Tickets:
    """Hands out request numbers 0..total-1 to the client threads, then stops them."""

    def __init__(self, total: int) -> None:
        self.total, self.next, self.lock = total, 0, threading.Lock()

    def __iter__(self) -> Tickets:
        return self

    def __next__(self) -> int:
        with self.lock:
            if self.next >= self.total:
                raise StopIteration
            self.next += 1
            return self.next - 1


def post_predict(connection: http.client.HTTPConnection, body: bytes, path: str) -> tuple[int, bytes]:
    connection.request("POST", path, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def client(port: int, payloads: list[Payload], tickets: Tickets, deadline: float, results: Results) -> None:
    """One client: take the next request number, send that payload, check and time the answer."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        for n in tickets:
            if time.perf_counter() >= deadline:
                break
            payload = payloads[n % len(payloads)]
            start = time.perf_counter()
            try:
                status, data = post_predict(connection, payload.body, payload.path)
            except (OSError, http.client.HTTPException) as e:
                connection.close()  # http.client reconnects on the next request
                with results.lock:
                    results.connection_errors += 1
                    results.note(f"request {n}: {type(e).__name__}: {e}")
                continue
            elapsed = time.perf_counter() - start
            try:
                answer = json.loads(data) if status == 200 else {}
                digit = answer.get("digit") if "digit" in answer else [r["digit"] for r in answer["results"]]
            except (ValueError, KeyError, TypeError):
                digit = "not the expected JSON"
            with results.lock:
                if status != 200:
                    results.bad_status += 1
                    results.note(f"request {n}: HTTP {status}: {data[:200]!r}")
                elif digit != payload.label:
                    results.wrong_digit += 1
                    results.note(f"request {n}: answered {digit}, expected {payload.label}")
                else:
                    results.latencies.append(elapsed)
    finally:
        connection.close()


def run_load(
    port: int, payloads: list[Payload], clients: int, total: int, seconds: float
) -> tuple[Results, float]:
    """`clients` threads share `total` requests, stopped early at `seconds`; returns results, wall time."""
    results, tickets = Results(), Tickets(total)
    start = time.perf_counter()
    threads = [
        threading.Thread(target=client, args=(port, payloads, tickets, start + seconds, results))
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - start


# --- worst cases: what one legal-looking request costs the server ------------------------------------------


def _big_digit(side: tuple[int, int]) -> np.ndarray:
    """An MNIST 3 blown up to (width, height), uint8 solid white ink on black (so it compresses well)."""
    digit = sample_digits()[3][0]
    return np.where(np.asarray(Image.fromarray(digit).resize(side, Image.BILINEAR)) > 128, 255, 0).astype(
        np.uint8
    )


def _encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _ztxt_png() -> bytes:
    """A 28x28 PNG carrying 1,500 zTXt chunks of 1 MB of text each, 1.5 MB compressed (a text bomb)."""
    info = PngImagePlugin.PngInfo()
    text = "A" * 1_000_000
    for i in range(1500):
        info.add_text(f"k{i}", text, zip=True)
    return _encoded(Image.new("L", (28, 28)), "PNG", pnginfo=info)


def worst_payloads() -> dict[str, tuple[str, bytes, bool]]:
    """name -> (path, JSON body, whether to send it from --clients clients at once too) for the requests
    that cost the server most within the body limit: the largest picture of each accepted format, a text
    bomb, and the largest batches."""
    ink = _big_digit((4096, 4096))
    rgba = Image.merge("RGBA", [Image.new("L", ink.shape[::-1], 255)] * 3 + [Image.fromarray(ink)])
    bar = np.zeros((4096, 4096), np.uint8)
    bar[512:-512, 1800:2300] = 255  # a "1": a few KB as a 1-bit PNG, so 256 fit in one body
    one_bit = _encoded(Image.fromarray(bar).convert("1"), "PNG")
    rng = np.random.default_rng(0)
    paper = 200 - _big_digit((4032, 3024)) * 0.6 + rng.normal(0, 3, (3024, 4032))
    photo = _encoded(Image.fromarray(paper.clip(0, 255).astype(np.uint8)).convert("RGB"), "JPEG", quality=80)

    def item(data: bytes, mime: str = "image/png") -> dict[str, str]:
        return {"image": f"data:{mime};base64," + base64.b64encode(data).decode()}

    n = min(MAX_ITEMS, int(MAX_BODY * 0.99) // (len(json.dumps(item(one_bit))) + 2))  # as many as fit
    items = [item(one_bit)] * n
    big, digit = _encoded(rgba, "PNG"), sample_digits()[3][0]
    canvases = (MAX_REQUEST_PIXELS - 4096 * 4096) // (CANVAS * CANVAS)
    side = int(MAX_FORMAT_PIXELS["WEBP"] ** 0.5)
    webp = _encoded(rgba.resize((side, side)), "WEBP", lossless=True, quality=0, method=0)
    gif = _encoded(Image.fromarray(ink).convert("P"), "GIF")

    def one(data: bytes, mime: str = "image/png") -> tuple[str, bytes, bool]:
        return "/api/predict", json.dumps(item(data, mime)).encode(), True

    return {
        "4096x4096 RGBA PNG": one(big),
        "4032x3024 JPEG photo": one(photo, "image/jpeg"),
        f"{side}x{side} lossless RGBA WebP": one(webp, "image/webp"),
        "4096x4096 lossless RGBA WebP (refused)": one(
            _encoded(rgba, "WEBP", lossless=True, method=0), "image/webp"
        ),
        "4096x4096 GIF": one(gif, "image/gif"),
        "PNG with 1,500 zTXt chunks": one(_ztxt_png()),
        f"batch of {n} 4096x4096 1-bit PNGs": (
            "/api/predict/batch",
            json.dumps({"items": items}).encode(),
            False,
        ),
        # Within the per-request pixel budget: one 4096x4096 RGBA PNG and canvases up to the limit.
        f"batch of 1 4096x4096 RGBA PNG + {canvases} canvases": (
            "/api/predict/batch",
            json.dumps({"items": [item(big)] + [{"image": canvas_data_url(digit)}] * canvases}).encode(),
            False,
        ),
    }


def _post(port: int, path: str, body: bytes) -> int:
    connection = http.client.HTTPConnection(HOST, port, timeout=120)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def worst_cases(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each worst payload once, then each single picture `args.clients` times at once, each on a fresh server.

    Memory is the server's VmHWM (its peak resident set) minus its resident set when ready: what the
    request(s) added at their worst.
    """
    payloads = worst_payloads()
    runs = [(name, 1) for name in payloads] + [(name, args.clients) for name, p in payloads.items() if p[2]]
    rows = []
    for name, clients in runs:
        path, body, _ = payloads[name]
        port = free_port()
        with tempfile.TemporaryFile() as output:
            server = start_server(args.model.resolve(), port, output, shlex.split(args.server_args))
            try:
                wait_ready(server, port, output, args.startup_timeout)
                before, cpu = memory_mib(server.pid)["VmRSS"], cpu_seconds(server.pid)
                start = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:  # all at once
                    statuses = list(pool.map(functools.partial(_post, port, path), [body] * clients))
                wall = time.perf_counter() - start
                time.sleep(0.5)  # let a request whose client was answered early finish its work
                memory, cpu = memory_mib(server.pid), cpu_seconds(server.pid) - cpu
            finally:
                stop_server(server)
        rows.append(
            {
                "request": name,
                "body_bytes": len(body),
                "clients": clients,
                "statuses": sorted(Counter(statuses).items()),
                "wall_s": round(wall, 2),
                "server_cpu_s": round(cpu, 2),
                "rss_ready_mb": round(before, 1),
                "peak_mb": round(memory["VmHWM"], 1),
                "added_peak_mb": round(memory["VmHWM"] - before, 1),
                "rss_after_mb": round(memory["VmRSS"], 1),
            }
        )
        log(json.dumps(rows[-1]))
    return rows


def print_worst(rows: list[dict[str, Any]]) -> None:
    print("| request | body | clients | statuses | server CPU s | peak RSS MiB (+ over ready) | RSS after |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for r in rows:
        statuses = ", ".join(f"{n}x {s}" for s, n in r["statuses"])
        print(
            f"| {r['request']} | {r['body_bytes'] / 1024:.0f} KiB | {r['clients']} | {statuses} "
            f"| {r['server_cpu_s']} | {r['peak_mb']:.0f} (+{r['added_peak_mb']:.0f}) "
            f"| {r['rss_after_mb']:.0f} |"
        )


# --- one benchmark, start to finish -------------------------------------------------------------------


def benchmark(args: argparse.Namespace) -> tuple[Results, dict[str, Any]]:
    """Start the server, wait for /ready, warm up, run the load, stop it; the results and every number."""
    payloads = make_payloads(args.payload, args.batch)
    port = free_port()
    with tempfile.TemporaryFile() as output:
        server = start_server(args.model.resolve(), port, output, shlex.split(args.server_args))
        try:
            startup, ready = wait_ready(server, port, output, args.startup_timeout)
            log(f"ready after {startup:.1f} s on port {port}; warming up with {args.warmup} requests")
            rss_before = memory_mib(server.pid)
            warmup, _ = run_load(port, payloads, args.clients, args.warmup, args.seconds)
            if warmup.errors:
                raise ServerDied(f"warm-up failed: {warmup.first_errors}\n{server_output(output)}")

            log(f"load: {args.clients} clients, {args.requests} requests or {args.seconds:g} s, first to end")
            loadavg = [round(x, 2) for x in os.getloadavg()]
            server_cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
            results, wall = run_load(port, payloads, args.clients, args.requests, args.seconds)
            server_cpu, client_cpu = cpu_seconds(server.pid) - server_cpu, time.process_time() - client_cpu
            rss_after = memory_mib(server.pid)
            if server.poll() is not None:
                raise ServerDied(f"the server died during the load:\n{server_output(output)}")
        finally:
            stop_server(server)

    ms = np.array(results.latencies) * 1000
    p50, p90, p99 = np.percentile(ms, [50, 90, 99]) if len(ms) else [float("nan")] * 3
    done = len(results.latencies) + results.errors
    model = args.model.resolve()
    return results, {
        "model": str(model.relative_to(ROOT) if model.is_relative_to(ROOT) else model),
        "served": {key: ready.get(key) for key in ("file", "precision", "model")},
        "payload": args.payload,
        "batch": args.batch,
        "server_args": args.server_args,
        "payload_bytes": round(float(np.mean([len(p.body) for p in payloads]))),
        "clients": args.clients,
        "requests": done,
        "requests_limit": args.requests,
        "seconds_limit": args.seconds,
        "wall_s": round(wall, 2),
        "requests_per_s": round(done / wall, 1),
        "latency_ms": {
            "p50": round(float(p50), 2),
            "p90": round(float(p90), 2),
            "p99": round(float(p99), 2),
            "max": round(float(ms.max()), 2) if len(ms) else None,
        },
        "errors": results.errors,
        "error_kinds": {
            "bad_status": results.bad_status,
            "wrong_digit": results.wrong_digit,
            "connection": results.connection_errors,
        },
        "error_examples": results.first_errors,
        "server_startup_s": round(startup, 2),
        "server_rss_mb": {
            "before": round(rss_before["VmRSS"], 1),
            "after": round(rss_after["VmRSS"], 1),
            "peak": round(rss_after["VmHWM"], 1),
        },
        "cpu_s": {"server": round(server_cpu, 2), "client": round(client_cpu, 2)},
        "cpu_count": os.cpu_count(),
        "loadavg_before": loadavg,
    }


def print_report(summary: dict[str, Any]) -> None:
    latency, rss, cpu = summary["latency_ms"], summary["server_rss_mb"], summary["cpu_s"]
    lines = [
        f"model {summary['model']} (served: {summary['served']['file']}, {summary['served']['precision']}), "
        f"payload {summary['payload']} ({summary['payload_bytes']} bytes"
        + (f", batches of {summary['batch']}" if summary["batch"] else "")
        + f"), {summary['clients']} clients, server options {summary['server_args'] or '(none)'}",
        f"requests    {summary['requests']} in {summary['wall_s']} s = {summary['requests_per_s']} req/s"
        + (f" = {summary['requests_per_s'] * summary['batch']:.0f} pictures/s" if summary["batch"] else ""),
        f"latency ms  p50 {latency['p50']}  p90 {latency['p90']}  p99 {latency['p99']}  max {latency['max']}",
        f"errors      {summary['errors']} {summary['error_kinds']}",
        f"server RSS  {rss['before']:.0f} MiB before, {rss['after']:.0f} MiB after (peak {rss['peak']:.0f})",
        f"CPU s       server {cpu['server']}, client {cpu['client']} in {summary['wall_s']} s of wall time",
        f"note: client and server share this machine's {summary['cpu_count']} CPU cores (load average "
        f"{summary['loadavg_before']} before the run): the server alone would do better",
        *(f"  error: {example}" for example in summary["error_examples"]),
    ]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_model = next((m for m in DEFAULT_MODELS if m.exists()), DEFAULT_MODELS[-1])
    parser.add_argument(
        "--model",
        type=Path,
        default=default_model,
        help="a serving bundle folder, a .tflite or a .keras file (default: %(default)s)",
    )
    parser.add_argument(
        "--payload",
        choices=["image", "pixels"],
        default="image",
        help="image: a 280x280 canvas PNG data URL (default); pixels: a 28x28 array",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        help=f"post batches of this many pictures (1-{MAX_ITEMS}) to /api/predict/batch instead of one "
        "picture to /api/predict (default: single pictures)",
    )
    parser.add_argument(
        "--clients", type=int, default=8, help="concurrent connections (default: %(default)s)"
    )
    parser.add_argument("--requests", type=int, default=4000, help="total requests (default: %(default)s)")
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="stop after this long (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup", type=int, default=50, help="unmeasured requests first (default: %(default)s)"
    )
    parser.add_argument(
        "--server-args",
        default="",
        help="extra `python -m digits.serve` options, e.g. --server-args='--workers 2 --no-access-log'",
    )
    parser.add_argument("--startup-timeout", type=float, default=120, help="seconds to wait for GET /ready")
    parser.add_argument(
        "--json",
        type=Path,
        nargs="?",
        const=DEFAULT_JSON,
        metavar="PATH",
        help=f"also write the numbers as JSON (to {DEFAULT_JSON.relative_to(ROOT)} if no PATH)",
    )
    parser.add_argument(
        "--worst",
        action="store_true",
        help="instead of the load: the costliest legal requests once each, then each single picture from "
        "--clients clients at once (peak memory and CPU of the server, each on a fresh server)",
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--clients, --requests and --seconds must be positive, --warmup at least 0")
    if not args.model.exists():
        parser.error(f"{args.model}: no such model file or bundle folder")
    if not 0 <= args.batch <= MAX_ITEMS:
        parser.error(f"--batch must be in 0..{MAX_ITEMS}")

    try:
        if args.worst:
            report, failed = worst_cases(args), False
            print_worst(report)
        else:
            results, report = benchmark(args)
            failed = bool(results.errors)
            print_report(report)
    except (ServerDied, TimeoutError) as e:
        log(f"error: {e}")
        return 1
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
