"""Training: seeded, deterministic Keras fit on materialised augmented copies, selection on validation.

`load_training_data` gathers what a run fits on (the augment stage's copies, the generated non-digits, the
validation split, the pictures batch norm is recalibrated on); `build_and_train` builds the model and fits
it, on one device or as digits.distribute says, fed by digits.feeds.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np

from digits import DigitsError, log
from digits.distribute import distribution_strategy
from digits.feeds import EpochCopies, ProcessShare, epoch_dataset
from digits.params import ModelParams, TrainParams
from digits.shapes import NUM_CLASSES, one_hot, to_model_input
from digits.splits import load_split


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy and the backend, and make TF ops deterministic (costs little for these CNNs)."""
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


NOT_A_DIGIT = NUM_CLASSES  # the label of a generated non-digit: an 11th class, "none of the digits"


def classes_of(labels: np.ndarray) -> int:
    """10, or 11 when the labels include generated non-digits: the model then learns "not a digit" too."""
    return NUM_CLASSES + bool(np.any(np.asarray(labels) == NOT_A_DIGIT))


def recalibrate_batch_norm(model: keras.Model, images: np.ndarray, chunk: int = 1000) -> None:
    """Set every batch norm's moving mean and variance to its input's statistics on these uint8 pictures.

    The moving averages lag behind training: they follow the batches while the weights change fast under
    one-cycle. A model with a "not a digit" class is very sensitive to that: with the moving statistics it
    can read almost no validation digit right after an early epoch (docs/trust.md has the figures). Layer by
    layer, in order, so each sees the recalibrated layers before it; dropout is off, as when serving. Each
    layer runs once over the pictures, `chunk` at a time: their activations are carried from layer to layer
    (as many floats as the widest layer's output), not recomputed from the input for every batch norm.
    """
    norms = [k for k, layer in enumerate(model.layers) if isinstance(layer, keras.layers.BatchNormalization)]
    chunks = [
        keras.ops.convert_to_tensor(to_model_input(images[start : start + chunk]))
        for start in range(0, len(images), chunk)
    ]
    for k, layer in enumerate(model.layers[: max(norms, default=-1) + 1]):
        if k in norms:
            mean, variance = _pooled_moments(chunks)
            layer.moving_mean.assign(mean.astype(np.float32))
            layer.moving_variance.assign(variance.astype(np.float32))
        if k < norms[-1]:  # what the next batch norm sees, through this layer as recalibrated
            chunks = [layer(h, training=False) for h in chunks]


def _pooled_moments(chunks: list) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance over every chunk: each chunk's own moments in float32 (one pass over
    its floats), pooled in float64 as within- plus between-chunk variance. Casting every activation to
    float64 and summing squares instead cost ~0.7 s more an epoch at 10,000 digits, for the same
    predictions."""
    counts, means, variances = [], [], []
    for h in chunks:
        axes = tuple(range(len(h.shape) - 1))
        m, v = keras.ops.moments(h, axes=axes)
        counts.append(math.prod(h.shape[:-1]))
        means.append(keras.ops.convert_to_numpy(m).astype(np.float64))
        variances.append(keras.ops.convert_to_numpy(v).astype(np.float64))
    w = np.asarray(counts, np.float64)[:, None] / sum(counts)
    means_, variances_ = np.stack(means), np.stack(variances)
    mean = (w * means_).sum(0)
    return mean, (w * (variances_ + (means_ - mean) ** 2)).sum(0)


class RecalibratedValidation(keras.callbacks.Callback):
    """At each epoch's end: batch norm statistics measured afresh, then the validation figures with them.

    Listed first, it sets val_accuracy and val_loss (fit then runs no validation of its own) before early
    stopping, the best-epoch choice and DVCLive read them, so the epoch kept is the best one as it will be
    served. Keras's progress line shows them too.
    """

    def __init__(self, bn_images: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray) -> None:
        super().__init__()
        self.bn_images = bn_images
        self.val_x, self.val_y = to_model_input(val_images), np.asarray(val_labels)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        recalibrate_batch_norm(self.model, self.bn_images)
        probs = self.model.predict(self.val_x, batch_size=1000, verbose=0)
        accuracy = float(np.mean(probs.argmax(axis=1) == self.val_y))  # "not a digit" counts as wrong
        targets = one_hot(self.val_y, probs.shape[1])
        loss = float(keras.ops.convert_to_numpy(self.model.loss(targets, probs)))
        if logs is not None:
            logs.update(val_accuracy=accuracy, val_loss=loss)
        log(f"epoch {epoch + 1}, batch norm recalibrated: val_accuracy {accuracy:.4f}, val_loss {loss:.4f}")


def batch_norm_images(clean_digits: np.ndarray, copies: np.ndarray, n_digits: int) -> np.ndarray:
    """What RecalibratedValidation measures batch norm on: unaugmented digits and, in the share training
    sees them, the first copy's non-digits (copies from with_negatives, n_digits digits then non-digits)."""
    non_digits = copies[0, n_digits:]
    return np.concatenate([clean_digits, non_digits[: round(len(clean_digits) * len(non_digits) / n_digits)]])


