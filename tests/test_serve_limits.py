"""The real server (`python -m digits.serve` on a .tflite export, as users run it) under costly and slow
clients: memory and CPU of the worst legal pictures, 16 of them at once, slow headers and bodies cut off,
and a model file that answers NaN refused with one line of error, with one worker or several.

Memory is the server process's own VmHWM (peak resident set) from /proc: the pytest process has
TensorFlow loaded, so its own numbers say nothing.
"""

import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import ROOT, data_url, encode, free_port, serve
from PIL import Image, ImageDraw, PngImagePlugin

from digits.export import export_tflite
from digits.measure import cpu_seconds, memory_mib

MB = 1024 * 1024


@pytest.fixture(scope="module")
def tflite(small_model_path, tmp_path_factory) -> Path:
    return export_tflite(small_model_path, tmp_path_factory.mktemp("limits") / "model.tflite").path


def big_rgba_png() -> bytes:
    """4096x4096 RGBA, the largest picture accepted: a white "7" on a transparent canvas, ~100 KB."""
    alpha = Image.new("L", (4096, 4096))
    ImageDraw.Draw(alpha).line([(1000, 800), (3000, 800), (1800, 3400)], fill=255, width=300)
    return encode(Image.merge("RGBA", [Image.new("L", alpha.size, 255)] * 3 + [alpha]), "PNG")


def phone_photo() -> bytes:
    """4032x3024 (12 MP) JPEG: a dark "1" on grey paper with sensor noise."""
    rng = np.random.default_rng(0)
    paper = 200 + rng.normal(0, 4, (3024, 4032))
    paper[600:2400, 1900:2150] = 40
    return encode(Image.fromarray(paper.clip(0, 255).astype(np.uint8)), "JPEG", quality=85)


def test_worst_pictures_cost_bounded_memory_and_cpu(tflite, tmp_path):
    body = {"image": data_url(big_rgba_png())}
    with serve(tflite, tmp_path / "server.log") as (pid, url):
        ready, cpu = memory_mib(pid)["VmRSS"], cpu_seconds(pid)
        r = httpx.post(f"{url}/api/predict", json=body, timeout=60)
        assert r.status_code == 200 and r.json()["digit"] == 7, r.text
        used, added = cpu_seconds(pid) - cpu, memory_mib(pid)["VmHWM"] - ready
        # Targets: <= 100 MB and <= 0.5 CPU-s (benchmarks/README.md has the numbers); CPU gets slack here
        # for a busy machine. Before the fix: +387 MB and 1.2 CPU-s.
        assert added <= 100, f"one 4096x4096 RGBA PNG added {added:.0f} MiB to the server's peak"
        assert used <= 0.8, f"one 4096x4096 RGBA PNG took {used:.2f} CPU-s"

        photo = httpx.post(f"{url}/api/predict", files={"file": ("p.jpg", phone_photo(), "image/jpeg")})
        assert photo.status_code == 200 and photo.json()["digit"] == 1, photo.text

        with ThreadPoolExecutor(16) as pool:  # 16 at once: decode slots bound the memory
            answers = list(
                pool.map(lambda _: httpx.post(f"{url}/api/predict", json=body, timeout=60), range(16))
            )
        codes = sorted(a.status_code for a in answers)
        assert set(codes) <= {200, 503} and codes.count(200) >= 4, codes
        assert all(a.headers["retry-after"] == "1" for a in answers if a.status_code == 503)
        memory = memory_mib(pid)
        assert memory["VmHWM"] <= 600, f"16 concurrent uploads peaked at {memory['VmHWM']:.0f} MiB"
        assert memory["VmRSS"] <= ready + 100, f"{memory['VmRSS']:.0f} MiB stayed resident afterwards"


