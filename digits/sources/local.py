"""The local source: a directory of IDX files, each plain or gzipped (e.g. Debian's Fashion-MNIST)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from digits.idx import read_idx
from digits.sources.base import FILES, Arrays, Attempt, FetchError, no_scratch


def local_attempt(local_dir: str, *, files: Sequence[str] = FILES) -> Attempt:
    """Not strict: any directory of well-formed IDX files will do; the manifest records whether they match."""
    return Attempt("local", local_dir, False, no_scratch(from_local, Path(local_dir), files=files))


def from_local(directory: Path, files: Sequence[str] = FILES) -> tuple[Arrays, dict[str, Any]]:
    """Read the IDX files, each plain or .gz, from a directory."""
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
