"""Read and write IDX files, the format MNIST is published in (plain or gzipped).

Layout: a 4-byte magic `00 00 <dtype code> <ndim>`, then `ndim` big-endian int32 sizes, then the data in
row-major order, big-endian. MNIST images are `00 00 08 03` (uint8, n x 28 x 28), labels `00 00 08 01`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np

from digits import DigitsError
from digits.files import write_bytes

# The dtype codes of the IDX spec. Data is big-endian whatever the machine.
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
MANIFEST = "manifest.json"  # fetch's record of the files it wrote, each with its sha256


class IdxError(DigitsError):
    """An IDX file is malformed: bad magic, truncated, trailing bytes, or a broken gzip stream."""


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one IDX file, gzipped or not; `name` only goes into error messages."""
    if data[:2] == _GZIP_MAGIC:  # detected from the content, so a misnamed file still reads
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; EOFError = cut short
            raise IdxError(f"{name}: corrupt gzip: {e}") from None
    if len(data) < 4:
        raise IdxError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _DTYPES or ndim == 0:
        raise IdxError(f"{name}: not an IDX file (magic 0x{data[:4].hex()})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{name}: truncated header ({len(data)} bytes, need {header} for {ndim} sizes)")
    shape = struct.unpack(f">{ndim}i", data[4:header])
    if any(d < 0 for d in shape):
        raise IdxError(f"{name}: negative size in header {shape}")
    dtype = _DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise IdxError(f"{name}: {what}: {len(data)} bytes, header {shape} needs {expected}")
    # Copy into a native-endian, writable array so callers never see the byte order.
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped or not."""
    path = Path(path)
    return parse_idx(path.read_bytes(), str(path))


def read_fetched(raw_dir: str | Path, name: str) -> np.ndarray:
    """Read one of fetch's IDX files after checking it against the sha256 fetch recorded in manifest.json.

    `dvc checkout` restores whatever bytes its cache holds, so without this a damaged cache object would
    reach the model unnoticed.
    """
    raw_dir = Path(raw_dir)
    path, manifest = raw_dir / name, raw_dir / MANIFEST
    fix = "`dvc repro verify` says how to repair it"
    try:
        expected = json.loads(manifest.read_text())["files"][name]["sha256"]
    except FileNotFoundError:
        raise DigitsError(f"{manifest}: not found; {fix}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise DigitsError(f"{manifest}: no sha256 for {name} ({type(e).__name__}: {e}); {fix}") from None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DigitsError(f"{path}: not found; {fix}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise DigitsError(
            f"{path} is damaged: sha256 {digest[:16]}… is not the {expected[:16]}… that {manifest} "
            f"recorded when fetch wrote it; {fix}"
        )
    return parse_idx(data, str(path))


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX bytes, byte-for-byte what MNIST's own files contain."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise IdxError(f"only uint8 arrays can be written as IDX, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise IdxError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    header = struct.pack(f">HBB{array.ndim}i", 0, 0x08, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzipped when the name ends in .gz), atomically.

    A reader never sees half a file (digits.files). Gzip output uses mtime 0 so the same array always
    gives the same bytes.
    """
    path = Path(path)
    data = idx_bytes(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=9, mtime=0)
    write_bytes(path, data)
