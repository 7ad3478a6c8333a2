"""What every stage shares: validated params, progress on stderr, user errors as exit codes, atomic JSON."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from collections.abc import Callable
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


def _write_text(path: str | Path, text: str) -> None:
    # Atomically, so a killed stage never leaves half a metrics or plot file.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: str | Path, obj: object) -> None:
    _write_text(path, json.dumps(obj, indent=2) + "\n")


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Rows of equal keys as CSV with a header: the tables `dvc plots` draws."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    _write_text(path, out.getvalue())
