"""`python -m digits.cluster sweep|members`: DVC experiments and ensemble members as Ray tasks.

sweep   -S key=v1,v2 ... [--seeds 1,2,3]: every combination a `dvc exp run`, pulled back at the end;
        with --search optuna --trials N, -S takes ranges and Optuna picks each next trial on validation
        accuracy (never test).
members every `member@<seed>` of ensemble.seeds trained on the cluster into the DVC remote's run cache;
        the local `dvc repro --pull` then restores them and only averages.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from digits import DigitsError, log
from digits.cluster.driver import Cluster, Resources, describe, pull
from digits.cluster.grammar import GrammarError, Override, check, parse_override, sweep, trial_name
from digits.cluster.repo import ClusterError, baseline, local_remote, push_run_cache
from digits.cluster.trial import Result, Spec


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,2,3") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m digits.cluster", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", help="the Ray cluster (default: RAY_ADDRESS, else a new local one)")
    common.add_argument(
        "--cpus", type=float, default=2, help="CPUs per trial (default 2: training's threads)"
    )
    common.add_argument("--gpus", type=float, default=0, help="GPUs per trial (default 0)")
    common.add_argument("--retries", type=int, default=2, help="attempts after a lost worker (default 2)")
    common.add_argument("--git-remote", default="origin", help="where the commit and experiments go")
    common.add_argument("-r", "--remote", help="the DVC remote (default: the project's default remote)")
    common.add_argument("--scratch", help="where workers clone (default: their temp dir)")
    common.add_argument("--json", type=Path, help="also write every trial's result here (a JSON list)")
    sub = parser.add_subparsers(dest="command", required=True)
    sw = sub.add_parser("sweep", parents=[common], help="dvc exp run per combination of -S values")
    sw.add_argument("-S", "--set-param", dest="set", action="append", default=[], metavar="KEY=VALUES")
    sw.add_argument("--seeds", type=_seeds, help="repeat each combination with these train.seed values")
    sw.add_argument("--target", action="append", default=[], help="stages to run (default: all)")
    sw.add_argument("--search", choices=["optuna"], help="search the -S ranges instead of sweeping lists")
    sw.add_argument("--trials", type=int, default=8, help="trials of a search (default 8)")
    sw.add_argument("--search-seed", type=int, default=0, help="the search sampler's seed (default 0)")
    sub.add_parser("members", parents=[common], help="train ensemble.seeds' members into the run cache")
    return parser


class Run:
    """What every command shares: the pushed baseline and the connected cluster."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.cwd = args, Path.cwd()
        self.commit, self.url = baseline(self.cwd, args.git_remote)
        log(f"cluster: baseline {self.commit[:7]} pushed to {args.git_remote}; pushing data and run cache")
        push_run_cache(self.cwd, args.remote)
        self.cluster = Cluster(args.address, Resources(args.cpus, args.gpus, args.retries))
        shared = local_remote(self.cwd, args.remote)
        if shared and self.cluster.nodes() > 1:
            log(f"cluster: warning: the DVC remote is a local path ({shared}); every node must see it")

    def experiment(self, params: dict[str, str]) -> Spec:
        """A `dvc exp run` of the baseline with these params, named from them and the commit."""
        name = trial_name(self.commit, params)
        return Spec(
            name, self.url, self.commit, params, self.args.target, "exp", self.args.remote, self.args.scratch
        )

    def stage(self, name: str, target: str) -> Spec:
        """A `dvc repro` of one stage of the baseline, pushed with its run cache."""
        return Spec(name, self.url, self.commit, {}, [target], "stage", self.args.remote, self.args.scratch)

    def collect(self, total: int) -> Iterator[Result]:
        for result, attempts in self.cluster.results(total):
            log(describe(result, attempts))
            yield result


def run_sweep(run: Run, trials: list[dict[str, str]]) -> list[Result]:
    specs = {spec.name: spec for spec in map(run.experiment, trials)}  # the same params twice run once
    log(f"cluster: {len(specs)} trials on {run.cluster.nodes()} nodes, {run.cluster.capacity()} at a time")
    for spec in specs.values():
        run.cluster.submit(spec)
    return list(run.collect(len(specs)))


def _distribution(o: Override) -> object:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if o.kind == "choice":
        return CategoricalDistribution(o.values)
    if o.kind == "intuniform":
        return IntDistribution(int(o.low), int(o.high))
    return FloatDistribution(o.low, o.high, log=o.kind == "loguniform")


def run_search(run: Run, overrides: list[Override], params_file: Path) -> list[Result]:
    """Optuna's TPE picks each next trial from the finished trials' validation accuracy."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {o.key: _distribution(o) for o in overrides}
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=run.args.search_seed)
    )
    asked: dict[str, optuna.trial.Trial] = {}
    results: list[Result] = []

    def ask() -> None:
        while len(asked) < run.args.trials and len(run.cluster.pending) < run.cluster.capacity():
            trial = study.ask(space)
            params = {key: str(value) for key, value in trial.params.items()}
            check(params_file, [params])
            spec = run.experiment(params)
            asked[spec.name] = trial
            run.cluster.submit(spec)

    ask()
    for result in run.collect(run.args.trials):
        val = _val(result)
        trial = asked[result.name]
        study.tell(trial, val) if val is not None else study.tell(trial, state=optuna.trial.TrialState.FAIL)
        results.append(result)
        ask()
    scored = [r for r in results if _val(r) is not None]
    if scored:
        best = max(scored, key=_val)
        test = best.metrics.get("evaluate", {}).get("accuracy")
        shown = f"test {test:.4f}, reported only" if test is not None else "no test run"
        log(f"cluster: best on validation: {best.name} {best.params} (val {_val(best):.4f}; {shown})")
    return results


def _val(result: Result) -> float | None:
    return result.metrics.get("train", {}).get("best_val_accuracy")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run = None
    try:
        params_file = Path("params.yaml")
        if args.command == "sweep":
            overrides = [parse_override(s) for s in args.set]
            if args.search:
                if not overrides:
                    raise GrammarError("--search needs -S ranges, e.g. -S 'train.lr=loguniform(1e-3,1e-2)'")
            else:
                trials = sweep(overrides, args.seeds)
                check(params_file, trials)
        run = Run(args)
        if args.command == "members":
            results = run_members(run)
        else:
            results = run_search(run, overrides, params_file) if args.search else run_sweep(run, trials)
            landed = [r.name for r in results if r.status != "failed"]
            pull(run.cwd, args.git_remote, landed)
            log(f"cluster: {len(landed)} of {len(results)} landed; compare: dvc exp show --only-changed")
    except ImportError as e:
        return _fail(f"{e.name or e} is not installed: make setup-cluster (requirements-cluster.lock)")
    except (DigitsError, ClusterError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        log("cluster: interrupted; cancelling the trials still running")
        return 130
    finally:
        if run:
            run.cluster.shutdown()
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    return 1 if any(r.status == "failed" for r in results) else 0


def run_members(run: Run) -> list[Result]:
    from digits.params import load_params

    seeds = load_params().ensemble.seeds
    if not seeds:
        raise ClusterError("ensemble.seeds is empty: set e.g. [1, 2, 3] in params.yaml, commit, run again")
    for seed in seeds:
        run.cluster.submit(run.stage(f"member-{seed}", f"member@{seed}"))
    results = list(run.collect(len(seeds)))
    log("cluster: members are in the DVC remote's run cache: `dvc repro --pull` restores them and averages")
    return results


def _fail(msg: str) -> int:
    log(f"cluster: error: {msg}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
