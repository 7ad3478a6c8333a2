"""A copy of this project in a temp git repo, on tiny params, for the end-to-end tests (see conftest.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import ROOT

STAGES = [
    "fetch",
    "verify",
    "fashion",
    "preprocess",
    "augment",
    "negatives",
    "feedback",
    "train",
    "evaluate",
    "calibrate",
    "ensemble",
    "robustness",
    "openset",
    "export",
    "submission",
]
ALWAYS_CHANGED = {"verify"}  # runs on every repro: no repro or status of the whole pipeline is a no-op


def ran(out: str) -> set[str]:
    """The stages that a `dvc repro` or `dvc exp run` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", out))


def up_to_date(status: str) -> bool:
    """`dvc status` reports no change but the always-changed stages'."""
    rest = re.sub(r"^(\S+):\n\talways changed$", "", status.strip(), flags=re.M).strip()
    return rest in ("", "Data and pipelines are up to date.")


COPIED = [
    "digits",
    "stages",
    "dvc.yaml",
    "params.yaml",
    "pyproject.toml",
    ".dvc/config",
    ".dvcignore",
    ".gitignore",
    "models/members/.gitkeep",
    "data/feedback/labels.jsonl",
]
GIT_USER = ["-c", "user.name=t", "-c", "user.email=t@t"]
# The first 100 of Fashion-MNIST's test pictures (made by fixtures/make_fashion_tiny.py): the tiny repo reads
# them instead of Debian's package, which a fresh machine lacks.
TINY_FASHION_DIR = Path(__file__).parent / "fixtures" / "fashion-tiny"


def tiny_params(tiny_mnist_dir: Path) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["fetch"].update(sources=["local"], local_dir=str(tiny_mnist_dir))
    params["fashion"].update(sources=["local"], local_dir=str(TINY_FASHION_DIR))
    params["augment"].update(copies=2, preview=6)
    # No batch norm: its moving averages need far more than 50 steps to settle.
    params["model"].update(preset="seed", filters=[8, 16], dense=32)
    params["train"].update(epochs=3, batch_size=32, lr=0.003, patience=0)
    params["evaluate"].update(gallery=12)
    params["negatives"].update(train=100, val=40, test=10)
    params["openset"].update(samples=100)
    # A few dozen validation digits and a barely trained model: one changed prediction is already points.
    # Its answers sit near the thresholds too, so accept/reject decisions flip as easily.
    params["export"].update(
        representative=100,
        representative_non_digits=10,
        int8_max_changed=0.1,
        int8_max_accuracy_change=0.05,
        int8_max_decisions_changed=0.1,
    )
    return params


def run(repo: Path, *args: str, env: dict[str, str] | None = None, fail: bool = False) -> str:
    """Run a command in `repo` with this interpreter's `python` first on PATH; return stdout + stderr.

    Asserts that it succeeds, or with `fail=True` that it fails. `env` adds to or overrides the environment.
    """
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **(env or {}),
    }
    proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    if fail:
        assert proc.returncode != 0, f"{' '.join(args)} succeeded but should have failed:\n{out}"
    else:
        assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def git_commit(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", *GIT_USER, "commit", "-q", "-m", message)


def make_tiny_repo(repo: Path, tiny_mnist_dir: Path) -> Path:
    """Copy the pipeline into `repo` with tiny params, git init and commit it (no `dvc repro` yet)."""
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(tiny_mnist_dir), sort_keys=False))
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "git", *GIT_USER, "commit", "-q", "--allow-empty", "-m", "empty")
    git_commit(repo, "tiny pipeline")
    return repo


def run_stage_script(cwd: Path, stage: str) -> subprocess.CompletedProcess:
    """Run `stages/<stage>.py` of this checkout with `cwd` as the project directory, without DVC."""
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / f"{stage}.py")],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
