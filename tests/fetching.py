"""Helpers the fetch tests share: tiny MNIST-shaped arrays and their sha256, params, checks of the output,
and a loopback mirror of the arrays (good, and broken in each way a mirror breaks)."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import file_server

import digits.fetch
from digits.fetch import MNIST
from digits.idx import MANIFEST, idx_bytes, read_idx
from digits.params import FetchParams
from digits.sources.base import FILES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_arrays(n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        TRAIN_IMAGES: rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        TRAIN_LABELS: (np.arange(n_train) % 10).astype(np.uint8),
        TEST_IMAGES: rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        TEST_LABELS: (np.arange(n_test) % 10).astype(np.uint8),
    }


ARRAYS = make_arrays()
EXPECTED = {name: sha256(idx_bytes(a)) for name, a in ARRAYS.items()}


def as_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ARRAYS count as MNIST: the strict sources (mirrors, pip) then accept them."""
    monkeypatch.setattr(digits.fetch, "MNIST", replace(MNIST, sha256=EXPECTED))


def params(**kwargs) -> FetchParams:
    return FetchParams(**{"timeout": 5.0, **kwargs})


def assert_fetched(out_dir: Path, arrays: dict[str, np.ndarray] = ARRAYS) -> dict:
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([*FILES, MANIFEST])
    for name in FILES:
        np.testing.assert_array_equal(read_idx(out_dir / name), arrays[name])
    return json.loads((out_dir / MANIFEST).read_text())


def assert_no_leftovers(parent: Path, allowed: set[str]) -> None:
    assert {p.name for p in parent.iterdir()} == allowed  # no staging dirs, no partial files


def _corrupt(gz: bytes) -> bytes:
    middle = len(gz) // 2
    return gz[:middle] + bytes(b ^ 0xFF for b in gz[middle : middle + 32]) + gz[middle + 32 :]


@contextmanager
def mirror_server() -> Iterator[str]:
    """A loopback server with one directory per kind of mirror: good, corrupt, truncated, short, wrong."""
    other = make_arrays(seed=1)
    routes: dict[str, tuple[bytes, int]] = {}  # path -> (body, the Content-Length announced)
    for name in FILES:
        gz = gzip.compress(idx_bytes(ARRAYS[name]))
        variants = {
            "good": (gz, len(gz)),
            "corrupt": (_corrupt(gz), len(gz)),
            "truncated": (gz[: len(gz) // 2], len(gz) // 2),  # a cut file, served honestly
            "short": (gz[: len(gz) // 2], len(gz)),  # the connection drops mid-body
            "wrong": (gzip.compress(idx_bytes(other[name])), None),  # valid IDX, other content
        }
        for kind, (body, length) in variants.items():
            routes[f"/{kind}/{name}.gz"] = (body, len(body) if length is None else length)
    with file_server(routes) as url:
        yield url
