"""Pure per-item work spread over the machine's cores, results in order, the same bytes as one process gives.

For the measuring stages' pure-Python loops (drawing non-digits, preparing pictures as the server does),
which use one core while TensorFlow is idle. Workers come from a forkserver, never a fork of a process
that has TensorFlow's threads running, and are kept for the process's life so each call pays no start-up.
As with any multiprocessing start but fork, the fork server imports the calling script once (its
`if __name__ == "__main__"` block does not run): the stages import TensorFlow inside functions, so it
starts in well under a second; a script that imports it at the top pays that import there, once.
DIGITS_WORKERS=1 runs everything in the calling process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from typing import TypeVar

from digits import DigitsError

T = TypeVar("T")
R = TypeVar("R")


def workers() -> int:
    """DIGITS_WORKERS if set, else the cores this process may run on."""
    value = os.environ.get("DIGITS_WORKERS", "")
    if not value:
        return len(os.sched_getaffinity(0))
    if not value.isdigit() or int(value) < 1:
        raise DigitsError(f"DIGITS_WORKERS={value!r}: expected a whole number of processes, 1 or more")
    return int(value)


@cache
def _pool(size: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(size, mp_context=multiprocessing.get_context("forkserver"))


def map_ordered(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """[fn(item) for item in items], spread over `workers()` processes; fn must be a module-level function."""
    items = list(items)
    if min(workers(), len(items)) < 2:
        return [fn(item) for item in items]
    return list(_pool(workers()).map(fn, items))
