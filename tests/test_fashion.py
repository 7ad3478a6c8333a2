"""The fashion stage's sources, against local fixtures only: the tiny Fashion-MNIST fixture as a local
directory and served by a loopback HTTP mirror. Never Debian's package (a fresh machine lacks it) nor the
internet. The strict mirrors need the fixture's hashes patched in as the published ones (tiny_is_fashion),
unless a mismatch is the point.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import file_server, free_port
from pipeline_repo import TINY_FASHION_DIR, make_tiny_repo, run, run_stage_script

import digits.fashion
from digits.fashion import FASHION, FASHION_SHA256, fetch_fashion, plan
from digits.fetch import MANIFEST, FetchError
from digits.idx import idx_bytes, read_idx, write_idx
from digits.params import FashionParams
from digits.sources.base import TEST_IMAGES, TEST_LABELS

FILES = (TEST_IMAGES, TEST_LABELS)
ARRAYS = {name: read_idx(TINY_FASHION_DIR / f"{name}.gz") for name in FILES}
EXPECTED = {name: hashlib.sha256(idx_bytes(a)).hexdigest() for name, a in ARRAYS.items()}


def params(**kwargs) -> FashionParams:
    return FashionParams(**{"timeout": 5.0, **kwargs})


@pytest.fixture
def tiny_is_fashion(monkeypatch):
    """The fixture's sha256 as Fashion-MNIST's published ones: the strict mirrors then accept it."""
    monkeypatch.setattr(digits.fashion, "FASHION", replace(FASHION, sha256=EXPECTED))


def assert_fetched(out_dir: Path) -> dict:
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [*FILES, MANIFEST]
    )  # uncompressed, like data/raw
    for name in FILES:
        np.testing.assert_array_equal(read_idx(out_dir / name), ARRAYS[name])
        assert (out_dir / name).read_bytes()[:2] != b"\x1f\x8b"
    return json.loads((out_dir / MANIFEST).read_text())


def assert_no_leftovers(parent: Path, allowed: set[str]) -> None:
    assert {p.name for p in parent.iterdir()} == allowed  # no staging dirs, no partial files


def test_the_fixture_is_the_start_of_the_real_test_set():
    assert ARRAYS[TEST_IMAGES].shape == (100, 28, 28) and ARRAYS[TEST_IMAGES].dtype == np.uint8
    assert ARRAYS[TEST_LABELS].shape == (100,) and set(ARRAYS[TEST_LABELS]) == set(range(10))
    assert EXPECTED != FASHION_SHA256  # so the strict mirrors reject it unless told its hashes


# ---------------------------------------------------------------- local directory (Debian's package)


def test_local_dir_is_not_strict_and_records_the_match(tmp_path):
    out = tmp_path / "data" / "fashion"
    manifest = fetch_fashion(params(sources=["local"], local_dir=str(TINY_FASHION_DIR)), out)
    assert assert_fetched(out) == manifest
    assert manifest["source"] == "local" and manifest["where"] == str(TINY_FASHION_DIR)
    assert manifest["details"]["files"][TEST_IMAGES].endswith(".gz")
    assert manifest["is_fashion_mnist"] is False  # structure checked; 100 pictures are not the published file
    entry = manifest["files"][TEST_LABELS]
    assert entry["sha256"] == EXPECTED[TEST_LABELS] and entry["fashion_mnist_sha256_match"] is False
    assert entry["label_counts"] == np.bincount(ARRAYS[TEST_LABELS], minlength=10).tolist()
    assert manifest["failed_attempts"] == []
    assert_no_leftovers(tmp_path / "data", {"fashion"})


def test_local_dir_with_the_published_hashes_is_fashion_mnist(tmp_path, tiny_is_fashion):
    p = params(sources=["local"], local_dir=str(TINY_FASHION_DIR))
    manifest = fetch_fashion(p, tmp_path / "fashion")
    assert manifest["is_fashion_mnist"] is True
    assert all(f["fashion_mnist_sha256_match"] for f in manifest["files"].values())


def test_local_dir_reads_plain_files_and_ignores_the_training_ones(tmp_path):
    source = tmp_path / "idx"
    source.mkdir()
    for name in FILES:
        write_idx(source / name, ARRAYS[name])  # uncompressed this time
    (source / "train-images-idx3-ubyte.gz").write_bytes(b"not read")
    fetch_fashion(params(sources=["local"], local_dir=str(source)), tmp_path / "fashion")
    assert_fetched(tmp_path / "fashion")


def test_local_dir_missing_a_file_falls_back_to_the_next_source(tmp_path, server, tiny_is_fashion):
    source = tmp_path / "idx"
    source.mkdir()
    shutil.copy(TINY_FASHION_DIR / f"{TEST_IMAGES}.gz", source)
    p = params(sources=["local", "mirrors"], local_dir=str(source), mirrors=[f"{server}/good/"])
    manifest = fetch_fashion(p, tmp_path / "fashion")
    assert_fetched(tmp_path / "fashion")
    assert manifest["source"] == "mirrors" and manifest["is_fashion_mnist"] is True
    [failure] = manifest["failed_attempts"]
    assert failure["source"] == "local" and f"has no {TEST_LABELS} or {TEST_LABELS}.gz" in failure["error"]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda gz: b"\x1f\x8b not really gzip", rf"{TEST_IMAGES}\.gz: corrupt gzip"),
        (lambda gz: gzip.compress(gzip.decompress(gz)[:-100]), rf"{TEST_IMAGES}\.gz: truncated"),
        (lambda gz: gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 12), r"want uint8 \(n, 28, 28\)"),
    ],
    ids=["corrupt-gzip", "cut-idx", "wrong-shape"],
)
def test_damaged_local_file_names_it_and_writes_nothing(tmp_path, damage, reason):
    source = tmp_path / "idx"
    shutil.copytree(TINY_FASHION_DIR, source)
    images = source / f"{TEST_IMAGES}.gz"
    images.write_bytes(damage(images.read_bytes()))
    with pytest.raises(FetchError, match=reason):
        fetch_fashion(params(sources=["local"], local_dir=str(source)), tmp_path / "fashion")
    assert_no_leftovers(tmp_path, {"idx"})


def test_labels_outside_0_to_9_are_refused(tmp_path):
    source = tmp_path / "idx"
    shutil.copytree(TINY_FASHION_DIR, source)
    write_idx(source / f"{TEST_LABELS}.gz", np.full(100, 10, dtype=np.uint8))
    with pytest.raises(FetchError, match=r"10 is not a digit 0\.\.9"):
        fetch_fashion(params(sources=["local"], local_dir=str(source)), tmp_path / "fashion")


# ---------------------------------------------------------------- official mirrors, over loopback


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A loopback server, one directory per kind of mirror: good, corrupt, short (body cut), wrong content."""
    routes: dict[str, tuple[bytes, int]] = {}  # path -> (body, the Content-Length announced)
    for name in FILES:
        gz = (TINY_FASHION_DIR / f"{name}.gz").read_bytes()
        middle = len(gz) // 2
        variants = {
            "good": (gz, len(gz)),
            "corrupt": (
                gz[:middle] + bytes(b ^ 0xFF for b in gz[middle : middle + 32]) + gz[middle + 32 :],
                len(gz),
            ),
            "short": (gz[:middle], len(gz)),  # the connection drops mid-body
            "wrong": (gzip.compress(idx_bytes(ARRAYS[name][::-1].copy())), None),  # valid IDX, other order
        }
        for kind, (body, length) in variants.items():
            routes[f"/{kind}/{name}.gz"] = (body, len(body) if length is None else length)

    with file_server(routes) as url:
        yield url


