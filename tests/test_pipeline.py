"""End to end: the real `dvc repro` and `dvc exp run` on a copy of the repo fed 600 real MNIST digits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["fetch", "preprocess", "augment", "train", "evaluate"]
COPIED = [
    "digits",
    "stages",
    "dvc.yaml",
    "params.yaml",
    "pyproject.toml",
    ".dvc/config",
    ".dvcignore",
    ".gitignore",
]

pytestmark = pytest.mark.slow


def tiny_params(tiny_mnist_dir: Path) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["fetch"].update(sources=["local"], local_dir=str(tiny_mnist_dir))
    params["augment"].update(copies=2, preview=6)
    # No batch norm: its moving averages need far more than 50 steps to settle.
    params["model"].update(preset="seed", filters=[8, 16], dense=32)
    params["train"].update(epochs=3, batch_size=32, lr=0.003, patience=0)
    params["evaluate"].update(gallery=12)
    return params


def run(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, tiny_mnist_dir: Path) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(tiny_mnist_dir), sort_keys=False))
    run(repo, "git", "init", "-q", "-b", "main")
    run(
        repo,
        "git",
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "empty",
    )
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "tiny pipeline")
    run(repo, "dvc", "repro")
    return repo


def test_repro_writes_every_output(repo: Path) -> None:
    manifest = json.loads((repo / "data/raw/manifest.json").read_text())
    assert manifest["source"] == "local"
    for split, n in [("train", 540), ("val", 60), ("test", 200)]:
        data = np.load(repo / f"data/prepared/{split}.npz")
        assert data["x"].shape == (n, 28, 28) and data["x"].dtype == np.uint8
    assert np.load(repo / "data/augmented/train.npz")["x"].shape == (2, 540, 28, 28)
    assert (repo / "models/model.keras").stat().st_size > 10_000
    for png in ["augment_preview", "confusion", "misclassified"]:
        assert (repo / f"plots/{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_are_sane(repo: Path) -> None:
    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["epochs_run"] == 3 and 1 <= train["best_epoch"] <= 3
    assert train["images_per_second"] > 0
    evaluate = json.loads((repo / "metrics/evaluate.json").read_text())
    assert evaluate["n"] == 200
    # 540 real digits and 3 epochs of a tiny CNN: far above chance (10%), far from MNIST-grade.
    assert 0.5 < evaluate["accuracy"] <= 1.0
    assert evaluate["errors"] == round((1 - evaluate["accuracy"]) * 200)
    per_class = json.loads((repo / "metrics/per_class.json").read_text())
    assert sorted(per_class, key=int) == [str(d) for d in range(10)]
    assert sum(c["support"] for c in per_class.values()) == 200
    confusion = (repo / "plots/confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) == 201
    curve = (repo / "plots/training/plots/metrics/eval/accuracy.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "accuracy"] and len(curve) == 4


def test_dag_has_five_stages(repo: Path) -> None:
    dag = run(repo, "dvc", "dag", "--md")
    for stage in STAGES:
        assert stage in dag


def test_second_repro_is_a_no_op(repo: Path) -> None:
    out = run(repo, "dvc", "repro")
    assert "Running stage" not in out
    assert "up to date" in run(repo, "dvc", "status")


def test_exp_run_reruns_only_train_and_evaluate(repo: Path) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "baseline")
    out = run(repo, "dvc", "exp", "run", "-S", "train.epochs=2", "-n", "two-epochs")
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    for stage in ["fetch", "preprocess", "augment"]:
        assert f"Running stage '{stage}'" not in out
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json"))
    names = {exp["name"]: exp for rev in shown for exp in (rev.get("experiments") or []) if exp.get("name")}
    assert "two-epochs" in names, shown
    epochs = json.loads((repo / "metrics/train.json").read_text())["epochs_run"]
    assert epochs == 2
