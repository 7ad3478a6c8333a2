"""Fault: `dvc repro` killed (SIGKILL, whole process group) in the middle of training, then rerun.

The rerun must finish, leave valid outputs (the model loads, the metrics parse) and `dvc status` clean:
no stale lock, no half-written model taken for a finished one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pipeline_repo import git_commit, make_tiny_repo, run, up_to_date

pytestmark = pytest.mark.slow

EPOCHS = 12  # tiny epochs (540 digits) take a fraction of a second each: room to be killed mid-way
CURVE = "plots/training/plots/metrics/train/loss.tsv"  # DVCLive appends a row after every epoch
KEPT = [
    "fetch",
    "verify",
    "preprocess",
    "augment",
    "negatives",
    "feedback",
    "train",
    "evaluate",
]  # what the test needs; saves ~15 s


@pytest.fixture(scope="module")
def interrupt_repo(tmp_path_factory: pytest.TempPathFactory, tiny_mnist_dir: Path) -> Path:
    """This module's own tiny repo, with more epochs and only the stages up to evaluate."""
    repo = make_tiny_repo(tmp_path_factory.mktemp("interrupt"), tiny_mnist_dir)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(epochs=EPOCHS, patience=0)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())
    dvc["stages"] = {name: dvc["stages"][name] for name in KEPT}  # the top-level plots are train's curves
    (repo / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    git_commit(repo, f"{EPOCHS} epochs, stages up to evaluate")
    return repo


def _epochs_done(repo: Path) -> int:
    curve = repo / CURVE
    return max(0, len(curve.read_text().splitlines()) - 1) if curve.exists() else 0


def test_repro_killed_mid_training_recovers_on_rerun(interrupt_repo: Path) -> None:
    repo = interrupt_repo
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = (repo.parent / "killed-repro.log").open("w+")
    proc = subprocess.Popen(
        ["dvc", "repro"], cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while _epochs_done(repo) < 1:  # wait until train has finished at least one epoch
            assert proc.poll() is None, f"dvc repro ended before training started:\n{_read(log)}"
            assert time.monotonic() < deadline, f"training never started:\n{_read(log)}"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage it runs (python stages/train.py)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    out = _read(log)
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" not in out, out
    epochs = _epochs_done(repo)
    assert 1 <= epochs < EPOCHS, f"killed after {epochs} epochs: not mid-training"
    assert not (repo / "models/model.keras").exists()  # nothing half-written passed off as the model
    assert not (repo / "metrics/train.json").exists()

    out = run(repo, "dvc", "repro")
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    for stage in ("fetch", "preprocess", "augment"):  # finished and cached before the kill
        assert f"Running stage '{stage}'" not in out

    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["epochs_run"] == EPOCHS and _epochs_done(repo) == EPOCHS  # a fresh curve, not appended
    evaluate = json.loads((repo / "metrics/evaluate.json").read_text())
    assert 0.5 < evaluate["accuracy"] <= 1.0 and evaluate["errors"] == round((1 - evaluate["accuracy"]) * 200)
    check = (
        "from digits.models import load_model; m = load_model('models/model.keras'); "
        "assert m.output_shape == (None, 10), m.output_shape"
    )
    run(repo, sys.executable, "-c", check, env={"PYTHONPATH": str(repo)})
    assert up_to_date(run(repo, "dvc", "status"))


def _read(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()
