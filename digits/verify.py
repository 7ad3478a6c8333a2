"""Is data/raw still what fetch wrote? Each file against the sha256 in fetch's manifest, and, where the
manifest says the files are MNIST, against MNIST's published sha256.

`dvc checkout` restores whatever bytes DVC's cache holds and `dvc status` trusts what it recorded, so a
damaged cache object or a file changed in place goes unreported while every stage is cached. Hashing the
files again costs a fraction of a second, so the verify stage does it on every `dvc repro`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from digits import DigitsError
from digits.idx import MANIFEST
from digits.sources.base import MNIST_SHA256

FIX = "fetch it again with `dvc repro -f fetch`"


def verify_fetched(raw_dir: Path) -> dict[str, str]:
    """The sha256 of every file the manifest lists, each checked; a DigitsError naming the first bad one.

    Nothing is deleted or changed: the error says what is wrong and how to fetch it again.
    """
    manifest = raw_dir / MANIFEST
    try:
        meta = json.loads(manifest.read_text())
        expected = {name: entry["sha256"] for name, entry in meta["files"].items()}
        is_mnist = meta.get("is_mnist") is True
    except FileNotFoundError:
        raise DigitsError(f"{manifest}: not found; {FIX}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DigitsError(f"{manifest}: damaged ({type(e).__name__}: {e}); {FIX}") from None
    digests = {}
    for name, want in sorted(expected.items()):
        path = raw_dir / name
        try:
            digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            raise DigitsError(f"{path}: not found, though {manifest} lists it; {FIX}") from None
        if digests[name] != want:
            raise DigitsError(
                f"{path} is damaged: sha256 {digests[name][:16]}… is not the {want[:16]}… that {manifest} "
                f"recorded when fetch wrote it; {_repair(path)}"
            )
        published = MNIST_SHA256.get(name)
        if is_mnist and published is not None and want != published:
            raise DigitsError(
                f"{manifest} says {name} is MNIST's, but records sha256 {want[:16]}…, not the published "
                f"{published[:16]}…; {FIX}"
            )
    if is_mnist and not set(MNIST_SHA256) <= set(digests):
        raise DigitsError(f"{manifest} lists no {sorted(set(MNIST_SHA256) - set(digests))}; {FIX}")
    return digests


def _repair(path: Path) -> str:
    """How to mend a damaged file of fetch's: fetch it again, after removing a damaged copy in DVC's cache."""
    copy = damaged_cache_copy(path)
    if copy is None:
        return FIX
    return (
        f"so is the copy in DVC's cache that `dvc checkout` restores: remove it (`rm -f {copy}`), then run "
        "`dvc repro -f fetch`"
    )


def damaged_cache_copy(path: Path, lock: Path = Path("dvc.lock")) -> Path | None:
    """The object in DVC's cache that `dvc checkout` restores `path` (a file of a directory output) from,
    if it is damaged too: its bytes do not hash to its name. None when it is intact or cannot be found.

    DVC never replaces an object already in its cache, so `dvc repro -f fetch` alone would fix the
    workspace and leave the next `dvc checkout` to bring the damage back.
    """
    try:
        import yaml
        from dvc.repo import Repo

        outs = [o for s in yaml.safe_load(lock.read_text())["stages"].values() for o in s.get("outs", [])]
        out = next(o for o in outs if path.is_relative_to(o["path"]) and o["md5"].endswith(".dir"))
        with Repo() as repo:
            cache = repo.cache.local
            listing = json.loads(Path(cache.oid_to_path(out["md5"])).read_text())
            relpath = path.relative_to(out["path"]).as_posix()
            md5 = next(e["md5"] for e in listing if e["relpath"] == relpath)
            copy = Path(cache.oid_to_path(md5))
        if hashlib.md5(copy.read_bytes(), usedforsecurity=False).hexdigest() == md5:
            return None
    except Exception:  # no DVC repo, lock or cache entry: nothing to say about a cached copy
        return None
    return copy.relative_to(Path.cwd()) if copy.is_relative_to(Path.cwd()) else copy
