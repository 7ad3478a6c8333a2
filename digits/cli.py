"""What every stage shares: validated params, progress on stderr, user errors as exit codes, atomic JSON."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from digits import DigitsError
from digits.params import Params, load_params


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_stage(name: str, body: Callable[[Params], None], params_path: str = "params.yaml") -> None:
    """Validate params.yaml, run the stage body, and exit 2 with one clear message on a user-facing error."""
    start = time.perf_counter()
    try:
        params = load_params(params_path)
        body(params)
    except DigitsError as e:
        log(f"{name}: error: {e}")
        sys.exit(2)
    log(f"{name}: done in {time.perf_counter() - start:.1f}s")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp path beside `path` to write to; renamed onto `path` only if the block succeeds.

    So a failed or killed stage never leaves half a file where a finished one is expected.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o644)  # mkstemp makes files private; outputs are meant to be shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: object) -> None:
    _write_text(path, json.dumps(obj, indent=2) + "\n")


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Rows of equal keys as CSV with a header: the tables `dvc plots` draws."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    _write_text(path, out.getvalue())
