"""Experiments on a real Ray cluster on loopback: a head and a second node, each a separate `ray start`.

The tiny pipeline's commit goes through a bare git remote, its data through a local DVC remote (the
project's default one, under a temp HOME that the Ray nodes share). Without Ray (make setup-cluster) these
tests skip, except under CI=true, where a skip would hide that they never ran: there they fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pipeline_repo import git_commit, make_tiny_repo, run

from digits.cluster.grammar import trial_name
from digits.cluster.loopback import loopback_cluster
from digits.cluster.repo import ClusterError, exp_ref

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
SWEEP_TIMEOUT = 240  # seconds for one sweep (each test's hard limit)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI must run the cluster tests (make setup-cluster)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """HOME for every DVC command and Ray node: the default DVC remote (~/.local/...) is the same folder."""
    return {"HOME": str(tmp_path_factory.mktemp("home")), "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, home: dict[str, str]) -> Iterator[str]:
    """A head and one more node, 1 CPU each, on loopback addresses, each with its own temp dir."""
    root = tmp_path_factory.mktemp("ray")
    try:
        with loopback_cluster(root, nodes=2, cpus=1, env=home) as address:
            # Each node keeps its session (logs, sockets) in its own temp dir, the second node too.
            assert all(list((root / f"node{i}").glob("session_*")) for i in range(2))
            yield address
    except ClusterError as e:
        if "did not start" not in str(e) and "not installed" not in str(e):
            raise
        _unavailable(str(e))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_mnist_dir: Path, home: dict[str, str]) -> Path:
    """The tiny pipeline run up to evaluate, committed, and pushed to a bare git remote and the DVC remote."""
    root = tmp_path_factory.mktemp("project")
    repo = make_tiny_repo(root / "repo", tiny_mnist_dir)
    run(repo, "dvc", "repro", "evaluate", env=home)
    git_commit(repo, "tiny pipeline run")
    run(root, "git", "init", "-q", "--bare", "origin.git")
    run(repo, "git", "remote", "add", "origin", str(root / "origin.git"))
    return repo


def environment(home: dict[str, str]) -> dict[str, str]:
    """This environment with the temp HOME, and this interpreter's bin/ (dvc, python) first on PATH."""
    return {**os.environ, **home, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def sweep(project: Path, home: dict[str, str], address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "digits.cluster", "sweep", "--address", address, "--cpus", "1", *args],
        cwd=project, env=environment(home),
        capture_output=True, text=True, timeout=SWEEP_TIMEOUT,
    )  # fmt: skip


def experiments(project: Path, home: dict[str, str]) -> dict[str, dict]:
    """`dvc exp show --json`'s experiments by name: {name: {"params": ..., "metrics": ...}}."""
    env = environment(home)
    out = subprocess.run(
        ["dvc", "exp", "show", "--json"], cwd=project, env=env, capture_output=True, check=True
    )
    shown = json.loads(out.stdout)
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev["data"]
                found[rev["name"]] = {
                    "params": data["params"]["params.yaml"]["data"],
                    "metrics": {path: m.get("data", {}) for path, m in data["metrics"].items()},
                }
    return found


def remote_exps(project: Path) -> list[str]:
    return run(project, "git", "ls-remote", "origin", "refs/exps/*").split()[1::2]


def test_a_sweep_lands_every_trial_and_a_rerun_restores_from_the_run_cache(
    project: Path, home: dict[str, str], cluster: str
) -> None:
    done = sweep(project, home, cluster, "-S", "train.lr=0.002,0.004", "--target", "evaluate")
    assert done.returncode == 0, done.stderr
    commit = run(project, "git", "rev-parse", "HEAD").strip()
    names = {lr: trial_name(commit, {"train.lr": lr}) for lr in ("0.002", "0.004")}
    shown = experiments(project, home)
    for lr, name in names.items():
        assert shown[name]["params"]["train"]["lr"] == float(lr), shown[name]
        assert 0 < shown[name]["metrics"]["metrics/evaluate.json"]["accuracy"] <= 1
        assert exp_ref(commit, name) in remote_exps(project)
        assert f"+ {name} train.lr={lr}:" in done.stderr, done.stderr
    assert "2 of 2 landed" in done.stderr

    # Train's params seen before: restored from the run cache on a worker that never trained them.
    again = sweep(
        project, home, cluster, "-S", "train.lr=0.002", "-S", "evaluate.gallery=6", "--target", "evaluate"
    )
    assert again.returncode == 0, again.stderr
    name = trial_name(commit, {"train.lr": "0.002", "evaluate.gallery": "6"})
    assert f"+ {name}" in again.stderr and "restored train" in again.stderr, again.stderr
    assert experiments(project, home)[name]["params"]["evaluate"]["gallery"] == 6


