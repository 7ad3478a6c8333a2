"""Git and DVC operations of a cluster run, on the driver's checkout and in a trial's scratch clone."""

from __future__ import annotations

import subprocess
from pathlib import Path

from digits import DigitsError


class ClusterError(DigitsError):
    """A cluster run that cannot start or a step of a trial that failed, with the command's own words."""


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise ClusterError(f"git {' '.join(args)} failed:\n{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def exp_ref(commit: str, name: str) -> str:
    """Where `dvc exp push` puts an experiment of baseline `commit` in the git remote."""
    return f"refs/exps/{commit[:2]}/{commit[2:]}/{name}"


def has_ref(cwd: Path, url: str, ref: str) -> bool:
    return bool(git(cwd, "ls-remote", url, ref))


def baseline(cwd: Path, git_remote: str) -> tuple[str, str]:
    """The committed HEAD that trials run, pushed to `git_remote`: (its sha, the remote's URL).

    Refuses a work tree with changes (trials see only the commit, as DVC's queue does) and a detached HEAD
    (the commit reaches the remote on its branch, never by force)."""
    if not (cwd / "dvc.yaml").is_file():
        raise ClusterError(f"{cwd}: no dvc.yaml here; run from the project's root")
    changes = git(cwd, "status", "--porcelain")
    if changes:
        shown = "\n".join(f"  {line}" for line in changes.splitlines()[:10])
        raise ClusterError(f"the work tree has changes; trials run the commit only, so commit them:\n{shown}")
    branch = subprocess.run(
        ["git", "symbolic-ref", "--short", "-q", "HEAD"], cwd=cwd, capture_output=True, text=True
    ).stdout.strip()
    if not branch:
        raise ClusterError("HEAD is detached: check out a branch, which is pushed to the git remote")
    try:
        url = git(cwd, "remote", "get-url", git_remote)
    except ClusterError:
        raise ClusterError(
            f"no git remote {git_remote!r}: workers clone the project from it "
            f"(git remote add {git_remote} URL)"
        ) from None
    git(cwd, "push", "--quiet", git_remote, f"HEAD:refs/heads/{branch}")
    return git(cwd, "rev-parse", "HEAD"), url


def push_run_cache(cwd: Path, remote: str | None = None) -> int:
    """`dvc push --run-cache`, and the objects the run-cache entries name: the number of objects sent.

    DVC pushes the entries but not the outputs marked `cache: false` that they record (metrics, plots), and
    without those another clone cannot restore a stage from the entry; it runs the stage again."""
    from dvc.repo import Repo

    with Repo(str(cwd)) as repo:
        repo.push(remote=remote, run_cache=True)
        runs = Path(repo.cache.legacy.path) / "runs"
        entries = [(path.parent.name, path.name) for path in runs.glob("*/*/*")]
        objs = set().union(*repo.stage_cache.get_used_objs(entries).values())
        present = {obj for obj in objs if repo.cache.local.exists(obj.value)}
        return len(repo.cloud.push(present, remote=remote).transferred)


def local_remote(cwd: Path, remote: str | None = None) -> str | None:
    """The DVC remote's URL when it is a path on this machine (every node must then see that same path)."""
    from dvc.repo import Repo

    with Repo(str(cwd)) as repo:
        name = remote or repo.config["core"].get("remote")
        url = repo.config["remote"].get(name, {}).get("url", "") if name else ""
    return url if url and "://" not in url else None
