"""Training: seeded, deterministic Keras fit on materialised augmented copies, selection on validation.

The pipeline runs Keras on TensorFlow; the default strategy also runs on any other Keras backend (JAX on
a GPU, say), which benchmarks/seeds.py uses; `mirrored` is tf.distribute's MirroredStrategy.
`multi_host` trains one model across several processes (one per host, the same command on each) with
Keras's distribution API on JAX: set KERAS_BACKEND=jax and the variables `cluster_from_env` reads. Keras 3
on TensorFlow cannot train across hosts (keras-team/keras#20585), and on one CPU machine TensorFlow is the
faster backend (JAX ~3x slower on 2 vCPUs), so `multi_host` is for several hosts or GPUs.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from digits import DigitsError, log
from digits.params import ModelParams, TrainParams
from digits.shapes import NUM_CLASSES, SIDE, one_hot, to_model_input


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
    if name == "multi_host":
        return multi_host_distribution()
    if keras.backend.backend() != "tensorflow":
        raise DigitsError(
            f"train.distribute={name} needs the TensorFlow backend, not {keras.backend.backend()!r}"
        )
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise DigitsError(f"train.distribute={name!r}: unknown (allowed: default, mirrored, multi_host)")


def cluster_from_env(env: Mapping[str, str] = os.environ) -> tuple[str | None, int | None, int | None]:
    """(coordinator host:port, number of processes, this process's id) of a multi_host run.

    DIGITS_COORDINATOR, DIGITS_NUM_PROCESSES and DIGITS_PROCESS_ID first, else torchrun's MASTER_ADDR +
    MASTER_PORT, WORLD_SIZE and RANK (which many launchers and Kubernetes operators set). What neither gives
    stays None, and jax.distributed.initialize finds it itself under Slurm, Open MPI or on Cloud TPU.
    """

    def number(*names: str) -> int | None:
        for name in names:
            if env.get(name):
                try:
                    return int(env[name])
                except ValueError:
                    raise DigitsError(f"{name}={env[name]!r} is not a whole number") from None
        return None

    coordinator = env.get("DIGITS_COORDINATOR") or None
    if not coordinator and env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        coordinator = f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}"
    return coordinator, number("DIGITS_NUM_PROCESSES", "WORLD_SIZE"), number("DIGITS_PROCESS_ID", "RANK")


def multi_host_distribution() -> keras.distribution.DataParallel:
    """Join the other processes of a multi_host run; make Keras train data-parallel on all their devices.

    Every variable is replicated on every device and each step's gradients are summed across all of them
    (NCCL between GPUs, gloo over TCP between CPUs), so every process holds the same weights. Call it
    before the model is built; it joins the other processes once.
    """
    if keras.backend.backend() != "jax":
        raise DigitsError(
            "train.distribute=multi_host needs Keras's JAX backend: set KERAS_BACKEND=jax on every host "
            f"(the backend now is {keras.backend.backend()!r}) and install JAX (pip install '.[multihost]')"
        )
    import jax

    if not jax.distributed.is_initialized():
        # CPU processes need a collectives library to exchange gradients at all; GPUs use NCCL regardless.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        coordinator, processes, process = cluster_from_env()
        try:
            jax.distributed.initialize(coordinator, processes, process)
        except (ValueError, RuntimeError) as e:
            raise DigitsError(
                f"train.distribute=multi_host could not join the other processes ({e}); set "
                "DIGITS_COORDINATOR (host:port of process 0), DIGITS_NUM_PROCESSES and DIGITS_PROCESS_ID"
            ) from e
    # Each process feeds its own share of every batch (ProcessShare): Keras must not shard it again.
    distribution = keras.distribution.DataParallel(auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    return distribution


def process_index(distribute: str) -> int:
    """This process's rank: 0 unless it is another process of a multi_host run (which it joins first)."""
    if distribute != "multi_host":
        return 0
    multi_host_distribution()
    import jax

    return jax.process_index()


def weights_digest(model: keras.Model) -> str:
    """sha256 of the model's weights, bit for bit: every process of a multi_host run ends with the same."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


NOT_A_DIGIT = NUM_CLASSES  # the label of a generated non-digit: an 11th class, "none of the digits"


def classes_of(labels: np.ndarray) -> int:
    """10, or 11 when the labels include generated non-digits: the model then learns "not a digit" too."""
    return NUM_CLASSES + bool(np.any(np.asarray(labels) == NOT_A_DIGIT))


def recalibrate_batch_norm(model: keras.Model, images: np.ndarray, chunk: int = 1000) -> None:
    """Set every batch norm's moving mean and variance to its input's statistics on these uint8 pictures.

    The moving averages lag behind training: they follow the batches while the weights change fast under
    one-cycle. A model with a "not a digit" class is very sensitive to that: after its second epoch it read
    0.8% of the validation digits right with them, 98.7% with statistics measured afresh (README: Knowing
    when it doesn't know). Layer by layer, in order, so each sees the recalibrated layers before it; dropout
    is off, as when serving.
    """
    layers_ = model.layers
    for k, layer in enumerate(layers_):
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        total, total_sq, count = 0.0, 0.0, 0
        for start in range(0, len(images), chunk):
            h = keras.ops.convert_to_tensor(to_model_input(images[start : start + chunk]))
            for before in layers_[:k]:
                h = before(h, training=False)
            h = keras.ops.convert_to_numpy(h).astype(np.float64)
            flat = h.reshape(-1, h.shape[-1])
            total, total_sq, count = total + flat.sum(0), total_sq + (flat**2).sum(0), count + len(flat)
        mean = total / count
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(total_sq / count - mean**2, 0).astype(np.float32))


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


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which epoch `epoch` visits the n training digits."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_dataset(
    copies: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    epochs: int,
    classes: int = NUM_CLASSES,
) -> Any:
    """EpochCopies' batches for `epochs` epochs, in the same order, as one tf.data pipeline.

    Keras pulls a PyDataset's batches through Python one at a time, which can halve the images/s of these
    small CNNs on 2 vCPUs (benchmarks/README.md). Fit it with steps_per_epoch = ceil(n / batch_size).
    """
    import tensorflow as tf

    n_copies, n = copies.shape[:2]
    # Row e holds epoch e's order as indices into the copies stacked end to end.
    orders = np.stack([epoch_order(seed, e, n) + (e % n_copies) * n for e in range(epochs)])
    images = tf.constant(copies.reshape(n_copies * n, SIDE, SIDE, 1))
    targets = tf.constant(one_hot(labels, classes))

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

    def __init__(
        self, copies: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, classes: int = NUM_CLASSES
    ) -> None:
        super().__init__()
        if copies.ndim != 4 or copies.shape[1] != len(labels):
            raise ValueError(f"copies must be (n_copies, n, 28, 28) matching {len(labels)} labels")
        self.copies = copies
        self.targets = one_hot(labels, classes)
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


class ProcessShare(EpochCopies):
    """This process's share of EpochCopies' batches in a multi_host run.

    Every process walks the same epoch order (same seed) and takes slice `process` of `processes` equal
    slices of each batch: the shares are disjoint, together they are the batch one process would train on
    (train.batch_size stays the global batch, so the recipe keeps its meaning), and every process runs the
    same number of steps, which it must, since each step waits for all. The epoch's last, short batch is
    topped up with digits from the start of the epoch so that it, too, splits evenly over every device.
    Without arguments it reads this process's place from JAX (after multi_host_distribution).
    """

    def __init__(
        self,
        copies: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        seed: int,
        process: int | None = None,
        processes: int | None = None,
        devices: int | None = None,
        classes: int = NUM_CLASSES,
    ) -> None:
        if process is None or processes is None or devices is None:
            import jax

            process, processes, devices = jax.process_index(), jax.process_count(), jax.device_count()
        if batch_size % devices:
            raise DigitsError(
                f"train.batch_size={batch_size} does not split evenly over the {devices} devices of this "
                "multi_host run: make it a multiple of the number of devices"
            )
        super().__init__(copies, labels, batch_size, seed, classes)
        self.process, self.processes, self.devices = process, processes, devices

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        idx = np.concatenate([idx, self._order[: -len(idx) % self.devices]])
        share = len(idx) // self.processes
        idx = idx[self.process * share : (self.process + 1) * share]
        images = self.copies[self.epoch % len(self.copies)][idx]
        return to_model_input(images), self.targets[idx]


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
    bn_images: np.ndarray | None = None,
) -> TrainResult:
    """Fit a model compiled by `compile_for`; keep the weights of the best validation epoch.

    With `bn_images`, every epoch ends by recalibrating the batch norms on them, and the validation
    figures that choose the epoch are the recalibrated model's (RecalibratedValidation).
    """
    classes = model.output_shape[-1]
    if keras.backend.backend() == "tensorflow":
        p = params
        data = epoch_dataset(train_copies, train_labels, p.batch_size, p.seed, p.epochs, classes)
        steps = math.ceil(len(train_labels) / params.batch_size)
    elif params.distribute == "multi_host":
        data = ProcessShare(train_copies, train_labels, params.batch_size, params.seed, classes=classes)
        steps = None
    else:
        data = EpochCopies(train_copies, train_labels, params.batch_size, params.seed, classes)
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
    recalibrated = [] if bn_images is None else [RecalibratedValidation(bn_images, val_images, val_labels)]
    start = time.perf_counter()
    history = model.fit(
        data,
        epochs=params.epochs,
        steps_per_epoch=steps,
        shuffle=False,  # both feeds shuffle per epoch themselves
        # With recalibration the callback validates; Keras's own pass, on stale statistics, would be wasted.
        validation_data=None if recalibrated else (to_model_input(val_images), one_hot(val_labels, classes)),
        callbacks=[*recalibrated, best, *callbacks],
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
    bn_images: np.ndarray | None = None,
) -> TrainResult:
    """Build and fit; with `bn_images` (uint8) the batch norms are recalibrated on them every epoch.

    With NOT_A_DIGIT labels among train_labels the model learns an 11th class; the result's model is the
    10-output one everything downstream takes (digits.models.digit_outputs).
    """
    from digits.models import build_model, digit_outputs

    strategy = distribution_strategy(train_params.distribute)
    make_deterministic(train_params.seed)
    with strategy.scope() if strategy else nullcontext():
        model = build_model(model_params, not_a_digit=classes_of(train_labels) > NUM_CLASSES)
        compile_for(model, train_params, len(train_labels))
    result = train_model(
        model, train_copies, train_labels, val_images, val_labels, train_params, callbacks, bn_images
    )
    if train_params.distribute == "multi_host":
        # Under the distribution every new variable is a step all processes must take together, and saving
        # creates some (a fresh optimizer): process 0 would wait for the others forever. Training is done.
        keras.distribution.set_distribution(None)
    result.model = digit_outputs(result.model)
    return result
