"""digits.verify on fetched files: intact, damaged, missing, and a manifest that contradicts MNIST."""

import json
from pathlib import Path

import pytest

from digits import DigitsError
from digits.fetch import fetch
from digits.params import FetchParams
from digits.sources.base import TEST_LABELS
from digits.verify import verify_fetched


@pytest.fixture
def raw(tmp_path: Path, tiny_mnist_dir: Path) -> Path:
    """The tiny fixture's digits as fetch writes them (not MNIST's files: its manifest says so)."""
    fetch(FetchParams(sources=["local"], local_dir=str(tiny_mnist_dir)), tmp_path / "raw")
    return tmp_path / "raw"


def _manifest(raw: Path) -> dict:
    return json.loads((raw / "manifest.json").read_text())


def test_intact_files_give_their_sha256(raw):
    digests = verify_fetched(raw)
    assert digests == {name: e["sha256"] for name, e in _manifest(raw)["files"].items()}
    assert verify_fetched(raw) == digests  # the stage's output: the same whenever the data is intact


def test_one_flipped_byte_names_the_file_and_the_fix(raw):
    name = next(iter(_manifest(raw)["files"]))
    data = bytearray((raw / name).read_bytes())
    data[-1] ^= 1
    (raw / name).write_bytes(data)
    with pytest.raises(DigitsError, match=rf"{name} is damaged: sha256 .* `dvc repro -f fetch`"):
        verify_fetched(raw)
    assert (raw / name).read_bytes() == data  # nothing deleted or repaired behind the user's back


def test_a_missing_file_or_manifest(raw):
    name = next(iter(_manifest(raw)["files"]))
    (raw / name).unlink()
    with pytest.raises(DigitsError, match=f"{name}: not found, though .*manifest.json lists it"):
        verify_fetched(raw)
    (raw / "manifest.json").unlink()
    with pytest.raises(DigitsError, match=r"manifest.json: not found; fetch it again"):
        verify_fetched(raw)
    (raw / "manifest.json").write_text("{")
    with pytest.raises(DigitsError, match=r"manifest.json: damaged \(JSONDecodeError"):
        verify_fetched(raw)


def test_a_manifest_that_calls_other_files_mnist_is_refused(raw):
    meta = _manifest(raw)
    (raw / "manifest.json").write_text(json.dumps({**meta, "is_mnist": True}))
    with pytest.raises(DigitsError, match=r"says .* is MNIST's, but records sha256 .*, not the published"):
        verify_fetched(raw)


def test_mnist_must_have_all_four_files(raw):
    (raw / "manifest.json").write_text(json.dumps({**_manifest(raw), "is_mnist": True, "files": {}}))
    with pytest.raises(DigitsError, match=rf"lists no \[.*'{TEST_LABELS}'.*\]"):
        verify_fetched(raw)
