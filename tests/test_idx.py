import gzip
import hashlib
import json

import numpy as np
import pytest

from digits import DigitsError
from digits.idx import MANIFEST, IdxError, idx_bytes, parse_idx, read_fetched, read_idx, write_idx


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_round_trip_is_exact(tmp_path, images, name):
    path = tmp_path / name
    write_idx(path, images)
    back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == (5, 28, 28)
    np.testing.assert_array_equal(back, images)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp file left behind


def test_header_is_mnist_layout(images):
    data = idx_bytes(images)
    assert data[:16] == bytes.fromhex("00000803 00000005 0000001c 0000001c")
    assert len(data) == 16 + images.size
    assert idx_bytes(np.arange(10, dtype=np.uint8))[:8] == bytes.fromhex("00000801 0000000a")


def test_gzip_output_is_deterministic(tmp_path, images):
    write_idx(tmp_path / "a.gz", images)
    write_idx(tmp_path / "b.gz", images)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def test_gzip_is_detected_from_content_not_name(tmp_path, images):
    path = tmp_path / "misnamed-idx3-ubyte"
    path.write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(path), images)


def test_reads_other_dtypes_big_endian():
    data = bytes.fromhex("00000c01 00000002 00000001 fffffffe")  # int32, 2 values
    np.testing.assert_array_equal(parse_idx(data), [1, -2])


def test_bad_magic_names_the_file(tmp_path, images):
    path = tmp_path / "bad-magic"
    path.write_bytes(b"\x12\x34" + idx_bytes(images)[2:])
    with pytest.raises(IdxError, match=r"bad-magic.*not an IDX file"):
        read_idx(path)


def test_unknown_dtype_code_is_bad_magic(images):
    with pytest.raises(IdxError, match="not an IDX file"):
        parse_idx(b"\x00\x00\x07\x03" + idx_bytes(images)[4:], "x")


@pytest.mark.parametrize("cut", [1, 100, 5 * 28 * 28])
def test_truncated_names_the_file(tmp_path, images, cut):
    path = tmp_path / "short-idx3-ubyte"
    path.write_bytes(idx_bytes(images)[:-cut])
    with pytest.raises(IdxError, match=r"short-idx3-ubyte.*truncated"):
        read_idx(path)


def test_truncated_header(images):
    with pytest.raises(IdxError, match="truncated header"):
        parse_idx(idx_bytes(images)[:10], "x")
    with pytest.raises(IdxError, match="too short"):
        parse_idx(b"\x00\x00", "x")


def test_trailing_bytes(images):
    with pytest.raises(IdxError, match="trailing bytes"):
        parse_idx(idx_bytes(images) + b"\x00", "x")


def test_truncated_gzip(tmp_path, images):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(images))[:-20])
    with pytest.raises(IdxError, match=r"cut\.gz.*corrupt gzip"):
        read_idx(path)


def test_write_refuses_non_uint8(tmp_path):
    with pytest.raises(IdxError, match="uint8"):
        write_idx(tmp_path / "x", np.zeros((2, 2), dtype=np.float32))
    assert not list(tmp_path.iterdir())


def test_idx_error_is_a_digits_error():
    assert issubclass(IdxError, DigitsError)


def test_tiny_fixture_reads(tiny_mnist_dir):
    images = read_idx(tiny_mnist_dir / "train-images-idx3-ubyte.gz")
    labels = read_idx(tiny_mnist_dir / "train-labels-idx1-ubyte.gz")
    assert images.shape == (600, 28, 28) and labels.shape == (600,)
    assert np.bincount(labels).tolist() == [60] * 10
    assert np.bincount(read_idx(tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz")).tolist() == [20] * 10


def _fetched(tmp_path, images) -> None:
    write_idx(tmp_path / "images-idx3-ubyte", images)
    digest = hashlib.sha256((tmp_path / "images-idx3-ubyte").read_bytes()).hexdigest()
    (tmp_path / MANIFEST).write_text(json.dumps({"files": {"images-idx3-ubyte": {"sha256": digest}}}))


def test_read_fetched_checks_the_manifest(tmp_path, images):
    _fetched(tmp_path, images)
    np.testing.assert_array_equal(read_fetched(tmp_path, "images-idx3-ubyte"), images)
    # Eight flipped bytes in the pixels: still a well-formed IDX file, so only the checksum can tell.
    path = tmp_path / "images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[100:108] = bytes(b ^ 0xFF for b in data[100:108])
    path.write_bytes(data)
    with pytest.raises(DigitsError, match=r"idx3-ubyte is damaged: sha256 .*`dvc repro verify` says how"):
        read_fetched(tmp_path, "images-idx3-ubyte")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / MANIFEST).unlink(), r"manifest.json: not found"),
        (lambda d: (d / MANIFEST).write_text("{}"), r"no sha256 for images-idx3-ubyte \(KeyError"),
        (lambda d: (d / MANIFEST).write_text("[1"), r"no sha256 for images-idx3-ubyte \(JSONDecodeError"),
        (lambda d: (d / "images-idx3-ubyte").unlink(), r"images-idx3-ubyte: not found"),
    ],
)
def test_read_fetched_names_what_is_missing(tmp_path, images, damage, message):
    _fetched(tmp_path, images)
    damage(tmp_path)
    with pytest.raises(DigitsError, match=message + r".*`dvc repro verify` says how"):
        read_fetched(tmp_path, "images-idx3-ubyte")
