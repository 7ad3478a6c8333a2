"""What a cluster trial costs beyond its training, and a 4-trial sweep on one loopback node against two.

    python benchmarks/cluster_overhead.py [--trials 4] [--json benchmarks/results/cluster.json]

Builds the tests' tiny pipeline repo (real MNIST digits, tiny params), runs it up to evaluate, commits it
with a bare git remote and a local DVC remote (under a temp HOME), then:
  local     one `dvc exp run -S train.lr=0.0009 evaluate` in the repo itself: the work without a cluster
  1 node    a sweep of --trials learning rates, `--target evaluate --cpus 1`, on a one-node loopback cluster
  2 nodes   the same number of other learning rates on a two-node one (1 CPU each)
Per trial (from `--json`): clone (git clone + checkout), run (`dvc exp run --pull`: pulls the earlier
stages' outputs, then trains and evaluates), push (outputs, run cache, experiment ref). On a 2-vCPU box the
second node can only add the second core: the overhead is the figure that carries over to a real cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from pipeline_repo import git_commit, make_tiny_repo, run  # noqa: E402

from digits.cluster.loopback import loopback_cluster  # noqa: E402

TINY_MNIST = ROOT / "tests" / "fixtures" / "mnist-tiny"


def sweep(repo: Path, env: dict[str, str], address: str, lrs: list[str], out: Path) -> float:
    cmd = [sys.executable, "-m", "digits.cluster", "sweep", "--address", address, "--cpus", "1"]
    cmd += ["-S", f"train.lr={','.join(lrs)}", "--target", "evaluate", "--json", str(out)]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"the sweep failed:\n{done.stderr[-3000:]}")
    for line in done.stderr.splitlines():  # the driver's own lines, not the progress bar's
        if line.startswith(("cluster:", "+ ", "x ", "= ")):
            print(f"  {line}", file=sys.stderr)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        home = {"HOME": str(root / "home")}
        env = {**os.environ, **home, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        repo = make_tiny_repo(root / "repo", TINY_MNIST)
        run(repo, "dvc", "repro", "evaluate", env=home)
        git_commit(repo, "tiny pipeline run")
        run(root, "git", "init", "-q", "--bare", "origin.git")
        run(repo, "git", "remote", "add", "origin", str(root / "origin.git"))
        start = time.perf_counter()
        run(repo, "dvc", "exp", "run", "-S", "train.lr=0.0009", "evaluate", env=home)
        local = time.perf_counter() - start
        run(repo, "git", "checkout", "--", ".")  # the experiment was applied to the work tree
        figures: dict = {"local_exp_run_s": round(local, 1), "trials": args.trials}
        print(f"local dvc exp run (train + evaluate): {local:.1f} s", file=sys.stderr)
        for nodes in (1, 2):
            lrs = [f"0.00{nodes}{i + 1}" for i in range(args.trials)]
            out = root / f"sweep-{nodes}.json"
            with loopback_cluster(root / f"ray-{nodes}", nodes=nodes, cpus=1, env=home) as address:
                wall = sweep(repo, env, address, lrs, out)
            results = json.loads(out.read_text())
            phase = {p: statistics.median(r["seconds"][p] for r in results) for p in ("clone", "run", "push")}
            medians = {f"{p}_s": round(v, 1) for p, v in phase.items()}
            figures[f"{nodes}_node"] = {"wall_s": round(wall, 1), **medians}
            print(
                f"{nodes} node(s): {args.trials} trials in {wall:.0f} s; per trial median {medians}",
                file=sys.stderr,
            )
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
