"""How wide `dvc metrics show` and `dvc exp show` print, on the tiny pipeline after a two-value sweep.

    python benchmarks/table_widths.py [--param train.lr --values 0.002,0.004] [--keep DIR]

Builds the tests' tiny pipeline repo (real MNIST digits, tiny params) in a temp dir, runs `dvc repro`, then
one experiment per value, and prints the number of metric values, the widest line of `dvc metrics show`
and of `COLUMNS=400 dvc exp show --only-changed --no-pager`, with and without the dependency-hash columns
(`--drop`) and in the docs' headline view, and the tables themselves. A few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pipeline_repo import make_tiny_repo, run  # noqa: E402

TINY_MNIST = ROOT / "tests" / "fixtures" / "mnist-tiny"
DEPS = "^(data|models)/"  # dependency columns: a full md5 each
# docs/experiments.md's headline view: the dependency columns and the secondary metrics dropped.
HEADLINE = "^(data|models)/|epochs_run|int8|heldout|mean_|corruptions|mnist_|fashion_auroc|lowres"


def widest(text: str) -> int:
    return max(map(len, text.splitlines()), default=0)


def count_values(shown: dict) -> int:
    def count(d: object) -> int:
        return sum(map(count, d.values())) if isinstance(d, dict) else 1

    files = next(iter(shown.values()))["data"]
    return sum(count(entry["data"]) for entry in files.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--param", default="train.lr")
    ap.add_argument("--values", default="0.002,0.004")
    ap.add_argument("--keep", type=Path, help="build the repo here and leave it (default: a temp dir)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="digits-widths-") as tmp:
        repo = make_tiny_repo(args.keep or Path(tmp), TINY_MNIST)
        print(f"dvc repro in {repo} ...", file=sys.stderr, flush=True)
        run(repo, "dvc", "repro")
        run(repo, "git", "add", "-A")  # metrics/ and plots/ too: the baseline row needs its metrics
        run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro")
        for value in args.values.split(","):
            print(f"dvc exp run -S {args.param}={value} ...", file=sys.stderr, flush=True)
            run(repo, "dvc", "exp", "run", "-S", f"{args.param}={value}")
        wide = {"COLUMNS": "400"}
        metrics = run(repo, "dvc", "metrics", "show", env=wide)
        values = count_values(json.loads(run(repo, "dvc", "metrics", "show", "--json")))
        show = ("dvc", "exp", "show", "--only-changed", "--no-pager")
        exps = run(repo, *show, env=wide)
        dropped = run(repo, *show, "--drop", DEPS, env=wide)
        headline = run(repo, *show, "--drop", HEADLINE, env=wide)
    print(f"metric values: {values}")
    print(f"dvc metrics show: widest line {widest(metrics)} characters\n{metrics}")
    print(f"dvc exp show --only-changed: widest line {widest(exps)} characters\n{exps}")
    print(f"... --drop '{DEPS}': widest line {widest(dropped)} characters\n{dropped}")
    print(f"... --drop '{HEADLINE}': widest line {widest(headline)} characters\n{headline}")


if __name__ == "__main__":
    main()
