"""Sharing through a DVC remote: `dvc push` in one clone, `dvc pull` in another restores everything.

The committed `.dvc/config` makes `local` (`~/.local/share/dvc-remotes/digits`) the default remote; every dvc
command here runs with HOME in a temp dir, so that default remote is a temp directory and the round trip
needs no remote setup at all, as for a user after `make run`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pipeline_repo import ALWAYS_CHANGED, GIT_USER, git_commit, ran, run, up_to_date

pytestmark = pytest.mark.slow

REMOTE = ".local/share/dvc-remotes/digits"  # under HOME, as `~/...` in .dvc/config
SHARED = ["data", "models"]  # DVC-cached outputs: they travel through the remote, not git


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {"HOME": str(tmp_path_factory.mktemp("home"))}


@pytest.fixture(scope="module")
def pushed(repo: Path, home: dict[str, str]) -> str:
    """Repo A after `git commit` of dvc.lock, metrics and plots, and a plain `dvc push`; its output."""
    git_commit(repo, "tiny pipeline run")
    return run(repo, "dvc", "push", env=home)


@pytest.fixture(scope="module")
def clone(repo: Path, pushed: str, home: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Repo B: a `git clone` of A, then a plain `dvc pull`."""
    clone = tmp_path_factory.mktemp("clone") / "b"
    run(repo.parent, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "models/model.keras").exists()
    run(clone, "dvc", "pull", env=home)
    return clone


def files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for top in SHARED
        for path in sorted((root / top).rglob("*"))
        if path.is_file()
    }


def test_push_goes_to_the_default_remote_outside_the_repo(
    repo: Path, pushed: str, home: dict[str, str]
) -> None:
    assert "files pushed" in pushed, pushed
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    cached = {
        out["path"]: out["md5"]
        for stage in lock["stages"].values()
        for out in stage["outs"]
        if out["path"].split("/")[0] in SHARED
    }
    assert {"data/raw", "data/prepared", "data/augmented", "models/model.keras"} <= set(cached)
    remote = Path(home["HOME"], REMOTE, "files/md5")
    for path, md5 in cached.items():  # a directory's md5 ends in .dir: its listing, pushed with its files
        assert (remote / md5[:2] / md5[2:]).is_file(), path
    assert "in sync" in run(repo, "dvc", "status", "--cloud", env=home)


def test_pull_restores_data_and_models_byte_identical(repo: Path, clone: Path) -> None:
    original, restored = files(repo), files(clone)
    assert {"data/raw/manifest.json", "data/augmented/train.npz", "models/model.keras"} <= set(original)
    assert sorted(restored) == sorted(original)
    for name, content in original.items():
        assert restored[name] == content, name


def test_metrics_are_identical(repo: Path, clone: Path) -> None:
    for name in ["metrics/evaluate.json", "metrics/train.json", "plots/confusion.csv"]:
        assert (clone / name).read_bytes() == (repo / name).read_bytes(), name


def test_pulled_clone_is_up_to_date_and_repro_runs_nothing(clone: Path, home: dict[str, str]) -> None:
    assert up_to_date(run(clone, "dvc", "status", env=home))
    out = run(clone, "dvc", "repro", env=home)
    assert ran(out) == ALWAYS_CHANGED, out
    assert run(clone, "git", "status", "--porcelain") == ""


def test_pull_from_an_empty_remote_fails_loudly(
    repo: Path, pushed: str, home: dict[str, str], tmp_path: Path
) -> None:
    clone = tmp_path / "c"
    run(repo.parent, "git", "clone", "-q", str(repo), str(clone))
    # A local override (.dvc/config.local, git-ignored) beats the committed default remote.
    empty = tmp_path / "empty-remote"
    empty.mkdir()
    run(clone, "dvc", "remote", "add", "-d", "--local", "empty", str(empty), env=home)
    assert "empty" in run(clone, "dvc", "remote", "default", env=home)
    out = run(clone, "dvc", "pull", env=home, fail=True)
    assert "failed to pull data from the cloud" in out, out
    assert "Missing cache files" in out, out
    assert not (clone / "models/model.keras").exists()
    assert run(clone, "git", "status", "--porcelain") == ""  # the committed config is untouched


