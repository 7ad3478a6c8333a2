"""Output files are written whole or not at all: a temp file beside the target, renamed over it on success.

So a failed or killed stage never leaves half a file where a finished one is expected.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp path beside `path` to write to; renamed onto `path` only if the block succeeds.

    The temp name ends in the target's suffix, for writers that choose the format by it (Keras's .keras).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o644)  # mkstemp makes files private; outputs are meant to be shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: object) -> None:
    write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Rows of equal keys as CSV with a header: the tables `dvc plots` draws."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_bytes(path, out.getvalue().encode())


def save_model(model: Any, path: str | Path) -> None:
    """Save a Keras model to a .keras file, atomically; the same model, the same bytes.

    Keras stamps the file with the time it was saved (metadata.json's date_saved and the weights' zip entry)
    and numbers shared objects in config.json by their memory address: a retraining that lands on the same
    weights would look changed to DVC, and every stage after it rerun. Those are fixed here: no date, zip
    entries of 1980, shared objects numbered 1, 2, ... in order of appearance (what loading matches them by).
    """
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp) as z:
            entries = [(info, z.read(info)) for info in z.infolist()]
        with zipfile.ZipFile(tmp, "w") as z:
            for info, data in entries:
                if info.filename == "metadata.json":
                    metadata = json.loads(data)
                    metadata.pop("date_saved", None)
                    data = json.dumps(metadata).encode()
                elif info.filename == "config.json":
                    data = json.dumps(_renumber_shared(json.loads(data), {})).encode()
                z.writestr(zipfile.ZipInfo(info.filename), data, compress_type=info.compress_type)


def save_arrays(path: str | Path, **arrays: np.ndarray) -> None:
    """Named arrays to an npz (deflated at the fastest level), atomically; the same arrays, the same bytes."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for key, array in arrays.items():
            with z.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def _renumber_shared(config: Any, ids: dict) -> Any:
    """config with every shared_object_id replaced by its rank of first appearance (ids: old -> new)."""
    if isinstance(config, dict):
        return {
            k: ids.setdefault(v, len(ids) + 1) if k == "shared_object_id" else _renumber_shared(v, ids)
            for k, v in config.items()
        }
    if isinstance(config, list):
        return [_renumber_shared(v, ids) for v in config]
    return config