def processes() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, command line)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if proc.name.isdigit():
            found[int(proc.name)] = (ppid, cmd)
    return found


def _training_trial() -> tuple[int, int] | None:
    """(Ray worker pid, trial runner pid) of a trial whose `dvc exp run` has started, if any."""
    table = processes()
    for ppid, cmd in table.values():
        runner = table.get(ppid)
        if "dvc exp run" in cmd and runner and "digits.cluster.trial" in runner[1]:
            return runner[0], ppid
    return None


def test_a_trial_that_loses_its_worker_is_retried_and_lands_once(
    project: Path, home: dict[str, str], cluster: str, tmp_path: Path
) -> None:
    args = [
        "-S",
        "train.lr=0.003",
        "-S",
        "train.epochs=2",
        "--target",
        "evaluate",
        "--scratch",
        str(tmp_path),
    ]
    env = environment(home)
    driver = subprocess.Popen(
        [sys.executable, "-m", "digits.cluster", "sweep", "--address", cluster, "--cpus", "1", *args],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + SWEEP_TIMEOUT / 2
        while not (found := _training_trial()):
            assert time.monotonic() < deadline and driver.poll() is None, "no trial started training"
            time.sleep(0.2)
        worker, runner = found
        os.kill(worker, signal.SIGKILL)
        _, err = driver.communicate(timeout=SWEEP_TIMEOUT)
    finally:
        driver.kill()
    assert driver.returncode == 0, err
    assert "2 attempts" in err, err
    commit = run(project, "git", "rev-parse", "HEAD").strip()
    name = trial_name(commit, {"train.lr": "0.003", "train.epochs": "2"})
    assert remote_exps(project).count(exp_ref(commit, name)) == 1
    assert name in experiments(project, home)
    # The lost attempt's runner and every command it started are gone, and so is its clone.
    assert runner not in processes()
    assert list(tmp_path.iterdir()) == []


def test_a_search_picks_trials_from_ranges_and_chooses_on_validation(
    project: Path, home: dict[str, str], cluster: str
) -> None:
    search = ["--search", "optuna", "--trials", "2", "--target", "evaluate"]
    done = sweep(project, home, cluster, "-S", "train.lr=loguniform(0.001,0.01)", *search)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("+ trial-")]
    assert len(lines) == 2, done.stderr
    lrs = [float(line.split("train.lr=")[1].split(":")[0]) for line in lines]
    assert all(0.001 <= lr <= 0.01 for lr in lrs) and lrs[0] != lrs[1]
    assert "best on validation" in done.stderr
    names = [line.split()[1] for line in lines]
    assert set(names) <= set(experiments(project, home))  # pulled back like a sweep's


def test_the_ensemble_members_train_on_the_cluster_and_restore_locally(
    project: Path, home: dict[str, str], cluster: str
) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ensemble"]["seeds"] = [5]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git_commit(project, "one ensemble member")
    env = environment(home)
    done = subprocess.run(
        [sys.executable, "-m", "digits.cluster", "members", "--address", cluster, "--cpus", "1"],
        cwd=project, env=env, capture_output=True, text=True, timeout=SWEEP_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "+ member-5" in done.stderr, done.stderr
    assert not (project / "models/members/seed-5.keras").exists()
    out = run(project, "dvc", "repro", "--pull", "member@5", env=home)
    assert "Stage 'member@5' is cached - skipping run" in out, out
    assert (project / "models/members/seed-5.keras").is_file()
