"""The server: `python -m digits.serve` (main) runs the app on uvicorn, in one process or `--workers`
processes (app_from_env builds each one's app from the environment), with a deadline for request heads
(HeaderTimeoutProtocol) and glibc tuned to give big buffers back to the OS."""

import argparse
import contextlib
import ctypes
import dataclasses
import json
import os
import resource
import socket
import sys
from pathlib import Path
from typing import Any

import h11
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.h11_impl import H11Protocol

from digits import DigitsError, paths
from digits.confidence import Calibration
from digits.runtime import PRECISIONS, load_predictor, model_file
from digits.serve.app import create_app
from digits.serve.limits import BODY_TIMEOUT, FEEDBACK_ITEMS, FEEDBACK_PER_MINUTE, HEADER_TIMEOUT, Limits

DEFAULT_MODELS = (paths.SERVING, paths.MODEL)  # the first that exists
# Connections per worker: a held one costs a few KiB (bodies are bounded by Limits.max_buffered), so slow
# clients may hold thousands before anyone gets 503 (uvicorn's own default, none, would run out of files).
LIMIT_CONCURRENCY = 4096
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
HEADER_TIMEOUT_ENV = "DIGITS_HEADER_TIMEOUT"  # read by HeaderTimeoutProtocol, in every worker process
# create_app's arguments for the --workers processes, as JSON: model_path, threads, calibration (the flags
# given) and limits (Limits' fields; left out: the defaults).
OPTIONS_ENV = "DIGITS_SERVE"


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's line and headers (config.header_timeout).

    uvicorn times out idle keep-alive connections but not a request whose headers trickle in (or never
    come), and such requests never reach the app: without this, each holds a connection forever.
    """

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: Any = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # part of the next request's head: its clock starts
            if self._header_timer is None:
                self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        timeout = float(os.environ.get(HEADER_TIMEOUT_ENV, HEADER_TIMEOUT))
        self._header_timer = self.loop.call_later(timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # something came: say why we hang up (h11 cannot, no request yet)
            body = b'{"detail": "the request headers did not arrive in time"}'
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
        self.transport.close()


def _enough_files(wanted: int) -> None:
    """The soft limit on open files raised to `wanted` (at most the hard limit): a connection is a file,
    and many systems start processes at 1024."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        cap = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if soft != resource.RLIM_INFINITY and soft < cap:
            resource.setrlimit(resource.RLIMIT_NOFILE, (cap, hard))


def _memory_back_to_the_os() -> None:
    """Buffers over 1 MiB (decoded pictures, their float arrays) mapped and unmapped one by one.

    glibc otherwise raises its mmap threshold to 32 MiB after the first big free and serves such buffers
    from heap arenas (one per thread), where they fragment: after a burst of big uploads the server's memory
    would not come back (benchmarks/README.md). A few hundred page faults per picture are cheap.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL(None).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def build_parser() -> argparse.ArgumentParser:
    import digits.serve  # its docstring's first line describes the command

    parser = argparse.ArgumentParser(
        prog="python -m digits.serve",
        description=(digits.serve.__doc__ or "").splitlines()[0],
        epilog="Limits: bodies over 2 MiB get 413, request heads over 16 KiB (h11's default) 400; more than "
        "--limit-concurrency connections get 503, as do slow uploads when faster ones need their memory. "
        "Behind a reverse proxy, its own timeouts apply first.",
    )
    _add_model_arguments(parser)
    _add_server_arguments(parser)
    _add_calibration_arguments(parser)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=Path,
        help="the export stage's serving bundle folder or a .tflite file (LiteRT, no TensorFlow; a .tflite "
        "beside a model.json is checked against it), or a .keras file (default: models/serving if it exists, "
        "else models/model.keras)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="which file of a serving bundle folder to serve: int8 (model_int8.tflite), float32 "
        "(model.tflite), or auto: int8 if the bundle's model.json says it passed its parity check against "
        "float32 on the test digits, else float32 (default: %(default)s)",
    )


def _add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    parser.add_argument(
        "--allowed-hosts",
        help="comma-separated Host header names to answer (e.g. digits.example.org), others get 400; set it "
        "with --host 0.0.0.0 (default: any)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes, each with its own model copy and 1/N of the CPUs for LiteRT's threads "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--limit-concurrency",
        type=int,
        default=LIMIT_CONCURRENCY,
        help="open connections per worker before new requests get 503 (default: %(default)s); the memory "
        "held by slow uploads is bounded apart from it, so held connections cost little",
    )
    parser.add_argument(
        "--timeout-keep-alive",
        type=float,
        default=5,
        help="seconds an idle connection stays open (default: 5)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=HEADER_TIMEOUT,
        help="seconds for a request's line and headers to arrive, else the connection is closed (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=BODY_TIMEOUT,
        help="seconds for a request's whole body to arrive, else 408 (default: %(default)s)",
    )
    parser.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    parser.add_argument(
        "--collect",
        type=Path,
        metavar="DIR",
        help="store the corrections users send (POST /api/feedback, the page's 'Wrong?') in DIR for review "
        "(default: off, they are refused)",
    )
    parser.add_argument(
        "--collect-max",
        type=int,
        default=FEEDBACK_ITEMS,
        help="corrections DIR may hold (default: %(default)s)",
    )
    parser.add_argument(
        "--collect-per-minute",
        type=int,
        default=FEEDBACK_PER_MINUTE,
        help="corrections stored a minute, by all workers together (default: %(default)s)",
    )


def _add_calibration_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Calibration field, its help from the field's metadata. Each flag replaces the one value
    in the bundle's model.json (see GET /api/model)."""
    for field in dataclasses.fields(Calibration):
        said = f": {field.metadata['default']}" if "default" in field.metadata else ""
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=float,
            help=f"{field.metadata['help']} (default: the bundle's, else {field.default:g}{said})",
        )


