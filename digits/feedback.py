"""Corrections that flow back into the data: what users say a picture was, collected and made a data set.

A feedback folder holds one PNG per item and `labels.jsonl`, one JSON line per item:
`{"file": "000001.png", "label": 7 | "not a digit", "answered": 1 | "not a digit" | null, "model": <sha>,
"time": <UTC, seconds>}`. No client address or anything else about who sent it; the PNG is the picture
re-encoded in grey, so no metadata of the upload (a photo's EXIF position) survives.

- `Collector` writes such a folder for the server (`python -m digits.serve --collect DIR`): each item
  written atomically (the PNG under a temporary name, then linked to its final one, which fails rather than
  overwrite), bounded in size, in count and in rate. Count and rate are read from `labels.jsonl` under an
  exclusive lock on the folder, so they hold across all `--workers` processes, not per process.
- `python -m digits.feedback add DIR` appends a reviewed folder's items to the pipeline's data set
  (data/feedback/), new names, never overwriting; `load_feedback` reads a folder as MNIST-like digits for
  the `feedback` stage.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from digits import DigitsError, paths
from digits.mnistify import BadInput, decode_image, mnistify

LABELS = "labels.jsonl"
NOT_A_DIGIT = "not a digit"
STORED_SIDE = 512  # pixels a side at most: enough for an MNIST-like 28x28, small on disk
MAX_ITEMS = 10_000  # per folder, by default
PER_MINUTE = 30  # items stored per minute, by default, by all processes together
LABEL_CLASSES = 11  # 0..9 and "not a digit" (label 10, the model's 11th class)


class FeedbackRefused(DigitsError):
    """The item cannot be stored: `status` is the HTTP status to answer with (429 rate, 507 full)."""

    def __init__(self, message: str, status: int, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


def check_label(label: object, what: str = "label") -> int | str:
    """A digit 0..9 (5.0 is 5, as JSON Schema's integer) or "not a digit"; else ValueError naming it."""
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if label == NOT_A_DIGIT or (isinstance(label, int) and not isinstance(label, bool) and 0 <= label <= 9):
        return label  # type: ignore[return-value]
    raise ValueError(f'{what} must be a digit 0..9 or "{NOT_A_DIGIT}", got {label!r}')


def stored_png(gray: np.ndarray) -> bytes:
    """A grey picture in [0, 1] as the PNG a folder keeps: 8-bit grey, at most STORED_SIDE a side."""
    image = Image.fromarray(np.rint(np.asarray(gray, np.float32) * 255).astype(np.uint8))
    image.thumbnail((STORED_SIDE, STORED_SIDE), Image.LANCZOS)
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


def read_labels(folder: Path) -> list[dict]:
    path = folder / LABELS
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    items = []
    for number, line in enumerate(lines, 1):
        try:
            item = json.loads(line)
            check_label(item["label"], f"{path}:{number}: label")
        except (ValueError, KeyError, TypeError) as e:
            raise DigitsError(f"{path}:{number}: not a feedback item ({e})") from None
        items.append(item)
    return items


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder, for every process that writes to it (fcntl: POSIX only)."""
    import fcntl

    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _append(folder: Path, item: dict, picture: bytes, seen: list[dict]) -> str:
    """Write one item under the lock: the PNG under a new name (never an existing one), then its line."""
    number = len(seen) + 1
    while True:
        name = f"{number:06d}.png"
        temporary = folder / f".{name}.{os.getpid()}.tmp"
        temporary.write_bytes(picture)
        try:
            os.link(temporary, folder / name)  # fails if the name exists: nothing is overwritten
            break
        except FileExistsError:
            number += 1
        finally:
            temporary.unlink()
    line = json.dumps({"file": name, **item}, separators=(",", ":")) + "\n"
    fd = os.open(folder / LABELS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return name


class Collector:
    """Stores corrections in `folder` within `max_items` in all and `per_minute` a minute."""

    def __init__(self, folder: str | Path, max_items: int = MAX_ITEMS, per_minute: int = PER_MINUTE) -> None:
        if max_items < 1 or per_minute < 1:
            raise DigitsError(
                f"collect limits must be at least 1, got {max_items} items, {per_minute} a minute"
            )
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            read_labels(self.folder)  # a folder of something else fails now, not at the first correction
        except OSError as e:
            raise DigitsError(f"--collect {folder}: {e.strerror}") from None
        self.max_items, self.per_minute = max_items, per_minute

    def store(self, gray: np.ndarray, label: int | str, answered: int | str | None, model: str) -> str:
        """The file name the item was stored under; FeedbackRefused when full or over the rate."""
        picture = stored_png(gray)
        now = round(time.time())
        with _locked(self.folder):
            seen = read_labels(self.folder)
            if len(seen) >= self.max_items:
                raise FeedbackRefused(f"the collection is full ({self.max_items} items)", 507)
            recent = [item["time"] for item in seen[-self.per_minute :] if now - item["time"] < 60]
            if len(recent) >= self.per_minute:
                wait = 60 - (now - min(recent))
                raise FeedbackRefused(f"more than {self.per_minute} corrections a minute", 429, max(1, wait))
            item = {"label": label, "answered": answered, "model": model, "time": now}
            return _append(self.folder, item, picture, seen)


def load_feedback(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A feedback folder as uint8 digits (n, 28, 28), prepared as the server prepares a picture, and labels
    (0..9, 10 for "not a digit")."""
    folder = Path(folder)
    images, labels = [], []
    for item in read_labels(folder):
        path = folder / item["file"]
        try:
            images.append(np.rint(mnistify(decode_image(path.read_bytes())) * 255).astype(np.uint8))
        except OSError as e:
            raise DigitsError(f"{path}: {e.strerror} (listed in {folder / LABELS})") from None
        except BadInput as e:
            raise DigitsError(f"{path}: {e}") from None
        labels.append(10 if item["label"] == NOT_A_DIGIT else item["label"])
    return np.asarray(images, np.uint8).reshape(-1, 28, 28), np.asarray(labels, np.int64)


def add(source: Path, target: Path) -> list[str]:
    """Append every item of a reviewed folder to another one under new names; the names written."""
    items = read_labels(source)
    target.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    seen = read_labels(target)  # one process: a CLI run by the reviewer, no lock (none left in the data set)
    for item in items:
        path = source / item["file"]
        try:
            picture = path.read_bytes()
            mnistify(decode_image(picture))  # a picture the feedback stage could not read fails here
        except OSError as e:
            raise DigitsError(f"{path}: {e.strerror} (listed in {source / LABELS})") from None
        except BadInput as e:
            raise DigitsError(f"{path}: {e}") from None
        fields = {k: v for k, v in item.items() if k != "file"}
        written.append(_append(target, fields, picture, seen))
        seen.append({"file": written[-1], **fields})
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m digits.feedback", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    adding = commands.add_parser("add", help="append a reviewed folder's items to the data set")
    adding.add_argument("source", type=Path, help="a folder the server collected (--collect DIR), reviewed")
    adding.add_argument("--into", type=Path, default=paths.FEEDBACK, help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        written = add(args.source, args.into)
    except DigitsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"added {len(written)} items to {args.into}: {', '.join(written) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