def with_negatives(
    copies: np.ndarray, labels: np.ndarray, negatives: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each copy of the training digits followed by its own equal share of the non-digits (NOT_A_DIGIT).

    Every epoch trains on one copy, so it also sees non-digits it has not seen before: more variety than
    the same ones every epoch, for the same time. Copy j gets non-digits j, j + copies, j + 2 copies...,
    so each share mixes every family even when they come family by family. A remainder is left out.
    """
    if not len(negatives):
        return copies, labels
    per_copy = len(negatives) // len(copies)
    if not per_copy:
        raise DigitsError(
            f"{len(negatives)} non-digits cannot be shared among {len(copies)} training copies: "
            "set negatives.train to 0 or to at least augment.copies"
        )
    shares = negatives[: per_copy * len(copies)].reshape(per_copy, len(copies), *negatives.shape[1:])
    shares = shares.swapaxes(0, 1)
    return (
        np.concatenate([copies, shares], axis=1),
        np.concatenate([np.asarray(labels, np.int64), np.full(per_copy, NOT_A_DIGIT)]),
    )


@dataclass(frozen=True)
class TrainingData:
    """What one training run fits on and selects with."""

    copies: np.ndarray  # uint8 (copies, n, 28, 28): one per epoch, the digits then that copy's non-digits
    labels: np.ndarray  # (n,): 0..9, NOT_A_DIGIT for the non-digits
    val_images: np.ndarray  # uint8 (m, 28, 28): the validation digits that choose the epoch
    val_labels: np.ndarray
    bn_images: np.ndarray | None = None  # with non-digits: what batch norm is recalibrated on each epoch

    @property
    def digits(self) -> int:
        return int(np.sum(self.labels != NOT_A_DIGIT))

    def with_feedback(self, corrections: np.ndarray, said: np.ndarray, weight: int) -> TrainingData:
        """Each copy followed by users' corrections, each `weight` times, the same pictures every epoch.

        "Not a digit" corrections (NOT_A_DIGIT) only where the copies hold non-digits already: a 10-class
        model has no class for them, so they are left out (and said so).
        """
        said = np.asarray(said, np.int64)
        keep = np.ones(len(said), bool) if self.digits < len(self.labels) else said != NOT_A_DIGIT
        if not keep.all():
            log(
                f"train: {int((~keep).sum())} 'not a digit' corrections left out: the model has no such class"
            )
        corrections, said = corrections[keep], said[keep]
        if not len(said) or not weight:
            return self
        extra = np.broadcast_to(
            np.tile(corrections, (weight, 1, 1)),
            (len(self.copies), weight * len(said), *corrections.shape[1:]),
        )
        return replace(
            self,
            copies=np.concatenate([self.copies, extra], axis=1),
            labels=np.concatenate([self.labels, np.tile(said, weight)]),
        )

    def describe(self) -> str:
        non_digits = len(self.labels) - self.digits
        return (
            f"{self.digits} digits + {non_digits} non-digits x {len(self.copies)} copies, "
            f"{len(self.val_labels)} digits for validation"
        )


def load_training_data(
    train: str | Path, augmented: str | Path, negatives: str | Path, val: str | Path, bn_digits: int
) -> TrainingData:
    """The training digits' augmented copies (the prepared digits as the one copy if augment made none),
    each followed by its share of the non-digits, and the validation digits.

    With non-digits, batch norm's moving statistics lag far behind the weights: they are measured afresh on
    the first `bn_digits` unaugmented digits and, in the share training sees, non-digits
    (RecalibratedValidation). Without, that would change nothing but the time, so it is left out.
    """
    train_x, train_y = load_split(train)
    copies, labels = load_split(augmented)
    if not np.array_equal(labels, train_y):
        raise DigitsError(f"{augmented} does not match {train}; rerun augment")
    copies = copies if len(copies) else train_x[None]
    non_digits, _ = load_split(negatives)
    mixed, mixed_labels = with_negatives(copies, labels, non_digits)
    bn = bn_digits if len(non_digits) else 0
    bn_images = batch_norm_images(train_x[:bn], mixed, len(labels)) if bn else None
    return TrainingData(mixed, mixed_labels, *load_split(val), bn_images)


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
    data: TrainingData,
    params: TrainParams,
    callbacks: list[keras.callbacks.Callback] | tuple = (),
) -> TrainResult:
    """Fit a model compiled by `compile_for`; keep the weights of the best validation epoch.

    With `data.bn_images`, every epoch ends by recalibrating the batch norms on them, and the validation
    figures that choose the epoch are the recalibrated model's (RecalibratedValidation).
    """
    classes = model.output_shape[-1]
    copies, labels, p = data.copies, data.labels, params
    if keras.backend.backend() == "tensorflow":
        feed = epoch_dataset(copies, labels, p.batch_size, p.seed, p.epochs, classes)
        steps = math.ceil(len(labels) / params.batch_size)
    elif params.distribute == "multi_host":
        feed = ProcessShare(copies, labels, params.batch_size, params.seed, classes=classes)
        steps = None
    else:
        feed = EpochCopies(copies, labels, params.batch_size, params.seed, classes)
        steps = None
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
    recalibrated = (
        []
        if data.bn_images is None
        else [RecalibratedValidation(data.bn_images, data.val_images, data.val_labels)]
    )
    start = time.perf_counter()
    history = model.fit(
        feed,
        epochs=params.epochs,
        steps_per_epoch=steps,
        shuffle=False,  # both feeds shuffle per epoch themselves
        # With recalibration the callback validates; Keras's own pass, on stale statistics, would be wasted.
        validation_data=None
        if recalibrated
        else (to_model_input(data.val_images), one_hot(data.val_labels, classes)),
        callbacks=[*recalibrated, best, *callbacks],
        verbose=2,
    ).history
    seconds = time.perf_counter() - start
    best_epoch = int(np.argmax(history["val_accuracy"])) + 1
    return TrainResult(model, history, best_epoch, seconds, len(history["loss"]) * len(labels))


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
    data: TrainingData,
    callbacks: list[keras.callbacks.Callback] | tuple = (),
) -> TrainResult:
    """Build and fit; with `data.bn_images` the batch norms are recalibrated on them every epoch.

    With NOT_A_DIGIT labels among data.labels the model learns an 11th class; the result's model is the
    10-output one everything downstream takes (digits.models.digit_outputs).
    """
    from digits.models import build_model, digit_outputs

    strategy = distribution_strategy(train_params.distribute)
    make_deterministic(train_params.seed)
    with strategy.scope() if strategy else nullcontext():
        model = build_model(model_params, not_a_digit=classes_of(data.labels) > NUM_CLASSES)
        compile_for(model, train_params, len(data.labels))
    result = train_model(model, data, train_params, callbacks)
    if train_params.distribute == "multi_host":
        # Under the distribution every new variable is a step all processes must take together, and saving
        # creates some (a fresh optimizer): process 0 would wait for the others forever. Training is done.
        keras.distribution.set_distribution(None)
    result.model = digit_outputs(result.model)
    return result
