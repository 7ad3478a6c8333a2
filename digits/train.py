"""Training: seeded, deterministic Keras fit on materialised augmented copies, selection on validation.

The pipeline runs Keras on TensorFlow; the default strategy also runs on any other Keras backend (JAX on
a GPU, say), which benchmarks/seeds.py uses; `mirrored` is tf.distribute's MirroredStrategy.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from digits import DigitsError
from digits.params import ModelParams, TrainParams
from digits.shapes import SIDE, one_hot, to_model_input


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy and the backend, and make TF ops deterministic (costs little for these CNNs)."""
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def distribution_strategy(name: str) -> Any:
    """The tf.distribute strategy for `train.distribute`; None for `default` (plain single-device Keras).

    `mirrored` copies the model to every local GPU (or logical CPU) and splits each batch between them.
    (MultiWorkerMirroredStrategy is left out: Keras 3's fit fails with it, keras-team/keras#20585.)
    """
    if name == "default":
        return None
    if keras.backend.backend() != "tensorflow":
        raise DigitsError(
            f"train.distribute={name} needs the TensorFlow backend, not {keras.backend.backend()!r}"
        )
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise DigitsError(f"train.distribute={name!r}: unknown (allowed: default, mirrored)")


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which epoch `epoch` visits the n training digits."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_dataset(copies: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, epochs: int) -> Any:
    """EpochCopies' batches for `epochs` epochs, in the same order, as one tf.data pipeline.

    Keras pulls a PyDataset's batches through Python one at a time, which can halve the images/s of these
    small CNNs on 2 vCPUs (benchmarks/README.md). Fit it with steps_per_epoch = ceil(n / batch_size).
    """
    import tensorflow as tf

    n_copies, n = copies.shape[:2]
    # Row e holds epoch e's order as indices into the copies stacked end to end.
    orders = np.stack([epoch_order(seed, e, n) + (e % n_copies) * n for e in range(epochs)])
    images = tf.constant(copies.reshape(n_copies * n, SIDE, SIDE, 1))
    targets = tf.constant(one_hot(labels))

    def batch(idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # x / 255 in float32, like to_model_input: the same bits.
        return tf.cast(tf.gather(images, idx), tf.float32) / 255, tf.gather(targets, idx % n)

    ds = tf.data.Dataset.from_tensor_slices(orders)
    ds = ds.flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
    return ds.map(batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class EpochCopies(keras.utils.PyDataset):
    """Batches from copy `epoch % n_copies` of the training images, reshuffled every epoch.

    Each epoch sees a differently augmented version of every digit, like on-the-fly augmentation,
    but the augmentation itself was done once by the augment stage and cached by DVC.
    """

    def __init__(self, copies: np.ndarray, labels: np.ndarray, batch_size: int, seed: int) -> None:
        super().__init__()
        if copies.ndim != 4 or copies.shape[1] != len(labels):
            raise ValueError(f"copies must be (n_copies, n, 28, 28) matching {len(labels)} labels")
        self.copies = copies
        self.targets = one_hot(labels)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return epoch_order(self.seed, self.epoch, self.copies.shape[1])

    def __len__(self) -> int:
        return math.ceil(self.copies.shape[1] / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        images = self.copies[self.epoch % len(self.copies)][idx]
        return to_model_input(images), self.targets[idx]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._permutation()


@dataclass
class TrainResult:
    model: keras.Model
    history: dict[str, list[float]]
    best_epoch: int  # 1-based
    seconds: float
    images_seen: int

    def summary(self) -> dict[str, float | int]:
        val_acc = self.history["val_accuracy"]
        return {
            "best_val_accuracy": round(max(val_acc), 5),
            "best_epoch": self.best_epoch,
            "final_val_accuracy": round(val_acc[-1], 5),
            "epochs_run": len(val_acc),
            "train_seconds": round(self.seconds, 1),
            "images_per_second": round(self.images_seen / self.seconds, 1),
            "params": self.model.count_params(),
        }


def train_model(
    model: keras.Model,
    train_copies: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    params: TrainParams,
    callbacks: list[keras.callbacks.Callback] | tuple = (),
) -> TrainResult:
    """Fit a model compiled by `compile_for`; keep the weights of the best validation epoch."""
    if keras.backend.backend() == "tensorflow":
        data = epoch_dataset(train_copies, train_labels, params.batch_size, params.seed, params.epochs)
        steps = math.ceil(len(train_labels) / params.batch_size)
    else:
        data, steps = EpochCopies(train_copies, train_labels, params.batch_size, params.seed), None
    if params.schedule == "exponential":
        callbacks = [
            keras.callbacks.LearningRateScheduler(lambda e: params.lr * params.lr_decay**e),
            *callbacks,
        ]
    # restore_best_weights makes the saved model the validation-selected one, stopped early or not.
    best = keras.callbacks.EarlyStopping(
        monitor="val_accuracy",
        mode="max",
        patience=params.patience if params.patience else params.epochs,
        restore_best_weights=True,
        start_from_epoch=0,
    )
    start = time.perf_counter()
    history = model.fit(
        data,
        epochs=params.epochs,
        steps_per_epoch=steps,
        shuffle=False,  # both feeds shuffle per epoch themselves
        validation_data=(to_model_input(val_images), one_hot(val_labels)),
        callbacks=[best, *callbacks],
        verbose=2,
    ).history
    seconds = time.perf_counter() - start
    best_epoch = int(np.argmax(history["val_accuracy"])) + 1
    return TrainResult(model, history, best_epoch, seconds, len(history["loss"]) * len(train_labels))


def learning_rate(
    params: TrainParams, steps_per_epoch: int
) -> float | keras.optimizers.schedules.CosineDecay:
    """The optimizer's learning rate: per step for onecycle; exponential is set per epoch by a callback."""
    if params.schedule == "exponential":
        return params.lr
    total = params.epochs * steps_per_epoch
    warmup = round(params.warmup * total)
    return keras.optimizers.schedules.CosineDecay(
        params.lr / 25, decay_steps=max(total - warmup, 1), warmup_target=params.lr, warmup_steps=warmup
    )


def compile_for(model: keras.Model, params: TrainParams, n_train: int) -> None:
    """Compile `model` with the recipe's optimizer, schedule and loss, for n_train digits per epoch."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(params, math.ceil(n_train / params.batch_size))),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing),
        metrics=["accuracy"],
    )


def build_and_train(
    model_params: ModelParams,
    train_params: TrainParams,
    train_copies: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    callbacks: list[keras.callbacks.Callback] | tuple = (),
) -> TrainResult:
    from digits.models import build_model

    strategy = distribution_strategy(train_params.distribute)
    make_deterministic(train_params.seed)
    with strategy.scope() if strategy else nullcontext():
        model = build_model(model_params)
        compile_for(model, train_params, len(train_labels))
    return train_model(model, train_copies, train_labels, val_images, val_labels, train_params, callbacks)