def _checked_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, float]:
    """The calibration flags given; a usage error (exit 2) naming the flag for any value out of range."""
    for name in ("workers", "limit_concurrency", "collect_max", "collect_per_minute"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("timeout_keep_alive", "header_timeout", "body_timeout"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    calibration = {
        name: getattr(args, name)
        for name in Calibration.__dataclass_fields__
        if getattr(args, name) is not None
    }
    for name, value in calibration.items():
        try:
            Calibration(**{name: value})
        except ValueError as e:  # "threshold must lie in [0, 1], got 1.5" -> "--threshold must lie ..."
            parser.error(f"--{name.replace('_', '-')}{str(e).removeprefix(name)}")
    return calibration


def _limits(args: argparse.Namespace) -> Limits:
    hosts = [h.strip() for h in args.allowed_hosts.split(",")] if args.allowed_hosts else None
    if hosts is None and args.host not in LOOPBACK_HOSTS:
        print(
            f"note: listening on {args.host} and answering any Host header; consider --allowed-hosts",
            file=sys.stderr,
        )
    return Limits(
        body_timeout=args.body_timeout,
        header_timeout=args.header_timeout,
        feedback_items=args.collect_max,
        feedback_per_minute=args.collect_per_minute,
        allowed_hosts=hosts,
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m digits.serve`: the exit status (1 with one line of error when the model cannot serve)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    calibration = _checked_arguments(parser, args)
    try:  # a bundle folder means the file that --precision picks
        model = model_file(
            args.model or next((p for p in DEFAULT_MODELS if p.exists()), DEFAULT_MODELS[-1]), args.precision
        )
    except DigitsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    limits = _limits(args)
    try:
        # Loaded (and its output checked) before the server starts: a bad file is one line, not a traceback.
        # With --workers each process loads its own copy; this one checks the file once for all of them.
        predictor = load_predictor(model)
        app = create_app(
            model,
            predictor=predictor if args.workers == 1 else None,
            calibration=calibration,
            limits=limits,
            collect=args.collect,
        )
    except DigitsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    in_use, source = app.state.calibration, app.state.calibration_source
    if args.workers > 1:
        del predictor, app
    import uvicorn

    runtime = "LiteRT, no TensorFlow" if model.suffix == ".tflite" else "Keras on TensorFlow"
    print(f"serving {model} ({runtime}) with {args.workers} worker(s)", file=sys.stderr, flush=True)
    said = ", ".join(f"{k} {v:g} ({source[k]})" for k, v in in_use.as_dict().items())
    print(f"calibration: {said}", file=sys.stderr, flush=True)
    if args.collect:
        print(
            f"collecting corrections in {args.collect} (at most {limits.feedback_items}, "
            f"{limits.feedback_per_minute} a minute)",
            file=sys.stderr,
            flush=True,
        )
    os.environ[HEADER_TIMEOUT_ENV] = str(limits.header_timeout)
    _enough_files(args.limit_concurrency + 256)  # inherited by --workers processes
    options = {
        "host": args.host,
        "port": args.port,
        "access_log": not args.no_access_log,
        "http": "digits.serve.server:HeaderTimeoutProtocol",
        "limit_concurrency": args.limit_concurrency,
        "timeout_keep_alive": args.timeout_keep_alive,
    }
    if args.workers == 1:
        _memory_back_to_the_os()
        uvicorn.run(app, **options)
        return 0
    # Each worker process builds its own app from the import string; kernel threads are shared out, so
    # that N workers do not each spin up a thread per core.
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    worker = {
        "model_path": str(model.resolve()),
        "threads": threads,
        "calibration": calibration,
        "collect": args.collect and str(args.collect.resolve()),
    }
    os.environ[OPTIONS_ENV] = json.dumps({**worker, "limits": dataclasses.asdict(limits)})
    return _run_workers(args.workers, options)


def _run_workers(workers: int, options: dict[str, Any]) -> int:
    """What uvicorn.run does for workers > 1, with the listening socket marked as TCP; the exit status.

    uvicorn binds it with protocol 0, so asyncio never sets TCP_NODELAY on the accepted connections and
    every keep-alive response waits for the client's delayed ACK (Kludex/uvicorn#3149; the cost is in
    benchmarks/README.md). uvicorn's supervisor stops when a worker fails to start but exits 0 all the
    same: the worker's exit code says it.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config("digits.serve.server:app_from_env", factory=True, workers=workers, **options)
    bound = config.bind_socket()
    sock = socket.socket(bound.family, bound.type, socket.IPPROTO_TCP, fileno=bound.detach())
    supervisor = Multiprocess(config, sockets=[sock])
    supervisor.run()
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        print("error: a worker could not load the model (its error is above); stopped", file=sys.stderr)
        return 1
    return 0


def app_from_env() -> FastAPI:
    """The app described by $DIGITS_SERVE: what `--workers` processes start. Loads the model right away,
    so a failure is one line and uvicorn's startup-failure exit code, which stops the other workers."""
    options = json.loads(os.environ[OPTIONS_ENV])
    _memory_back_to_the_os()
    try:
        predictor = load_predictor(options["model_path"], options.pop("threads"))
        limits = Limits(**options.pop("limits", {}))
        return create_app(predictor=predictor, limits=limits, **options)
    except DigitsError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
