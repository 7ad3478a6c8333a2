"""Kaggle submission: the file format, and the real fetch(kaggle) -> submission path on generated CSVs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT
from pipeline_repo import run_stage_script

from digits.idx import read_idx
from digits.submission import submission_csv


def test_submission_format() -> None:
    assert submission_csv(np.array([7, 2, 1])) == "ImageId,Label\n1,7\n2,2\n3,1\n"
    assert submission_csv(np.zeros(0, np.uint8)) == "ImageId,Label\n"
    with pytest.raises(ValueError, match=r"digits 0\.\.9"):
        submission_csv(np.array([3, 10]))
    with pytest.raises(ValueError, match="1-d"):
        submission_csv(np.zeros((2, 10)))


def write_kaggle_csvs(directory: Path, tiny_mnist_dir: Path) -> np.ndarray:
    """train.csv from 300 real training digits, test.csv from 40 real test digits; returns the test labels."""
    directory.mkdir(parents=True)
    x = read_idx(tiny_mnist_dir / "train-images-idx3-ubyte.gz")[:300].reshape(300, -1)
    y = read_idx(tiny_mnist_dir / "train-labels-idx1-ubyte.gz")[:300]
    header = "label," + ",".join(f"pixel{i}" for i in range(784))
    np.savetxt(
        directory / "train.csv", np.column_stack([y, x]), fmt="%d", delimiter=",", header=header, comments=""
    )
    test_x = read_idx(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz")[:40].reshape(40, -1)
    pixels_header = ",".join(f"pixel{i}" for i in range(784))
    np.savetxt(directory / "test.csv", test_x, fmt="%d", delimiter=",", header=pixels_header, comments="")
    return read_idx(tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz")[:40]


def test_kaggle_fetch_then_submission(tmp_path: Path, tiny_mnist_dir: Path, small_model_path: Path) -> None:
    truth = write_kaggle_csvs(tmp_path / "data/kaggle", tiny_mnist_dir)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["fetch"]["sources"] = ["kaggle"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    fetched = run_stage_script(tmp_path, "fetch")
    assert fetched.returncode == 0, fetched.stderr
    (tmp_path / "models").mkdir()
    shutil.copy(small_model_path, tmp_path / "models/model.keras")

    done = run_stage_script(tmp_path, "submission")
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "submission.csv").read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == 41
    ids, labels = zip(*(map(int, line.split(",")) for line in lines[1:]), strict=True)
    assert list(ids) == list(range(1, 41))
    # test.csv's rows in order: the 98.8% fixture model gets nearly all of these real digits right.
    assert np.mean(np.array(labels) == truth) >= 0.9


def test_without_kaggle_data_the_file_has_only_its_header(tmp_path: Path) -> None:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    done = run_stage_script(tmp_path, "submission")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "submission.csv").read_text() == "ImageId,Label\n"
    assert "has only its header" in done.stderr
