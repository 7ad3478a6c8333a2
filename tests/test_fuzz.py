"""Fuzz the real app: over a thousand seeded random and malformed requests, never a 500.

Random bytes as uploads, truncated and corrupted PNGs, odd image modes and sizes, random JSON (wrong types,
nested junk, NaN/Infinity literals, huge numbers, strings among pixels, invalid UTF-8, lone surrogates),
wrong content types and batches mixing good and bad items. Every answer must be < 500, every 4xx a JSON
`{"detail": "<string>"}`, and the app must still work afterwards. A seeded numpy generator (no hypothesis):
the same requests on every run, so a failure reproduces.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import data_url, encode, png
from PIL import Image

from digits.idx import read_idx
from digits.serve import create_app

SEED = 20261124
ROUNDS = 1100  # one request each (a few kinds also send a second): well over 1,000 in all
PREDICT, BATCH = "/api/predict", "/api/predict/batch"


@pytest.fixture(scope="module")
def client(small_model_path):
    with TestClient(create_app(small_model_path), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def good_digits(tiny_mnist_dir) -> np.ndarray:
    return read_idx(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz")[:16]


class Fuzzer:
    """Seeded generators of bad (and some good) requests: each returns (path, httpx keyword arguments)."""

    CONTENT_TYPES = (
        "",
        "text/plain",
        "text/csv",
        "image/png",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
        "application/json",
        "application/json; charset=utf-16",
        "APPLICATION/JSON",
        "application/jsonx",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=abc",
        "multipart/mixed; boundary=abc",
        "\x7f/\x7f",
    )
    MODES = ("1", "L", "P", "RGB", "RGBA", "LA", "PA", "I;16", "I", "F", "CMYK", "YCbCr", "HSV")
    SIZES = ((1, 1), (1, 2), (2, 1), (2, 2), (3, 3), (5000, 1), (1, 5000), (5000, 2), (28, 28), (300, 120))
    FORMATS = ("PNG", "PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM")

    def __init__(self, seed: int, digits: np.ndarray) -> None:
        self.rng = np.random.default_rng(seed)
        self.digits = digits
        self.good_pngs = [png(d) for d in digits]

    def pick(self, options: list | tuple):
        return options[int(self.rng.integers(len(options)))]

    def coin(self, p: float = 0.5) -> bool:
        return bool(self.rng.random() < p)

    # --- pieces ---------------------------------------------------------------------------------------

    def junk_value(self, depth: int = 0) -> object:
        """A random JSON value: scalars of every type, strings, nested lists and objects."""
        kind = int(self.rng.integers(10 if depth < 4 else 6))
        if kind == 0:
            return None
        if kind == 1:
            return self.coin()
        if kind == 2:
            return int(self.rng.integers(-(2**62), 2**62)) * self.pick([1, 10**30, 10**400])
        if kind == 3:
            return float(self.pick([0.0, -0.0, 0.5, 1e-320, 1e308, -1e308, 255.0, 256.0, -1.0]))
        if kind == 4:
            return self.pick(["", "x", "0.5", "NaN", "data:", "data:image/png;base64,", "\u00e9\u4e2d"])
        if kind == 5:
            return self.rng.bytes(int(self.rng.integers(0, 20))).decode("latin-1")
        if kind in (6, 7):
            return [self.junk_value(depth + 1) for _ in range(int(self.rng.integers(0, 5)))]
        if kind == 8:
            return {self.pick(["image", "pixels", "items", "x", ""]): self.junk_value(depth + 1)}
        return [[self.junk_value(depth + 1)] * int(self.rng.integers(0, 30))]

    def bad_pixels(self) -> object:
        good = (self.digits[int(self.rng.integers(len(self.digits)))] / 255).tolist()
        kind = int(self.rng.integers(9))
        if kind == 0:  # a string among the numbers
            good[int(self.rng.integers(28))][int(self.rng.integers(28))] = self.pick(["x", "1", "", "NaN"])
        elif kind == 1:
            good[3][4] = self.pick([None, [], {}, [0.5], True])
        elif kind == 2:  # ragged
            good[int(self.rng.integers(28))] = good[0][: int(self.rng.integers(0, 28))]
        elif kind == 3:
            good = np.asarray(good).ravel()[: int(self.rng.integers(0, 1000))].tolist()
        elif kind == 4:
            good[0][0] = self.pick([1e308, -1e-300, 10**400, -(10**40), 256, -1])
        elif kind == 5:
            good = []
        elif kind == 6:
            good = [[]] * 28
        elif kind == 7:  # one level too deep
            good = [[[v] for v in row] for row in good]
        else:
            good = self.junk_value()
        return good

    def odd_image(self) -> bytes:
        """A random mode, size and format; random noise, a constant or a digit stretched to fit."""
        mode, (w, h) = self.pick(self.MODES), self.pick(self.SIZES)
        content = int(self.rng.integers(3))
        if content == 0:
            base = Image.fromarray(self.rng.integers(0, 256, (h, w), dtype=np.uint8))
        elif content == 1:
            base = Image.new("L", (w, h), int(self.rng.integers(256)))
        else:
            base = Image.fromarray(self.digits[0]).resize((w, h))
        try:
            image = base.convert(mode)
        except (ValueError, OSError):
            image = base
        if mode == "I;16":
            array = np.asarray(base, dtype=np.uint16) * 257
            image = Image.fromarray(array.astype("<u2"))  # 16-bit grayscale
        for fmt in (self.pick(self.FORMATS), "PNG", "TIFF"):
            try:
                return encode(image, fmt)
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return encode(base)

    def corrupted_png(self) -> bytes:
        data = bytearray(self.pick(self.good_pngs))
        kind = int(self.rng.integers(4))
        if kind == 0:  # truncated
            return bytes(data[: int(self.rng.integers(0, len(data)))])
        if kind == 1:  # flipped bytes (checksums fail, or lengths lie)
            for i in self.rng.integers(0, len(data), int(self.rng.integers(1, 20))):
                data[i] ^= int(self.rng.integers(1, 256))
            return bytes(data)
        if kind == 2:  # junk inserted in the middle
            i = int(self.rng.integers(8, len(data)))
            return bytes(data[:i] + self.rng.bytes(int(self.rng.integers(1, 200))) + data[i:])
        return b"\x89PNG\r\n\x1a\n" + self.rng.bytes(int(self.rng.integers(0, 300)))  # a header and noise

    def some_image_bytes(self) -> bytes:
        kind = int(self.rng.integers(4))
        if kind == 0:
            return self.rng.bytes(int(self.rng.integers(0, 2000)))
        if kind == 1:
            return self.corrupted_png()
        if kind == 2:
            return self.odd_image()
        return self.pick(self.good_pngs)

    def item(self) -> object:
        """A batch item: good pixels, a good image, or something bad."""
        kind = int(self.rng.integers(6))
        if kind == 0:
            return {"pixels": self.digits[int(self.rng.integers(len(self.digits)))].tolist()}
        if kind == 1:
            return {"image": data_url(self.pick(self.good_pngs))}
        if kind == 2:
            return {"pixels": self.bad_pixels()}
        if kind == 3:
            return {"image": data_url(self.some_image_bytes())}
        if kind == 4:
            return {"image": self.junk_value(), "pixels": self.junk_value()}
        return self.junk_value()

    # --- whole requests -------------------------------------------------------------------------------

    def multipart_upload(self) -> tuple[str, dict]:
        name = self.pick(["file", "file", "file", "image", "", "File"])
        filename = self.pick(["d.png", "", "x", "../../etc/passwd", "\u00e9.jpg", "a" * 300])
        mime = self.pick(["image/png", "image/jpeg", "application/octet-stream", "text/plain", ""])
        files = {name: (filename, self.some_image_bytes(), mime)}
        if self.coin(0.2):
            files["extra"] = ("e", self.rng.bytes(10), "text/plain")
        return PREDICT, {"files": files}

    def json_predict(self) -> tuple[str, dict]:
        kind = int(self.rng.integers(5))
        if kind == 0:
            body = {"pixels": self.bad_pixels()}
        elif kind == 1:
            body = {"image": self.pick([data_url(self.some_image_bytes()), self.junk_value()])}
        elif kind == 2:
            body = self.item()
        elif kind == 3:
            body = self.junk_value()
        else:
            body = {str(self.junk_value()): self.junk_value(), "pixels": self.bad_pixels()}
        return PREDICT, {"content": json.dumps(body), "headers": {"content-type": "application/json"}}

    def raw_json_text(self) -> tuple[str, dict]:
        """Text no JSON library writes: NaN/Infinity literals, huge literals, invalid UTF-8, surrogates."""
        literal = self.pick(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 5000, "1" + "0" * 400])
        kind = int(self.rng.integers(7))
        if kind == 0:
            text = '{"pixels": [' + ",".join([literal] * int(self.rng.integers(1, 3)) + ["0.5"] * 782) + "]}"
        elif kind == 1:
            text = '{"items": [{"pixels": [' + ",".join([literal] + ["0"] * 783) + "]}]}"
        elif kind == 2:
            text = '{"image": "' + self.pick(["\\ud800", "\\udfff\\ud800", "\\u0000", "\\\\"]) + '"}'
        elif kind == 3:
            key = self.pick(["\\ud800", "pix\\udc00els", "\\u0000"])
            text = '{"' + key + '": 1' + self.pick(["", ', "pixels": [0]']) + "}"
        elif kind == 4:
            text = '{"items": [{"\\ud800": 1}]}'
        elif kind == 5:
            text = self.pick(["[" * 5000, "{" * 3, '{"pixels": [1, 2', "", " ", "null", "1", '"x"', "[]"])
        else:  # bytes, mostly invalid UTF-8
            text = self.rng.bytes(int(self.rng.integers(1, 64)))
            if self.coin():
                text = b'{"image": "' + text + b'"}'
        return self.pick([PREDICT, BATCH]), {"content": text, "headers": {"content-type": "application/json"}}

    def wrong_content_type(self) -> tuple[str, dict]:
        body = self.pick(
            [
                self.rng.bytes(int(self.rng.integers(0, 500))),
                json.dumps({"pixels": self.digits[0].tolist()}).encode(),
                self.pick(self.good_pngs),
                b"file=abc&x=1",
                b'--abc\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
                b"xyz\r\n--abc--\r\n",
            ]
        )
        headers = {"content-type": self.pick(self.CONTENT_TYPES)}
        return self.pick([PREDICT, BATCH]), {"content": body, "headers": headers}

    def batch(self) -> tuple[str, dict]:
        kind = int(self.rng.integers(4))
        if kind == 0:
            body = {"items": [self.item() for _ in range(int(self.rng.integers(0, 12)))]}
        elif kind == 1:
            body = {"items": self.junk_value()}
        elif kind == 2:
            body = self.junk_value()
        else:
            good = [{"pixels": d.tolist()} for d in self.digits[: int(self.rng.integers(1, 6))]]
            good.insert(int(self.rng.integers(len(good) + 1)), self.item())
            body = {"items": good, **({"extra": 1} if self.coin(0.2) else {})}
        return BATCH, {"json": body}

    def other_route(self) -> tuple[str, dict]:
        path = self.pick(["/", "/health", "/ready", "/api", "/api/predict/x", "/static/../x"])
        return path, {"method": self.pick(["GET", "POST", "PUT", "DELETE"]), "content": self.rng.bytes(8)}

    def requests(self, rounds: int) -> list[Callable[[], tuple[str, dict]]]:
        kinds = [
            self.multipart_upload,
            self.json_predict,
            self.raw_json_text,
            self.wrong_content_type,
            self.batch,
            self.other_route,
        ]
        weights = np.array([4, 4, 2, 2, 3, 1], dtype=float)
        return [kinds[i] for i in self.rng.choice(len(kinds), rounds, p=weights / weights.sum())]


def problem(response, kwargs: dict) -> str | None:
    """What is wrong with the response (a 5xx, or a 4xx without a JSON string `detail`), or None."""
    sent = repr(kwargs)[:300]
    if response.status_code >= 500:
        return f"{response.status_code} for {response.request.method} {response.request.url} {sent}"
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        if not isinstance(detail, str):
            return f"{response.status_code} without a detail string: {response.text[:200]!r} for {sent}"
    return None


def test_a_thousand_random_requests_never_get_a_500(client, good_digits):
    fuzzer = Fuzzer(SEED, good_digits)
    statuses: Counter[int] = Counter()
    problems = []
    for make in fuzzer.requests(ROUNDS):
        path, kwargs = make()
        method = kwargs.pop("method", "POST")
        response = client.request(method, path, **kwargs)
        statuses[response.status_code] += 1
        if (found := problem(response, kwargs)) is not None:
            problems.append(found)
    assert not problems, f"{len(problems)} bad responses, first ones:\n" + "\n".join(problems[:10])
    assert sum(statuses.values()) >= 1000, statuses
    # The fuzz reaches the decoder and the model, not only the parsers in front of them.
    assert statuses[200] >= 30 and statuses[422] >= 300 and statuses[400] >= 10, statuses

    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    r = client.post(PREDICT, files={"file": ("d.png", fuzzer.good_pngs[0], "image/png")})
    assert r.status_code == 200 and len(r.json()["probabilities"]) == 10


# --- regressions: what the fuzz found --------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"image": "\x89PNG\xff"}',  # invalid UTF-8: json.loads raised UnicodeDecodeError, a 500
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",  # a PNG posted as application/json
        b'{"pixels": [' + b"9" * 5000 + b"]}",  # past Python's 4,300-digit int limit: ValueError, a 500
    ],
    ids=["invalid-utf8", "png-as-json", "5000-digit-int"],
)
@pytest.mark.parametrize("path", [PREDICT, BATCH])
def test_undecodable_json_is_400_not_500(client, path, body):
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert isinstance(r.json()["detail"], str)
    if path == PREDICT:
        assert "not valid JSON" in r.json()["detail"]


def test_lone_surrogates_in_json_are_422(client):
    for body in ('{"\\ud800": 1}', '{"image": "\\ud800"}', '{"items": [{"\\udfff": 1}]}'):
        for path in (PREDICT, BATCH):
            r = client.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 422 and isinstance(r.json()["detail"], str), (path, body, r.text)


def _big_but_legal() -> dict[str, bytes]:
    """Five pictures at the size limit in the modes that take other paths through the decoder."""
    ink = Image.new("L", (4096, 4096))
    ink.paste(255, (1800, 600, 2300, 3500))  # a "1"
    palette = ink.convert("P")
    palette.info["transparency"] = 0
    sixteen = Image.fromarray((np.asarray(ink, dtype=np.uint16) * 257).astype("<u2"))
    return {
        "RGBA": encode(Image.merge("RGBA", [Image.new("L", ink.size, 255)] * 3 + [ink])),
        "1-bit": encode(ink.convert("1")),
        "P+transparency": encode(palette, transparency=0),
        "16-bit": encode(sixteen),
        "CMYK JPEG": encode(Image.merge("CMYK", [ink] * 4).resize((4032, 3024)), "JPEG"),
    }


def test_big_but_legal_pictures_are_answered(client):
    for mode, data in _big_but_legal().items():
        r = client.post(PREDICT, files={"file": ("big", data, "application/octet-stream")})
        assert problem(r, {"mode": mode}) is None
        assert r.status_code == 200 and r.json()["digit"] == 1, (mode, r.text)
