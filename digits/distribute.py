"""Training on several devices or hosts: tf.distribute on one host, Keras's distribution API across hosts.

`mirrored` is tf.distribute's MirroredStrategy (every local GPU, or logical CPU). `multi_host` trains one
model across several processes (one per host, the same command on each) with Keras's distribution API on
JAX: set KERAS_BACKEND=jax and the variables `cluster_from_env` reads. Keras 3 on TensorFlow cannot train
across hosts (keras-team/keras#20585), and on one CPU machine TensorFlow is the faster backend
(benchmarks/README.md), so `multi_host` is for several hosts or GPUs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from digits import DigitsError


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
