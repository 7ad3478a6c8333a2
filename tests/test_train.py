"""Training: the per-epoch copy feeder, validation-based selection, and run-to-run determinism."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digits import DigitsError
from digits.distribute import distribution_strategy
from digits.feeds import EpochCopies, epoch_dataset
from digits.idx import read_idx
from digits.params import ModelParams, TrainParams
from digits.train import TrainingData, TrainResult, build_and_train, learning_rate


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


def test_tf_data_feed_gives_the_epoch_copies_batches_bit_for_bit() -> None:
    # The TensorFlow path trains on epoch_dataset; other backends on EpochCopies: the same data, same order.
    n, copies, epochs = 130, 3, 4
    images = np.random.default_rng(0).integers(0, 256, (copies, n, 28, 28), dtype=np.uint8)
    labels = np.arange(n) % 10
    reference = EpochCopies(images, labels, batch_size=32, seed=5)
    batches = list(epoch_dataset(images, labels, 32, 5, epochs).as_numpy_iterator())
    assert len(batches) == epochs * len(reference)
    for epoch in range(epochs):
        for b in range(len(reference)):
            x, y = batches[epoch * len(reference) + b]
            ref_x, ref_y = reference[b]
            np.testing.assert_array_equal(x, ref_x)
            np.testing.assert_array_equal(y, ref_y)
        reference.on_epoch_end()


def test_onecycle_warms_up_then_anneals_per_step() -> None:
    params = TrainParams(schedule="onecycle", lr=0.01, warmup=0.25, epochs=4)
    schedule = learning_rate(params, steps_per_epoch=10)  # 40 steps: 10 warming up, 30 annealing
    lr = [float(schedule(step)) for step in (0, 5, 10, 25, 40)]
    np.testing.assert_allclose(lr, [0.0004, 0.0052, 0.01, 0.005, 0.0], rtol=1e-5, atol=1e-9)
    assert learning_rate(TrainParams(schedule="exponential", lr=0.003), 10) == 0.003  # set per epoch


def test_epoch_copies_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="matching 5 labels"):
        EpochCopies(np.zeros((2, 6, 28, 28), np.uint8), np.zeros(5, np.uint8), 4, 0)


def _tiny(tiny_mnist_dir: Path) -> TrainingData:
    x = read_idx(tiny_mnist_dir / "train-images-idx3-ubyte.gz")
    y = read_idx(tiny_mnist_dir / "train-labels-idx1-ubyte.gz")
    return TrainingData(x[:500][None], y[:500], x[500:], y[500:])


def _train_twice(tiny_mnist_dir: Path, model_params: ModelParams, train_params: TrainParams) -> TrainResult:
    """Train twice with the same params; assert identical histories and weights; return the first run."""
    first = build_and_train(model_params, train_params, _tiny(tiny_mnist_dir))
    second = build_and_train(model_params, train_params, _tiny(tiny_mnist_dir))
    assert first.history == second.history
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    return first


def test_training_is_deterministic_and_learns(tiny_mnist_dir: Path) -> None:
    model_params = ModelParams(preset="deep", filters=[8, 16], dense=32)
    train_params = TrainParams(
        epochs=3, batch_size=50, schedule="exponential", lr=0.005, lr_decay=0.9, patience=0, seed=3
    )
    first = _train_twice(tiny_mnist_dir, model_params, train_params)
    summary = first.summary()
    assert summary["epochs_run"] == 3
    assert summary["best_val_accuracy"] == round(max(first.history["val_accuracy"]), 5)
    assert summary["best_val_accuracy"] > 0.3  # 500 digits, 3 epochs: well above chance
    # The learning rate decays by lr_decay every epoch.
    np.testing.assert_allclose(first.history["learning_rate"], [0.005, 0.0045, 0.00405], rtol=1e-5)


def test_onecycle_with_label_smoothing_is_deterministic_and_learns(tiny_mnist_dir: Path) -> None:
    model_params = ModelParams(preset="fast", filters=[8, 16], dense=32)
    train_params = TrainParams(
        epochs=3, batch_size=50, schedule="onecycle", lr=0.01, label_smoothing=0.1, patience=0, seed=3
    )
    first = _train_twice(tiny_mnist_dir, model_params, train_params)
    assert max(first.history["val_accuracy"]) > 0.3
    assert first.model.loss.get_config()["label_smoothing"] == 0.1


def test_restores_the_best_validation_epoch(tiny_mnist_dir: Path) -> None:
    model_params = ModelParams(preset="seed", filters=[4, 8], dense=16)
    train_params = TrainParams(
        epochs=4, batch_size=50, schedule="exponential", lr=0.01, lr_decay=1.0, patience=1, seed=1
    )
    result = build_and_train(model_params, train_params, _tiny(tiny_mnist_dir))
    tiny = _tiny(tiny_mnist_dir)
    val_x, val_y = tiny.val_images, tiny.val_labels
    from digits.shapes import to_model_input

    acc = float(np.mean(np.asarray(result.model(to_model_input(val_x))).argmax(axis=1) == val_y))
    assert acc == pytest.approx(max(result.history["val_accuracy"]), abs=1e-6)
    assert result.best_epoch == int(np.argmax(result.history["val_accuracy"])) + 1


MIRRORED = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
from digits.idx import read_idx
from digits.params import ModelParams, TrainParams
from digits.train import TrainingData, build_and_train
d = sys.argv[1]
x, y = read_idx(d + "/train-images-idx3-ubyte.gz"), read_idx(d + "/train-labels-idx1-ubyte.gz")
params = TrainParams(epochs=2, batch_size=64, patience=0, distribute="mirrored")
model = ModelParams(preset="seed", filters=[8, 16], dense=32)
result = build_and_train(model, params, TrainingData(x[None, :500], y[:500], x[500:600], y[500:600]))
print(json.dumps({"replicas": result.model.distribute_strategy.num_replicas_in_sync,
                  "val_accuracy": result.history["val_accuracy"]}))
"""


