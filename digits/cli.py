"""What every stage shares: validated params, progress on stderr, user errors as exit codes, atomic JSON."""

from __future__ import annotations

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


def write_json(path: str | Path, obj: object) -> None:
    """Write small JSON atomically, so a killed stage never leaves half a metrics file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