def _recv_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_slow_headers_and_bodies_are_cut_off(tflite, tmp_path):
    with serve(tflite, tmp_path / "server.log", "--header-timeout", "1", "--body-timeout", "1") as (_, url):
        port = int(url.rsplit(":", 1)[1])
        heads, bodies, idle = [], [], []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: appl")  # headers never end
            heads.append(s)
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(
                b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000000\r\n\r\n" + b" " * 10000
            )  # 1% of the body, then nothing
            bodies.append(s)
        idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))  # sends nothing at all
        start = time.monotonic()
        for s in heads:
            answer = _recv_all(s)  # returns once the server closes the connection
            assert answer.startswith(b"HTTP/1.1 408 ") and b"headers did not arrive" in answer, answer
        for s in bodies:
            answer = _recv_all(s)
            assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 s" in answer, answer
        assert _recv_all(idle[0]) == b""  # closed without a word
        assert time.monotonic() - start < 8
        for s in heads + bodies + idle:
            s.close()
        assert httpx.get(f"{url}/health").status_code == 200  # and it still serves


@pytest.fixture(scope="module")
def nan_model(tflite, tmp_path_factory) -> Path:
    """The export with a stretch of its weights overwritten: it loads, and answers NaN."""
    data = bytearray(tflite.read_bytes())
    middle = len(data) // 8 * 4
    data[middle : middle + 4096] = b"\xff" * 4096  # 0xffffffff is a float32 NaN
    path = tmp_path_factory.mktemp("nan") / "model.tflite"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_model_answering_nan_is_refused_with_one_line(nan_model, workers):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "digits.serve",
            "--model",
            str(nan_model),
            "--port",
            str(free_port()),
            "--workers",
            workers,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "NaN" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def lossless_webp(side: int) -> bytes:
    alpha = Image.new("L", (side, side))
    stroke = [(side // 4, side // 5), (side // 2, side * 4 // 5)]  # a "1", white on transparent
    ImageDraw.Draw(alpha).line(stroke, fill=255, width=side // 14)
    return encode(Image.merge("RGBA", [Image.new("L", alpha.size, 255)] * 3 + [alpha]), "WEBP", lossless=True)


def text_bomb_png() -> bytes:
    """A 28x28 PNG with 1,500 zTXt chunks of 1 MB of text each: 1.5 MB on disk, 1.5 GB of text."""
    info = PngImagePlugin.PngInfo()
    for i in range(1500):
        info.add_text(f"k{i}", "A" * 1_000_000, zip=True)
    return encode(Image.new("L", (28, 28)), "PNG", pnginfo=info)


@pytest.mark.slow
def test_the_worst_of_each_format_from_32_clients_stays_within_600_mib(tflite, tmp_path):
    """Before: a 4096x4096 WebP x16 peaked at 1,105 MiB, the text bomb x32 at 1,852 MiB."""
    cases = {
        "2048x2048 WebP": (lossless_webp(2048), {200, 503}),
        "4096x4096 WebP": (lossless_webp(4096), {422}),  # over WebP's own limit: refused from its header
        "zTXt bomb": (text_bomb_png(), {422}),
    }
    with serve(tflite, tmp_path / "server.log") as (pid, url):
        for name, (picture, expected) in cases.items():
            post = partial(httpx.post, f"{url}/api/predict", json={"image": data_url(picture)}, timeout=60)
            with ThreadPoolExecutor(32) as pool:
                answers = [f.result() for f in [pool.submit(post) for _ in range(32)]]
            codes = {a.status_code for a in answers}
            assert codes <= expected, (name, sorted(codes), answers[0].text)
            memory = memory_mib(pid)
            assert memory["VmHWM"] <= 600, f"{name} x32 peaked at {memory['VmHWM']:.0f} MiB"
        assert memory_mib(pid)["VmRSS"] <= 150, "memory did not come back after the bursts"


@pytest.mark.slow
def test_held_connections_do_not_shut_others_out(tflite, tmp_path):
    """300 slow bodies and 500 slow heads held open: normal requests are still answered at once."""
    with serve(tflite, tmp_path / "server.log") as (_, url):
        port = int(url.rsplit(":", 1)[1])
        held = []
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(
                b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n" + b" " * 50000
            )
            held.append(s)
        for _ in range(500):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            held[-1].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nUser-Ag")
        time.sleep(0.5)
        body = {"pixels": np.eye(28).tolist()}
        for _ in range(20):
            start = time.monotonic()
            r = httpx.post(f"{url}/api/predict", json=body, timeout=10)
            assert r.status_code == 200 and time.monotonic() - start < 1, (r.status_code, r.text)
        for s in held:
            s.close()
