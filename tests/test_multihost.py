"""Training across hosts (`train.distribute: multi_host`): Keras's distribution API on JAX.

The end-to-end test runs the real train stage twice on loopback, in two directories standing for two hosts,
each process feeding its own disjoint share of every batch. The test process itself stays on TensorFlow.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT

from digits import DigitsError
from digits.distribute import cluster_from_env, distribution_strategy, weights_digest
from digits.feeds import EpochCopies, Place, ProcessShare
from digits.idx import read_idx
from digits.splits import save_split

N_TRAIN = 499  # odd, so the epoch's last batch (51 of batch size 64) needs topping up to split in two


def test_process_shares_are_disjoint_and_make_up_the_batch() -> None:
    n, batch = 23, 8
    copies = np.zeros((2, n, 28, 28), np.uint8)
    copies[:, :, 0, 0] = np.arange(n)  # pixel (0, 0) names the digit
    labels = np.arange(n) % 10
    whole = EpochCopies(copies, labels, batch, seed=3)
    shares = [ProcessShare(copies, labels, batch, 3, Place(p, processes=2, devices=2)) for p in (0, 1)]
    for _ in range(2):  # two epochs: the order reshuffles
        assert len(shares[0]) == len(shares[1]) == len(whole) == 3  # same step count on every process
        for b in range(len(whole)):
            ids = [np.rint(s[b][0][:, 0, 0, 0] * 255).astype(int) for s in shares]
            expected = np.rint(whole[b][0][:, 0, 0, 0] * 255).astype(int)
            assert len(ids[0]) == len(ids[1])
            if len(expected) % 2 == 0:
                assert not set(ids[0]) & set(ids[1])
                np.testing.assert_array_equal(np.concatenate(ids), expected)
            else:  # the last batch of 7 is topped up with the epoch's first digit
                np.testing.assert_array_equal(np.concatenate(ids), [*expected, whole._order[0]])
        for data in (whole, *shares):
            data.on_epoch_end()


def test_batch_size_must_split_over_the_devices() -> None:
    with pytest.raises(DigitsError, match="multiple of the number of devices"):
        ProcessShare(
            np.zeros((1, 10, 28, 28), np.uint8), np.zeros(10), 5, 0, Place(0, processes=2, devices=4)
        )


def test_cluster_from_env() -> None:
    assert cluster_from_env({}) == (None, None, None)  # left to JAX's own detection (Slurm, Open MPI, ...)
    ours = {"DIGITS_COORDINATOR": "10.0.0.1:1234", "DIGITS_NUM_PROCESSES": "4", "DIGITS_PROCESS_ID": "3"}
    torchrun = {"MASTER_ADDR": "head", "MASTER_PORT": "29500", "WORLD_SIZE": "8", "RANK": "5"}
    assert cluster_from_env(ours) == ("10.0.0.1:1234", 4, 3)
    assert cluster_from_env(torchrun) == ("head:29500", 8, 5)
    assert cluster_from_env({**torchrun, **ours}) == ("10.0.0.1:1234", 4, 3)
    with pytest.raises(DigitsError, match="RANK='one' is not a whole number"):
        cluster_from_env({"RANK": "one"})


def test_multi_host_on_tensorflow_says_what_to_set() -> None:
    with pytest.raises(DigitsError, match="KERAS_BACKEND=jax"):
        distribution_strategy("multi_host")


def _host(root: Path, tiny_mnist_dir: Path) -> Path:
    """A working copy as `dvc pull` leaves it on a host: params.yaml and the prepared and augmented data."""
    x, y = (
        read_idx(tiny_mnist_dir / "train-images-idx3-ubyte.gz"),
        read_idx(tiny_mnist_dir / "train-labels-idx1-ubyte.gz"),
    )
    save_split(root / "data/prepared/train.npz", x[:N_TRAIN], y[:N_TRAIN])
    save_split(root / "data/prepared/val.npz", x[N_TRAIN:], y[N_TRAIN:])
    shifted = np.roll(x[:N_TRAIN], 1, axis=2)
    save_split(root / "data/augmented/train.npz", np.stack([x[:N_TRAIN], shifted]), y[:N_TRAIN])
    save_split(root / "data/negatives/train.npz", np.zeros((0, 28, 28), np.uint8), np.zeros(0))  # none
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"].update(preset="seed", filters=[8, 16], dense=32)
    params["train"].update(epochs=4, batch_size=64, lr=0.01, distribute="multi_host")
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _run_processes(hosts: list[Path], logs: list[Path], seconds: float) -> list[int]:
    """The train stage in every host directory at once, as processes 0..n-1 of one multi_host run on loopback.

    Returns their exit codes; when one fails or time runs out, the rest are killed (-9): they would wait.
    """
    with socket.socket() as s:  # a free port for the coordinator (process 0 binds it again at once)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = {"DIGITS_COORDINATOR": f"127.0.0.1:{port}", "DIGITS_NUM_PROCESSES": str(len(hosts))}
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", **cluster}
    procs = []
    for rank, (host, log) in enumerate(zip(hosts, logs, strict=True)):
        with log.open("w") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(ROOT / "stages/train.py")],
                    cwd=host,
                    env={**env, "DIGITS_PROCESS_ID": str(rank)},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    deadline = time.monotonic() + seconds
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.returncode for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return [p.returncode for p in procs]


@pytest.mark.slow
def test_two_processes_train_one_model(tmp_path: Path, tiny_mnist_dir: Path) -> None:
    hosts = [_host(tmp_path / f"host{rank}", tiny_mnist_dir) for rank in (0, 1)]
    logs = [tmp_path / f"process{rank}.log" for rank in (0, 1)]
    codes = _run_processes(hosts, logs, seconds=110)  # the whole test stays within 120 s
    text = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n".join(
        f"process {r} (exit {c}):\n{t[-3000:]}" for r, (c, t) in enumerate(zip(codes, text, strict=True))
    )
    digests = [re.findall(rf"train: process {rank}, weights sha256 (\w+)", t) for rank, t in enumerate(text)]
    assert digests[0] and digests[0] == digests[1], digests  # both ended with the same weights, bit for bit

    # Process 0 wrote the outputs; the other host wrote nothing.
    assert {p.name for p in hosts[0].iterdir()} == {"data", "params.yaml", "models", "metrics", "plots"}
    assert {p.name for p in hosts[1].iterdir()} == {"data", "params.yaml"}
    live = json.loads((hosts[0] / "plots/training/metrics.json").read_text())
    assert live["step"] == 3  # DVCLive logged the 4 epochs

    # The saved model is a plain .keras file: it loads and evaluates in this TensorFlow process.
    from digits.evaluate import summary_metrics
    from digits.models import load_model, predict_probs

    model = load_model(hosts[0] / "models/model.keras")
    assert weights_digest(model) == digests[0][0]
    test_x = read_idx(tiny_mnist_dir / "t10k-images-idx3-ubyte.gz")
    test_y = read_idx(tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert summary_metrics(test_y, predict_probs(model, test_x))["accuracy"] > 0.5  # it learned (chance: 0.1)
