"""Get Fashion-MNIST's test set into a directory: its two t10k IDX files plus manifest.json.

The open-set evaluation's pictures that are not digits: 10,000 clothes, never trained on. Obtained like
MNIST, by digits/fetch.py's machinery (atomic output, one line per failed attempt, one message listing them
all). `params.sources` in order: `local` reads Debian's dataset-fashion-mnist (or any directory of the two
files, plain or gzipped) and, like fetch's local source, only checks the structure and records whether the
hashes match, so a tiny fixture works too; `mirrors` are the official ones, whose files must match the
published sha256.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from digits.fetch import Dataset, fetch_first
from digits.params import FashionParams
from digits.sources.base import TEST_IMAGES, TEST_LABELS, Attempt
from digits.sources.local import local_attempt
from digits.sources.mirror import mirror_attempts

# sha256 of the uncompressed IDX files as published (header included): 10,000 pictures, 1,000 per class.
FASHION_SHA256 = {
    TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION = Dataset(
    name="Fashion-MNIST",
    key="fashion_mnist",
    section="fashion",
    sha256=FASHION_SHA256,
    advice=(
        "Check the network, or install Debian's dataset-fashion-mnist (it fills fashion.local_dir's "
        "default), or point fashion.local_dir in params.yaml at a directory holding the two files."
    ),
)


def fetch_fashion(params: FashionParams, out_dir: str | Path) -> dict[str, Any]:
    """Fill `out_dir` with the two test files and manifest.json from the first source that verifies."""
    return fetch_first(FASHION, plan(params), out_dir)


def plan(params: FashionParams) -> list[Attempt]:
    """The attempts `fetch_fashion` makes, in `params.sources` order, each mirror an attempt of its own."""
    files = FASHION.files
    attempts: list[Attempt] = []
    for source in params.sources:
        if source == "local":
            attempts.append(local_attempt(params.local_dir, files=files))
        elif source == "mirrors":
            attempts.extend(mirror_attempts(params.mirrors, timeout=params.timeout, files=files))
    return attempts