def test_good_mirror(tmp_path, server, tiny_is_fashion):
    out = tmp_path / "data" / "fashion"
    manifest = fetch_fashion(params(sources=["mirrors"], mirrors=[f"{server}/good/"]), out)
    assert assert_fetched(out) == manifest
    assert manifest["source"] == "mirrors" and manifest["details"] == {"url": f"{server}/good/"}
    assert manifest["is_fashion_mnist"] is True and manifest["failed_attempts"] == []
    assert_no_leftovers(tmp_path / "data", {"fashion"})


def test_mirror_must_match_the_published_sha256(tmp_path, server):
    # The real hashes (unpatched): the tiny files are well-formed but not the published ones.
    with pytest.raises(
        FetchError, match=rf"{TEST_IMAGES}: sha256 \w+… is not Fashion-MNIST's 5b4141f0afbad91e…"
    ):
        fetch_fashion(params(sources=["mirrors"], mirrors=[f"{server}/good/"]), tmp_path / "fashion")
    assert_no_leftovers(tmp_path, set())


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "HTTP 404"),
        ("corrupt", "corrupt gzip"),
        ("short", "truncated"),
        ("wrong", "is not Fashion-MNIST's"),
        ("unreachable", "cannot connect"),
    ],
)
def test_bad_first_mirror_falls_back_to_the_next(tmp_path, server, kind, reason, tiny_is_fashion):
    bad = f"http://127.0.0.1:{free_port()}/" if kind == "unreachable" else f"{server}/{kind}/"
    p = params(sources=["mirrors"], mirrors=[bad, f"{server}/good/"])
    manifest = fetch_fashion(p, tmp_path / "fashion")
    assert_fetched(tmp_path / "fashion")
    assert manifest["where"] == f"{server}/good/"
    [failure] = manifest["failed_attempts"]
    assert failure["source"] == "mirrors" and failure["where"] == bad and reason in failure["error"]
    assert_no_leftovers(tmp_path, {"fashion"})


