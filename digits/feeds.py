"""The training feeds: every epoch one augmented copy of the training digits, in a seeded order of its own.

The augmentation itself was done once by the augment stage and cached by DVC; the feeds only choose the
copy and the order. `epoch_dataset` is the tf.data pipeline the TensorFlow backend trains on, `EpochCopies`
the same batches as a Keras PyDataset for any backend, `ProcessShare` one process's share of them in a
multi_host run.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import keras
import numpy as np

from digits import DigitsError
from digits.shapes import NUM_CLASSES, SIDE, one_hot, to_model_input


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
    ds = ds.map(batch, num_parallel_calls=2).prefetch(2)
    # No autotuning: with it, deleting the iterator when fit ended sometimes waited 41-58 s on one of
    # tf.data's threads, and each epoch took ~20% longer on 2 vCPUs (benchmarks/README.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


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


class Place(NamedTuple):
    """This process's place in a multi-host run: its index, the number of processes, all their devices."""

    process: int
    processes: int
    devices: int

    @classmethod
    def from_jax(cls) -> Place:
        """Read from JAX (after multi_host_distribution)."""
        import jax

        return cls(jax.process_index(), jax.process_count(), jax.device_count())


class ProcessShare(EpochCopies):
    """This process's share of EpochCopies' batches in a multi_host run.

    Every process walks the same epoch order (same seed) and takes slice `process` of `processes` equal
    slices of each batch: the shares are disjoint, together they are the batch one process would train on
    (train.batch_size stays the global batch, so the recipe keeps its meaning), and every process runs the
    same number of steps, which it must, since each step waits for all. The epoch's last, short batch is
    topped up with digits from the start of the epoch so that it, too, splits evenly over every device.
    Without a `place` it reads this process's from JAX.
    """

    def __init__(
        self,
        copies: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        seed: int,
        place: Place | None = None,
        classes: int = NUM_CLASSES,
    ) -> None:
        process, processes, devices = place or Place.from_jax()
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
