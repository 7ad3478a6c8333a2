"""Collected corrections (digits.feedback): stored atomically and within bounds, read back as digits."""

import io
import json
import multiprocessing
import time

import numpy as np
import pytest
from PIL import Image

from digits import DigitsError
from digits.feedback import (
    LABELS,
    STORED_SIDE,
    Collector,
    FeedbackRefused,
    add,
    check_label,
    load_feedback,
    main,
    read_labels,
    stored_png,
)
from digits.mnistify import decode_image, mnistify


@pytest.fixture(scope="module")
def seven(test_digits):
    """A real MNIST 7, drawn big as the page's canvas would send it: grey (280, 280) in [0, 1]."""
    image = Image.fromarray(np.rint(test_digits[0][0] * 255).astype(np.uint8)).resize((280, 280))
    return np.asarray(image, np.float32) / 255


def test_an_item_is_a_grey_png_and_one_line_without_the_client(tmp_path, seven):
    collector = Collector(tmp_path / "collected")
    assert collector.store(seven, 1, 7, "0123456789ab") == "000001.png"
    assert collector.store(seven, "not a digit", None, "0123456789ab") == "000002.png"
    lines = (tmp_path / "collected" / LABELS).read_text().splitlines()
    first = json.loads(lines[0])
    assert set(first) == {"file", "label", "answered", "model", "time"}
    assert (first["file"], first["label"], first["answered"], first["model"]) == (
        "000001.png",
        1,
        7,
        "0123456789ab",
    )
    assert abs(first["time"] - time.time()) < 60
    assert json.loads(lines[1])["label"] == "not a digit"
    with Image.open(tmp_path / "collected" / "000001.png") as stored:
        assert stored.mode == "L" and stored.size == (280, 280) and not stored.info.get("exif")
    assert not list((tmp_path / "collected").glob("*.tmp"))


def test_nothing_is_overwritten(tmp_path, seven):
    folder = tmp_path / "collected"
    folder.mkdir()
    (folder / "000001.png").write_bytes(b"someone else's")  # a file the labels do not list
    assert Collector(folder).store(seven, 3, 3, "0123456789ab") == "000002.png"
    assert (folder / "000001.png").read_bytes() == b"someone else's"


def test_the_count_and_the_rate_are_bounded(tmp_path, seven):
    full = Collector(tmp_path / "full", max_items=2)
    full.store(seven, 1, 1, "0123456789ab")
    full.store(seven, 1, 1, "0123456789ab")
    with pytest.raises(FeedbackRefused, match=r"full \(2 items\)") as refused:
        full.store(seven, 1, 1, "0123456789ab")
    assert refused.value.status == 507
    busy = Collector(tmp_path / "busy", per_minute=2)
    busy.store(seven, 1, 1, "0123456789ab")
    busy.store(seven, 1, 1, "0123456789ab")
    with pytest.raises(FeedbackRefused, match="more than 2 corrections a minute") as refused:
        busy.store(seven, 1, 1, "0123456789ab")
    assert refused.value.status == 429 and 1 <= refused.value.retry_after <= 60
    assert len(read_labels(tmp_path / "busy")) == 2


def _store_many(folder: str, picture: np.ndarray, n: int, stored: "multiprocessing.Queue") -> None:
    collector = Collector(folder, per_minute=10)
    for _ in range(n):
        try:
            stored.put(collector.store(picture, 2, 2, "0123456789ab"))
        except FeedbackRefused:
            stored.put(None)


def test_the_rate_holds_across_processes(tmp_path, seven):
    """Four processes (as --workers 4) storing at once share one count: 10 a minute in all, no name twice."""
    context = multiprocessing.get_context("spawn")
    stored = context.Queue()
    workers = [
        context.Process(target=_store_many, args=(str(tmp_path / "c"), seven, 6, stored)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    names = [stored.get(timeout=60) for _ in range(24)]
    for worker in workers:
        worker.join(timeout=30)
    kept = [n for n in names if n]
    assert len(kept) == 10 and len(set(kept)) == 10
    assert [item["file"] for item in read_labels(tmp_path / "c")] == sorted(kept)


def test_stored_pictures_are_small_and_read_back_as_the_server_prepares_them(tmp_path, seven):
    big = np.zeros((2000, 1500), np.float32)
    big[500:1500, 400:1100] = np.asarray(Image.fromarray(seven).resize((700, 1000)))
    data = stored_png(big)
    with Image.open(io.BytesIO(data)) as image:
        assert max(image.size) == STORED_SIDE
    collector = Collector(tmp_path / "c")
    collector.store(seven, 7, 7, "0123456789ab")
    images, labels = load_feedback(tmp_path / "c")
    assert images.shape == (1, 28, 28) and images.dtype == np.uint8 and labels.tolist() == [7]
    served = np.rint(mnistify(decode_image((tmp_path / "c" / "000001.png").read_bytes())) * 255)
    assert np.array_equal(images[0], served)
    assert np.abs(images[0] / 255 - mnistify(seven)).max() < 0.05  # the PNG round trip loses little


def test_an_empty_folder_is_no_digits(tmp_path):
    (tmp_path / LABELS).write_text("")
    images, labels = load_feedback(tmp_path)
    assert images.shape == (0, 28, 28) and labels.shape == (0,)


def test_bad_labels_and_lines_are_named():
    assert check_label(5.0) == 5 and check_label("not a digit") == "not a digit"
    for bad in (10, -1, True, "seven", None, 2.5):
        with pytest.raises(ValueError, match=r"must be a digit 0\.\.9"):
            check_label(bad)


def test_a_damaged_folder_is_one_line_of_error(tmp_path):
    (tmp_path / LABELS).write_text('{"file": "000001.png", "label": 12}\n')
    with pytest.raises(DigitsError, match=r"labels.jsonl:1: not a feedback item"):
        load_feedback(tmp_path)
    (tmp_path / LABELS).write_text('{"file": "000001.png", "label": 1, "time": 0}\n')
    with pytest.raises(DigitsError, match=r"000001\.png"):
        load_feedback(tmp_path)


def test_add_appends_a_reviewed_folder_under_new_names(tmp_path, seven, capsys):
    collected, data = Collector(tmp_path / "collected"), Collector(tmp_path / "data")
    data.store(seven, 7, 7, "0123456789ab")
    collected.store(seven, 1, 7, "0123456789ab")
    collected.store(seven, "not a digit", 7, "0123456789ab")
    assert main(["add", str(tmp_path / "collected"), "--into", str(tmp_path / "data")]) == 0
    assert "added 2 items" in capsys.readouterr().out
    items = read_labels(tmp_path / "data")
    assert [(i["file"], i["label"]) for i in items] == [
        ("000001.png", 7),
        ("000002.png", 1),
        ("000003.png", "not a digit"),
    ]
    assert (tmp_path / "data" / "000003.png").read_bytes() == (
        tmp_path / "collected" / "000002.png"
    ).read_bytes()
    assert add(tmp_path / "empty", tmp_path / "data") == []


def test_a_picture_upload_keeps_no_metadata(tmp_path, seven):
    """What the server stores is the decoded picture re-encoded: an upload's EXIF does not survive."""
    image = Image.fromarray(np.rint(seven * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x010E] = "taken at home"  # ImageDescription
    with_exif = io.BytesIO()
    image.save(with_exif, "JPEG", exif=exif)
    gray = decode_image(with_exif.getvalue())
    Collector(tmp_path).store(gray, 7, 7, "0123456789ab")
    assert b"taken at home" not in (tmp_path / "000001.png").read_bytes()
