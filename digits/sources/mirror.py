"""The mirrors source: the gzipped IDX files over HTTP, one mirror per attempt."""

from __future__ import annotations

import http.client
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

from digits.idx import parse_idx
from digits.sources.base import FILES, Arrays, Attempt, FetchError


def mirror_attempts(mirrors: Sequence[str], *, timeout: float, files: Sequence[str] = FILES) -> list[Attempt]:
    """One strict attempt per mirror: what it serves must hash to the published sha256."""
    return [
        Attempt("mirrors", base, True, partial(from_mirror, base, timeout=timeout, files=files))
        for base in mirrors
    ]


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
