"""One trial on a worker: `python -m digits.cluster.trial` reads its Spec as JSON on stdin and writes its
Result as JSON on stdout.

The trial clones the baseline commit into scratch space, runs DVC there (the clone's own `digits` package
first on PYTHONPATH, so the commit's code is what runs), pushes the result, and removes the clone. Every
command runs in a process group of its own; a watchdog kills that group and exits as soon as the Ray worker
that started the trial is gone, so a trial whose worker died never pushes: Ray retries it elsewhere, and the
experiment's name (from its params and commit) lets the retry see whether it already landed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from digits import DigitsError
from digits.cluster.repo import ClusterError, exp_ref, has_ref, push_run_cache

LOG_TAIL = 40  # lines of a failed trial's output shown by the driver
GIT_USER = ("digits trial", "trial@digits.invalid")  # commits an experiment where the node has no git user


@dataclass
class Spec:
    name: str
    url: str  # the git remote the baseline and the experiment go through
    commit: str
    params: dict[str, str]  # -S key=value, values as written
    targets: list[str] = field(default_factory=list)  # stages (all when empty)
    kind: str = "exp"  # exp: `dvc exp run` + `dvc exp push` | stage: `dvc repro` of the targets + push
    dvc_remote: str | None = None
    scratch: str | None = None  # where clones go (the system's temp dir when None)


@dataclass
class Result:
    name: str
    status: str  # landed | landed-before (an earlier attempt pushed it) | failed
    params: dict[str, str]
    host: str
    metrics: dict[str, dict] = field(default_factory=dict)  # metrics/<file>.json of the run, by file stem
    ran: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)  # restored from the run cache, not run
    seconds: dict[str, float] = field(default_factory=dict)  # clone, run, push
    log_tail: str = ""


class Runner:
    """Runs the trial's commands in its scratch clone, each in its own process group, under the watchdog."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.parent = os.getppid()
        self.dir = Path(tempfile.mkdtemp(prefix=f"digits-{spec.name}-", dir=spec.scratch))
        os.chdir(self.dir)  # DVC's Python API (the run-cache push) resolves paths from here
        self.lock = threading.Lock()
        self.step: subprocess.Popen | None = None
        self.log: list[str] = []
        python_bin = str(Path(sys.executable).parent)  # stages call `python`: this environment's
        self.env = {
            **os.environ,
            "PYTHONPATH": str(self.dir),
            "PATH": f"{python_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def watch(self) -> None:
        while os.getppid() == self.parent:
            time.sleep(0.2)
        self.abort()

    def abort(self, *_: object) -> None:
        with self.lock:  # not between a step's start and its recording
            if self.step and self.step.poll() is None:
                os.killpg(self.step.pid, signal.SIGKILL)
            shutil.rmtree(self.dir, ignore_errors=True)
            os._exit(137)

    def run(self, *cmd: str) -> str:
        with self.lock:
            self.step = subprocess.Popen(
                cmd, cwd=self.dir, env=self.env, text=True, process_group=0,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
        out, _ = self.step.communicate()
        self.log.append(f"$ {' '.join(cmd)}\n{out}")
        if self.step.returncode:
            command = " ".join(word for word in cmd[:3] if not word.startswith("-"))  # git clone, dvc exp run
            raise ClusterError(f"{command} exited with {self.step.returncode}")
        return out

    def tail(self) -> str:
        return "\n".join("".join(self.log).splitlines()[-LOG_TAIL:])


def _metrics(root: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(root.glob("metrics/*.json"))}


def _clone(r: Runner) -> None:
    r.run("git", "clone", "--quiet", "--no-checkout", r.spec.url, ".")
    r.run("git", "checkout", "--quiet", "--detach", r.spec.commit)
    configured = (
        subprocess.run(["git", "config", "user.name"], cwd=r.dir, capture_output=True).returncode == 0
    )
    if not configured:  # `dvc exp run` commits the experiment
        r.run("git", "config", "user.name", GIT_USER[0])
        r.run("git", "config", "user.email", GIT_USER[1])


def _run(r: Runner, result: Result) -> str:
    """Clone, run and push; the status."""
    spec, clock = r.spec, time.perf_counter()
    _clone(r)
    ref = exp_ref(spec.commit, spec.name)
    if spec.kind == "exp" and has_ref(r.dir, spec.url, ref):
        return "landed-before"
    result.seconds["clone"] = round(time.perf_counter() - clock, 1)
    clock = time.perf_counter()
    sets = [arg for key, value in spec.params.items() for arg in ("-S", f"{key}={value}")]
    if spec.kind == "exp":
        out = r.run("dvc", "exp", "run", "--pull", "-n", spec.name, *sets, *spec.targets)
    else:
        out = r.run("dvc", "repro", "--pull", *spec.targets)
    result.ran = re.findall(r"Running stage '([^']+)'", out)
    result.restored = re.findall(r"Stage '([^']+)' is cached", out)
    if spec.kind == "exp":  # a stage trial's workspace metrics are the baseline's, not its own
        result.metrics = _metrics(r.dir)
    result.seconds["run"] = round(time.perf_counter() - clock, 1)
    clock = time.perf_counter()
    push_run_cache(r.dir, spec.dvc_remote)  # the data first: a ref that lands always has its data
    status = "landed"
    if spec.kind == "exp":
        if has_ref(r.dir, spec.url, ref):
            status = "landed-before"
        else:
            remote = ["-r", spec.dvc_remote] if spec.dvc_remote else []
            r.run("dvc", "exp", "push", "--no-cache", *remote, spec.url, spec.name)
    result.seconds["push"] = round(time.perf_counter() - clock, 1)
    return status


def run_trial(spec: Spec) -> Result:
    runner = Runner(spec)
    threading.Thread(target=runner.watch, daemon=True).start()
    signal.signal(signal.SIGTERM, runner.abort)
    result = Result(spec.name, "failed", spec.params, f"{socket.gethostname()}:{os.getpid()}")
    try:
        result.status = _run(runner, result)
    except DigitsError as e:
        result.log_tail = f"{runner.tail()}\n{e}"
    except Exception as e:  # a trial's failure is reported, never a lost worker
        result.log_tail = f"{runner.tail()}\n{type(e).__name__}: {e}"
    finally:
        shutil.rmtree(runner.dir, ignore_errors=True)
    return result


if __name__ == "__main__":
    out = os.fdopen(os.dup(1), "w")  # stdout is the result's; what DVC prints goes to stderr
    os.dup2(2, 1)
    spec = Spec(**json.load(sys.stdin))
    json.dump(asdict(run_trial(spec)), out)
    out.close()
