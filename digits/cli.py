"""The stage runner: validated params, progress on stderr, user errors as exit codes."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from digits import DigitsError, log
from digits.params import Params, load_params

__all__ = ["log", "run_stage"]


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
