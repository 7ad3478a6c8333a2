"""The driver's side: trials as Ray tasks, progress while they run, and the results brought home."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from digits import log
from digits.cluster.trial import Result, Spec

KILLED_TAIL = 4000  # characters of a trial runner's stderr kept when it died without a result


def attempt(spec_json: str, board: object) -> dict:
    """The Ray task: one attempt at a trial, its runner in a session of its own (trial.py's watchdog)."""
    spec = Spec(**json.loads(spec_json))
    board.start.remote(spec.name)  # type: ignore[attr-defined]
    proc = subprocess.run(
        [sys.executable, "-m", "digits.cluster.trial"],
        input=spec_json, capture_output=True, text=True, start_new_session=True,
    )  # fmt: skip
    if proc.returncode == 0:
        return json.loads(proc.stdout)
    host = f"{socket.gethostname()}:{os.getpid()}"
    return asdict(Result(spec.name, "failed", spec.params, host, log_tail=proc.stderr[-KILLED_TAIL:]))


class Board:
    """A Ray actor counting each trial's attempts: running trials and Ray's retries, for the progress bar."""

    def __init__(self) -> None:
        self.starts: Counter[str] = Counter()

    def start(self, name: str) -> None:
        self.starts[name] += 1

    def snapshot(self) -> dict[str, int]:
        return dict(self.starts)


@dataclass(frozen=True)
class Resources:
    cpus: float = 2  # the model trains on 2 threads
    gpus: float = 0
    retries: int = 2  # further attempts when a worker is lost (Ray's max_retries)


class Cluster:
    """Submits trials and yields their results as they finish, with a progress bar on stderr."""

    def __init__(self, address: str | None, resources: Resources) -> None:
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        connect = address or os.environ.get("RAY_ADDRESS")
        options = {} if connect else {"include_dashboard": False}  # a new local cluster: this machine
        ray.init(address=connect, logging_level="ERROR", log_to_driver=False, **options)
        self.ray = ray
        self.board = ray.remote(num_cpus=0)(Board).remote()
        self.task = ray.remote(
            num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=resources.retries,
            scheduling_strategy="SPREAD",
        )(attempt)  # fmt: skip
        self.resources = resources
        self.pending: dict[object, str] = {}
        self.done: set[str] = set()
        self.failed = 0

    def capacity(self) -> int:
        """How many trials run at once (the cluster's CPUs or GPUs over a trial's)."""
        total = self.ray.cluster_resources()
        by = ("GPU", self.resources.gpus) if self.resources.gpus else ("CPU", self.resources.cpus)
        return max(1, int(total.get(by[0], 0) // by[1]))

    def nodes(self) -> int:
        return sum(1 for node in self.ray.nodes() if node["Alive"])

    def submit(self, spec: Spec) -> None:
        self.pending[self.task.remote(json.dumps(asdict(spec)), self.board)] = spec.name

    def results(self, total: int) -> Iterator[tuple[Result, int]]:
        """Each trial's Result as it finishes, with how many attempts it took; `total` sizes the bar."""
        from tqdm import tqdm

        start = time.monotonic()
        redraw = 1.0 if sys.stderr.isatty() else 30.0  # a log file gets a line every 30 s, not every second
        with tqdm(total=total, unit="trial", file=sys.stderr, dynamic_ncols=True, mininterval=redraw) as bar:
            while self.pending:
                ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=1.0)
                starts = self.ray.get(self.board.snapshot.remote())
                running = len(set(starts) - self.done)
                bar.set_postfix(
                    running=running, failed=self.failed, retried=sum(n > 1 for n in starts.values())
                )
                for ref in ready:
                    name = self.pending.pop(ref)
                    result = Result(**self.ray.get(ref))
                    self.done.add(name)
                    self.failed += result.status == "failed"
                    bar.update()
                    with tqdm.external_write_mode(file=sys.stderr):  # the caller's lines above the bar
                        yield result, starts.get(name, 1)
            bar.set_postfix(failed=self.failed, minutes=f"{(time.monotonic() - start) / 60:.1f}")

    def shutdown(self) -> None:
        for ref in self.pending:
            self.ray.cancel(ref, force=True)  # the runner's watchdog then kills its commands
        self.ray.shutdown()


def describe(result: Result, attempts: int) -> str:
    """One line for a finished trial (and its log tail when it failed)."""
    params = " ".join(f"{k}={v}" for k, v in result.params.items()) or "(baseline params)"
    retried = f", {attempts} attempts" if attempts > 1 else ""
    if result.status == "failed":
        return f"x {result.name} {params}: failed on {result.host}{retried}\n{result.log_tail}"
    if result.status == "landed-before":
        return f"= {result.name} {params}: already in the git remote{retried}"
    val = result.metrics.get("train", {}).get("best_val_accuracy")
    test = result.metrics.get("evaluate", {}).get("accuracy")
    scores = "".join(f" {label} {value:.4f}" for label, value in (("val", val), ("test", test)) if value)
    restored = f", restored {' '.join(result.restored)}" if result.restored else ""
    took = sum(result.seconds.values())
    return f"+ {result.name} {params}:{scores} (ran {len(result.ran)}{restored}, {took:.0f} s{retried})"


def pull(cwd: os.PathLike, git_remote: str, names: list[str]) -> None:
    """`dvc exp pull` of the landed experiments (metrics and params; their outputs stay in the remote)."""
    if names:
        log(f"cluster: dvc exp pull {git_remote} ({len(names)} experiments)")
        subprocess.run(["dvc", "exp", "pull", "--no-cache", git_remote, *names], cwd=cwd, check=True)