def test_mirrored_strategy_on_two_logical_cpus(tiny_mnist_dir: Path) -> None:
    # Logical devices must be configured before TensorFlow starts, so this runs in a fresh interpreter.
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(tiny_mnist_dir)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2  # each batch of 64 split into two replicas of 32
    assert len(out["val_accuracy"]) == 2 and out["val_accuracy"][-1] > 0.2  # it learns (chance: 0.1)


def test_distribute_default_needs_no_strategy_and_unknown_names_fail() -> None:
    assert distribution_strategy("default") is None
    with pytest.raises(DigitsError, match="unknown"):
        distribution_strategy("multi_worker")


def test_non_digits_are_an_eleventh_class_and_each_copy_gets_its_own_share() -> None:
    from digits.train import NOT_A_DIGIT, classes_of, with_negatives

    copies = np.zeros((2, 3, 28, 28), np.uint8)
    negatives = np.arange(5, dtype=np.uint8)[:, None, None] * np.ones((1, 28, 28), np.uint8)
    both, labels = with_negatives(copies, np.array([1, 2, 3]), negatives)
    # 5 non-digits over 2 copies: 2 each, the fifth left out; copy 0 gets 0 and 2, copy 1 gets 1 and 3.
    assert both.shape == (2, 5, 28, 28)
    assert both[0, 3:, 0, 0].tolist() == [0, 2] and both[1, 3:, 0, 0].tolist() == [1, 3]
    assert labels.tolist() == [1, 2, 3, NOT_A_DIGIT, NOT_A_DIGIT] and NOT_A_DIGIT == 10
    assert classes_of(labels) == 11 and classes_of(labels[:3]) == 10
    assert with_negatives(copies, np.array([1, 2, 3]), negatives[:0])[0] is copies
    with pytest.raises(DigitsError, match=r"negatives\.train"):
        with_negatives(np.zeros((6, 3, 28, 28), np.uint8), np.array([1, 2, 3]), negatives)


def test_corrections_join_every_copy_as_often_as_their_weight_says() -> None:
    from digits.train import NOT_A_DIGIT

    copies = np.zeros((2, 3, 28, 28), np.uint8)
    eleven = TrainingData(copies, np.array([1, 2, NOT_A_DIGIT]), copies[0], np.array([1, 2, 3]))
    corrections = np.full((2, 28, 28), 9, np.uint8)
    said = np.array([4, NOT_A_DIGIT])
    weighted = eleven.with_feedback(corrections, said, 3)
    assert weighted.copies.shape == (2, 9, 28, 28) and (weighted.copies[:, 3:] == 9).all()
    assert weighted.labels.tolist() == [1, 2, NOT_A_DIGIT] + [4, NOT_A_DIGIT] * 3
    assert eleven.with_feedback(corrections, said, 0) is eleven
    ten = TrainingData(copies, np.array([1, 2, 3]), copies[0], np.array([1, 2, 3]))
    only_digits = ten.with_feedback(corrections, said, 2)  # no class for "not a digit": left out
    assert only_digits.labels.tolist() == [1, 2, 3, 4, 4] and only_digits.copies.shape == (2, 5, 28, 28)


def test_a_not_a_digit_model_trains_and_answers_ten_digit_probabilities(tmp_path) -> None:
    from digits.models import load_model, predict_probs
    from digits.train import NOT_A_DIGIT, TrainingData, build_and_train

    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)
    labels = np.concatenate([np.arange(48) % 10, np.full(16, NOT_A_DIGIT)])
    params = TrainParams(epochs=1, batch_size=32, lr=1e-3)
    result = build_and_train(
        ModelParams(preset="fast", filters=[4, 8], dense=8),
        params,
        TrainingData(digits[None], labels, digits[:10], np.arange(10)),
    )
    assert result.model.output_shape == (None, 10)
    result.model.save(tmp_path / "m.keras")
    probs = predict_probs(load_model(tmp_path / "m.keras"), digits)
    # Each row lacks what the model gives "not a digit": positive, and the same as the 11-way softmax's.
    assert probs.shape == (64, 10) and (probs.sum(axis=1) < 1 - 1e-4).all()
    eleven = result.model.layers[-4].output  # the softmax before the crop
    assert eleven.shape[-1] == 11


def test_batch_norm_recalibration_measures_the_given_digits() -> None:
    import keras

    from digits.shapes import to_model_input
    from digits.train import recalibrate_batch_norm

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(3, use_bias=False),
            keras.layers.BatchNormalization(),
        ]
    )
    first, second = (x for x in model.layers if isinstance(x, keras.layers.BatchNormalization))
    first.moving_mean.assign(np.full(4, 9.0, np.float32))  # stale statistics, far off
    digits = np.random.default_rng(0).integers(0, 256, (300, 28, 28), dtype=np.uint8)
    recalibrate_batch_norm(model, digits, chunk=128)  # chunks that do not divide 300
    conv = np.asarray(model.layers[0](to_model_input(digits))).reshape(-1, 4)
    np.testing.assert_allclose(np.asarray(first.moving_mean), conv.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(first.moving_variance), conv.var(0), rtol=1e-3, atol=1e-6)
    # The second sees the first already recalibrated, and no dropout.
    h = to_model_input(digits)
    for layer in model.layers[:6]:
        h = layer(h, training=False)
    np.testing.assert_allclose(np.asarray(second.moving_mean), np.asarray(h).mean(0), rtol=1e-3, atol=1e-5)