def test_all_failing_lists_every_attempt_and_keeps_the_previous_output(
    tmp_path, server, capsys, tiny_is_fashion
):
    out = tmp_path / "fashion"
    out.mkdir()
    (out / "previous").write_text("kept")
    mirrors = [f"{server}/missing/", f"{server}/short/", f"{server}/wrong/"]
    p = params(sources=["local", "mirrors"], local_dir=str(tmp_path / "nowhere"), mirrors=mirrors)
    with pytest.raises(FetchError) as info:
        fetch_fashion(p, out)
    message = str(info.value)
    assert message.startswith("no source gave usable Fashion-MNIST files; tried, in order:\n")
    for where, reason in zip(
        [str(tmp_path / "nowhere"), *mirrors],
        [f"has no {TEST_IMAGES}", "HTTP 404", "truncated", "is not Fashion-MNIST's"],
        strict=True,
    ):
        assert f"{where}: " in message and reason in message
    assert message.count("\n  ") == 4  # one line per attempt
    assert "dataset-fashion-mnist" in message.splitlines()[-1]  # and what to do about it
    assert [p.name for p in out.iterdir()] == ["previous"]
    assert_no_leftovers(tmp_path, {"fashion"})
    assert capsys.readouterr().err.count("fashion: ") == 8  # each attempt: "trying", then "failed"


def test_no_mirrors_is_a_clear_error(tmp_path):
    with pytest.raises(FetchError, match=r"nothing to try: fashion\.sources \(or fashion\.mirrors\)"):
        fetch_fashion(params(sources=["mirrors"], mirrors=[]), tmp_path / "fashion")


def test_plan_tries_the_sources_in_order_and_only_mirrors_are_strict():
    p = params(sources=["mirrors", "local"], mirrors=["http://a/", "http://b/"])
    assert [(a.source, a.where, a.strict) for a in plan(p)] == [
        ("mirrors", "http://a/", True),
        ("mirrors", "http://b/", True),
        ("local", "/usr/share/datasets/fashion-mnist", False),
    ]


def test_defaults_are_debian_then_the_official_mirrors():
    p = FashionParams()
    assert p.sources == ["local", "mirrors"] and p.local_dir == "/usr/share/datasets/fashion-mnist"
    assert all(m.endswith("/") for m in p.mirrors) and len(p.mirrors) == 2


# ---------------------------------------------------------------- the stage


def test_stage_script_writes_data_fashion(tmp_path):
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"fashion": {"sources": ["local"], "local_dir": str(TINY_FASHION_DIR)}})
    )
    proc = run_stage_script(tmp_path, "fashion")
    assert proc.returncode == 0, proc.stderr
    assert "fashion: 100 test images from local" in proc.stderr
    assert assert_fetched(tmp_path / "data" / "fashion")["source"] == "local"


def test_stage_script_failure_is_one_message_and_exit_2(tmp_path):
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"fashion": {"sources": ["local"], "local_dir": str(tmp_path / "nowhere")}})
    )
    proc = run_stage_script(tmp_path, "fashion")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "fashion: error: no source gave usable Fashion-MNIST files" in proc.stderr
    assert_no_leftovers(tmp_path, {"params.yaml", "data"})
    assert_no_leftovers(tmp_path / "data", set())


@pytest.mark.slow
def test_tiny_repo_runs_the_fashion_stage_from_the_fixture(tmp_path, tiny_mnist_dir):
    repo = make_tiny_repo(tmp_path, tiny_mnist_dir)
    out = run(repo, "dvc", "repro", "fashion")
    assert "Running stage 'fashion'" in out and "Running stage 'fetch'" not in out  # wired to nothing
    assert assert_fetched(repo / "data" / "fashion")["where"] == str(TINY_FASHION_DIR)
    assert "Running stage" not in run(repo, "dvc", "repro", "fashion")  # a second run is a no-op