def test_artifacts_get_fetches_a_tagged_model_without_training(
    repo: Path, pushed: str, home: dict[str, str], tmp_path: Path
) -> None:
    # Another project takes the model from the repo's remote by name: no clone to set up, no stage run.
    for name in ["digits-cnn", "digits-serving"]:  # annotated: DVC ignores lightweight tags
        run(repo, "git", *GIT_USER, "tag", "-a", f"{name}@v1.0.0", "-m", f"{name} v1.0.0")
    for name in ["digits-cnn", "digits-serving"]:
        (tmp_path / name).mkdir()
        run(tmp_path / name, "dvc", "artifacts", "get", str(repo), name, env=home)
    # Named like the file or folder in the repo.
    assert (tmp_path / "digits-cnn/model.keras").read_bytes() == (repo / "models/model.keras").read_bytes()
    bundle = {p.name: p.read_bytes() for p in (tmp_path / "digits-serving/serving").iterdir()}
    assert sorted(bundle) == ["model.json", "model.tflite", "model_int8.tflite"]
    assert bundle == {p.name: p.read_bytes() for p in (repo / "models/serving").iterdir()}
    pinned = tmp_path / "pinned.keras"
    get = ["dvc", "artifacts", "get", str(repo)]
    run(tmp_path, *get, "digits-cnn", "--rev", "v1.0.0", "-o", str(pinned), env=home)
    assert pinned.read_bytes() == (repo / "models/model.keras").read_bytes()
    wrong = run(tmp_path, *get, "digits-cnm", env=home, fail=True)
    assert "digits-cnm" in wrong, wrong
    assert not (tmp_path / "model.keras").exists()


def test_experiments_and_run_cache_travel_between_clones(
    repo: Path, pushed: str, home: dict[str, str], tmp_path: Path
) -> None:
    # A team: one bare git remote and one DVC remote (the default one under HOME), two clones.
    origin = tmp_path / "origin.git"
    run(tmp_path, "git", "init", "-q", "--bare", str(origin))
    run(repo, "git", "remote", "add", "origin", str(origin))
    run(repo, "git", "push", "-q", "origin", "HEAD:refs/heads/main")
    b = tmp_path / "b"
    run(tmp_path, "git", "clone", "-q", "-b", "main", str(origin), str(b))
    for key, value in [("user.name", "b"), ("user.email", "b@example.org")]:  # dvc exp apply commits
        run(b, "git", "config", key, value)
    run(b, "dvc", "pull", env=home)
    try:
        # A trains an ensemble member and shares its run cache; B then gets it without training.
        run(repo, "dvc", "exp", "run", "-S", "ensemble.seeds=[9]", "-n", "member-nine", env=home)
        run(repo, "dvc", "push", "--run-cache", env=home)
        run(b, "dvc", "pull", "--run-cache", env=home)  # the run records; --pull fetches their outputs
        out = run(b, "dvc", "exp", "run", "--pull", "-S", "ensemble.seeds=[9]", env=home)
        assert "Stage 'member@9' is cached - skipping run" in out, out
        assert "Running stage 'member@9'" not in out, out
        for clone in (repo, b):
            run(clone, "git", "reset", "-q", "--hard")
            run(clone, "dvc", "checkout", "-f", env=home)

        # A runs an experiment and pushes it; B pulls it, sees its params and metrics, applies it and gets
        # its model from the DVC remote, with nothing to rerun.
        run(repo, "dvc", "exp", "run", "-S", "train.epochs=2", "-n", "two-epochs-a", env=home)
        run(repo, "dvc", "exp", "push", "origin", "two-epochs-a", env=home)
        run(b, "dvc", "exp", "pull", "origin", "two-epochs-a", env=home)
        shown = json.loads(run(b, "dvc", "exp", "show", "--json", env=home))
        exps = {e["name"]: e for rev in shown for e in (rev.get("experiments") or []) if e.get("name")}
        data = exps["two-epochs-a"]["revs"][0]["data"]
        assert data["params"]["params.yaml"]["data"]["train"]["epochs"] == 2
        train = data["metrics"]["metrics/train.json"]["data"]
        assert train["epochs_run"] == 2 == json.loads((repo / "metrics/train.json").read_text())["epochs_run"]
        run(b, "dvc", "exp", "apply", "two-epochs-a", env=home)
        run(b, "dvc", "pull", env=home)
        assert (b / "models/model.keras").read_bytes() == (repo / "models/model.keras").read_bytes()
        assert ran(run(b, "dvc", "repro", env=home)) == ALWAYS_CHANGED
    finally:
        run(repo, "git", "reset", "-q", "--hard")
        run(repo, "dvc", "checkout", "-f", env=home)
