"""benchmarks/seeds.py: the negatives stage's non-digits, fewer of them, or a recipe's own."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import yaml

from digits import paths
from digits.negatives import draw_splits
from digits.params import Params
from digits.splits import save_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from seeds import fewer_non_digits, stage_data, with_overrides


def test_fewer_non_digits_keeps_each_familys_share_and_the_file_order() -> None:
    families = np.repeat([0, 1, 2, 3, 5], 7200)  # the stage's 36,000: five training families
    pictures = np.arange(len(families))  # stands for the pictures: which one was kept
    kept = fewer_non_digits(pictures, families, 30001, seed=42)
    assert len(kept) == 30001 and len(np.unique(kept)) == 30001 and np.all(np.diff(kept) > 0)
    assert sorted(np.bincount(families[kept])[[0, 1, 2, 3, 5]]) == [6000, 6000, 6000, 6000, 6001]
    np.testing.assert_array_equal(kept, fewer_non_digits(pictures, families, 30001, seed=42))
    assert not np.array_equal(kept, fewer_non_digits(pictures, families, 30001, seed=43))


def test_a_recipe_that_changes_the_non_digits_trains_on_its_own(tmp_path, monkeypatch) -> None:
    """stage_data reads the negatives stage's file only for params.yaml's non-digits, else draws them."""
    monkeypatch.chdir(tmp_path)
    params = with_overrides(Params(), ["negatives.train=20", "train.bn_digits=4"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump()))
    file_x = np.full((20, 28, 28), 7, np.uint8)  # stands for the stage's file: recognisable bytes
    save_split(paths.negatives("train"), file_x, np.zeros(20, np.int64))
    digits = np.zeros((8, 28, 28), np.uint8)
    labels = np.arange(8) % 10

    def non_digits(recipe: Params) -> np.ndarray:
        data = stage_data(recipe, digits, labels, digits[None], digits, labels)
        return data.copies[0][data.labels == 10]

    np.testing.assert_array_equal(non_digits(params), file_x)
    other = with_overrides(params, ["augment.lowres=0"])
    np.testing.assert_array_equal(non_digits(other), draw_splits(other, ("train",))["train"][0])
    more = with_overrides(params, ["negatives.train=30"])  # more than the file's 20: the stage's 30
    np.testing.assert_array_equal(non_digits(more), draw_splits(more, ("train",))["train"][0])
    assert len(non_digits(more)) == 30
