"""Training: the per-epoch copy feeder, validation-based selection, and run-to-run determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from digits.idx import read_idx
from digits.params import ModelParams, TrainParams
from digits.train import EpochCopies, build_and_train


def test_epoch_copies_cycles_copies_and_reshuffles() -> None:
    n, copies = 10, 3
    # Pixel value = copy index * 100 + digit index, so each batch tells which copy and digits it came from.
    images = (np.arange(copies)[:, None] * 100 + np.arange(n)[None, :]).astype(np.uint8)
    images = np.broadcast_to(images[:, :, None, None], (copies, n, 28, 28)).copy()
    labels = np.arange(n) % 10
    data = EpochCopies(images, labels, batch_size=4, seed=7)
    assert len(data) == 3
    orders = []
    for epoch in range(4):
        seen = []
        for b in range(len(data)):
            x, y = data[b]
            assert x.shape[1:] == (28, 28, 1) and x.dtype == np.float32
            pixel = np.rint(x[:, 0, 0, 0] * 255).astype(int)
            assert set(pixel // 100) == {epoch % copies}
            seen += (pixel % 100).tolist()
            np.testing.assert_array_equal(y.argmax(axis=1), labels[pixel % 100])
        assert sorted(seen) == list(range(n))
        orders.append(seen)
        data.on_epoch_end()
    assert orders[0] != orders[1]
    again = EpochCopies(images, labels, batch_size=4, seed=7)
    assert [int(v) for v in np.rint(again[0][0][:, 0, 0, 0] * 255) % 100] == orders[0][:4]


def test_epoch_copies_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="matching 5 labels"):
        EpochCopies(np.zeros((2, 6, 28, 28), np.uint8), np.zeros(5, np.uint8), 4, 0)


def _tiny(tiny_mnist_dir: Path) -> tuple[np.ndarray, ...]:
    x = read_idx(tiny_mnist_dir / "train-images-idx3-ubyte.gz")
    y = read_idx(tiny_mnist_dir / "train-labels-idx1-ubyte.gz")
    return x[:500][None], y[:500], x[500:], y[500:]


def test_training_is_deterministic_and_learns(tiny_mnist_dir: Path) -> None:
    model_params = ModelParams(preset="deep", filters=[8, 16], dense=32)
    train_params = TrainParams(epochs=3, batch_size=50, lr=0.005, lr_decay=0.9, patience=0, seed=3)
    first = build_and_train(model_params, train_params, *_tiny(tiny_mnist_dir))
    second = build_and_train(model_params, train_params, *_tiny(tiny_mnist_dir))
    assert first.history == second.history
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    summary = first.summary()
    assert summary["epochs_run"] == 3
    assert summary["best_val_accuracy"] == round(max(first.history["val_accuracy"]), 5)
    assert summary["best_val_accuracy"] > 0.3  # 500 digits, 3 epochs: well above chance
    # The learning rate decays by lr_decay every epoch.
    np.testing.assert_allclose(first.history["learning_rate"], [0.005, 0.0045, 0.00405], rtol=1e-5)


def test_restores_the_best_validation_epoch(tiny_mnist_dir: Path) -> None:
    model_params = ModelParams(preset="seed", filters=[4, 8], dense=16)
    train_params = TrainParams(epochs=4, batch_size=50, lr=0.01, lr_decay=1.0, patience=1, seed=1)
    result = build_and_train(model_params, train_params, *_tiny(tiny_mnist_dir))
    _, _, val_x, val_y = _tiny(tiny_mnist_dir)
    from digits.preprocess import to_model_input

    acc = float(np.mean(np.asarray(result.model(to_model_input(val_x))).argmax(axis=1) == val_y))
    assert acc == pytest.approx(max(result.history["val_accuracy"]), abs=1e-6)
    assert result.best_epoch == int(np.argmax(result.history["val_accuracy"])) + 1
