"""Time to accuracy: train recipes side by side, several seeds each, and chart accuracy against seconds.

    python benchmarks/time_to_accuracy.py --seeds 1-3 \\
        --recipe previous -S train.schedule=exponential -S model.preset=deep -S train.epochs=12 \\
        --recipe default

Each `--recipe NAME` starts a recipe: params.yaml plus the `-S key=value` overrides that follow it (as in `dvc
exp run -S`). Every recipe trains with every seed (train.seed = the seed) through the train stage's code
(digits.train.build_and_train, selection on validation; the 11-class model with its share of
data/negatives/train.npz, or `-S negatives.train=N` of them by family, or the recipe's own, drawn by the
negatives stage's code, where it changes what they depend on, e.g. `-S augment.lowres=0`; and batch norm
recalibrated, as the stage trains it: seeds.stage_data), on copies augmented in-process with the recipe's
`augment` params.
Per epoch it records the training wall time so far,
validation accuracy, and test accuracy, which is for reporting only: nothing chooses by it, and the seconds
spent computing it are left out of the clock. Reports per recipe: train seconds (median) and their ratio to
the first recipe's, the same for the process's CPU seconds (which a VM's steal time moves far less; each
run and epoch also records the machine's steal seconds), selected model's val/test accuracy (mean),
seconds to first reach 99.5% and 99.6% test. Writes <out>.json and <out>.png (test accuracy against
seconds, every run on one chart). Needs data/prepared/ and data/negatives/ (`dvc repro negatives`). Run
nothing else on the machine while it times."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seeds import seed_list, stage_data, with_overrides

from digits.params import Params, load_params

THRESHOLDS = (0.995, 0.996)


def steal_seconds() -> float | None:
    """CPU seconds the hypervisor gave to others while we wanted them, all CPUs (Linux; else None)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else None


class _Recipe(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> None:
        recipes = namespace.recipes or []
        if option_string == "--recipe":
            recipes.append({"name": values, "overrides": []})
        elif not recipes:
            parser.error("-S must follow a --recipe NAME")
        else:
            recipes[-1]["overrides"].append(values)
        namespace.recipes = recipes


def train_run(params: Params, seed: int, data: dict, copies: np.ndarray) -> dict:
    import keras

    from digits.models import predict_probs
    from digits.shapes import NUM_CLASSES
    from digits.train import build_and_train

    class Clock(keras.callbacks.Callback):
        """Per-epoch training seconds (test scoring excluded), val and test accuracy."""

        def __init__(self) -> None:
            super().__init__()
            self.epochs: list[dict] = []
            self.paused = self.cpu_paused = 0.0

        def on_train_begin(self, logs=None) -> None:
            self.start, self.steal_start = time.perf_counter(), steal_seconds()

        def on_epoch_end(self, epoch, logs=None) -> None:
            now, cpu_now, steal = time.perf_counter(), time.process_time(), steal_seconds()
            # Scored as served: the digits' columns only (digits.models.digit_outputs drops "not a digit").
            probs = predict_probs(self.model, data["test_x"])[:, :NUM_CLASSES]
            test_acc = float(np.mean(probs.argmax(1) == data["test_y"]))
            self.epochs.append(
                {
                    "epoch": epoch + 1,
                    "seconds": round(now - self.start - self.paused, 2),
                    "steal_seconds": None if steal is None else round(steal - self.steal_start, 1),
                    "val_accuracy": round(float(logs["val_accuracy"]), 5),
                    "test_accuracy": round(test_acc, 5),
                }
            )
            self.paused += time.perf_counter() - now
            self.cpu_paused += time.process_time() - cpu_now
            e = self.epochs[-1]
            print(
                f"    epoch {e['epoch']}: {e['seconds']:.0f}s val {e['val_accuracy']:.4f} test {test_acc:.4f}"
            )

    clock = Clock()
    train_params = params.train.model_copy(update={"seed": seed})
    cpu_start, steal_start = time.process_time(), steal_seconds()
    result = build_and_train(
        params.model,
        train_params,
        stage_data(params, data["train_x"], data["train_y"], copies, data["val_x"], data["val_y"]),
        [clock],
    )
    cpu, steal = time.process_time() - cpu_start - clock.cpu_paused, steal_seconds()
    selected = clock.epochs[result.best_epoch - 1]
    reach = {}
    for t in THRESHOLDS:
        first = next((e["seconds"] for e in clock.epochs if e["test_accuracy"] >= t), None)
        reach[f"seconds_to_{t:.1%}"] = first
    return {
        "seed": seed,
        "train_seconds": round(result.seconds - clock.paused, 1),
        # Build, fit and recalibration; steal: the whole run's, test scoring included.
        "train_cpu_seconds": round(cpu, 1),
        "steal_seconds": None if steal is None else round(steal - steal_start, 1),
        "best_epoch": result.best_epoch,
        "val_accuracy": selected["val_accuracy"],
        "test_accuracy": selected["test_accuracy"],
        **reach,
        "epochs": clock.epochs,
    }


def summarize(recipes: list[dict]) -> None:
    base = statistics.median(r["train_seconds"] for r in recipes[0]["runs"])
    base_cpu = _median_cpu(recipes[0]["runs"])
    print(
        f"\n{'recipe':<14} {'seeds':>5} {'train s':>8} {'x time':>6} {'cpu s':>6} {'x cpu':>5} {'val':>7} "
        f"{'test':>7} {'test sd':>7}  {'to 99.5%':>8} {'to 99.6%':>8}"
    )
    for r in recipes:
        runs = r["runs"]
        secs, cpu = statistics.median(x["train_seconds"] for x in runs), _median_cpu(runs)
        test = [x["test_accuracy"] for x in runs]
        r["summary"] = {
            "median_train_seconds": secs,
            "time_ratio_vs_first": round(secs / base, 3),
            "median_train_cpu_seconds": cpu,
            "cpu_ratio_vs_first": round(cpu / base_cpu, 3) if cpu and base_cpu else None,
            "mean_val_accuracy": round(statistics.mean(x["val_accuracy"] for x in runs), 5),
            "mean_test_accuracy": round(statistics.mean(test), 5),
            "test_accuracy_sd": round(statistics.stdev(test), 5) if len(test) > 1 else 0.0,
        }
        for t in THRESHOLDS:
            hits = [x[f"seconds_to_{t:.1%}"] for x in runs]
            reached = [h for h in hits if h is not None]
            r["summary"][f"median_seconds_to_{t:.1%}"] = statistics.median(reached) if reached else None
            r["summary"][f"runs_reaching_{t:.1%}"] = len(reached)

        def reach(t: float, s: dict = r["summary"], n: int = len(runs)) -> str:
            got = s[f"median_seconds_to_{t:.1%}"]
            return f"{got:.0f}s {s[f'runs_reaching_{t:.1%}']}/{n}" if got is not None else f"0/{n}"

        s = r["summary"]
        print(
            f"{r['name']:<14} {len(runs):>5} {secs:>8.0f} {s['time_ratio_vs_first']:>6.2f} "
            f"{s['median_train_cpu_seconds'] or 0:>6.0f} {s['cpu_ratio_vs_first'] or 0:>5.2f} "
            f"{s['mean_val_accuracy']:>7.2%} {s['mean_test_accuracy']:>7.2%} {s['test_accuracy_sd']:>7.2%}  "
            f"{reach(0.995):>8} {reach(0.996):>8}"
        )


def _median_cpu(runs: list[dict]) -> float | None:
    # Runs recorded before CPU seconds were measured have none.
    cpu = [x["train_cpu_seconds"] for x in runs if x.get("train_cpu_seconds")]
    return statistics.median(cpu) if cpu else None


def chart(recipes: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, r in enumerate(recipes):
        for j, run in enumerate(r["runs"]):
            ax.plot(
                [e["seconds"] for e in run["epochs"]],
                [100 * e["test_accuracy"] for e in run["epochs"]],
                marker="o",
                markersize=3,
                color=f"C{i}",
                alpha=0.8,
                label=f"{r['name']} (seeds {', '.join(str(x['seed']) for x in r['runs'])})"
                if j == 0
                else None,
            )
    for t in THRESHOLDS:
        ax.axhline(100 * t, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(98.8, 99.8)
    ax.set_xlabel("training seconds (2 vCPUs)")
    ax.set_ylabel("test accuracy after each epoch (%)")
    ax.set_title("Time to accuracy (test scored for reporting only)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=seed_list, default=[1, 2, 3], help="e.g. 1-3 or 42,1,2")
    ap.add_argument("--recipe", action=_Recipe, dest="recipes", metavar="NAME", help="start a recipe")
    ap.add_argument(
        "-S", action=_Recipe, dest="recipes", metavar="KEY=VALUE", help="override, as dvc exp run"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/time_to_accuracy"),
        help="writes OUT.json and OUT.png",
    )
    ap.add_argument("--report", action="store_true", help="only summarize and chart what OUT.json holds")
    args = ap.parse_args()
    out_json = args.out.with_suffix(".json")
    if args.report:
        recipes = [r for r in json.loads(out_json.read_text())["recipes"] if r["runs"]]
        report(recipes, args.out)
        return
    if not args.recipes:
        ap.error("give at least one --recipe NAME")

    from digits.augment import augment_copies
    from digits.splits import load_split

    out_json.parent.mkdir(parents=True, exist_ok=True)
    data = {}
    for split in ("train", "val", "test"):
        data[f"{split}_x"], data[f"{split}_y"] = load_split(f"data/prepared/{split}.npz")
    base = load_params()
    recipes, copies_by_params = [], {}
    for spec in args.recipes:
        params = with_overrides(base, spec["overrides"])
        recipes.append({**spec, "params": params.model_dump(), "runs": []})
        key = json.dumps(params.augment.model_dump(), sort_keys=True)
        if key not in copies_by_params:  # augmenting is not part of a recipe's training time
            a = params.augment
            copies_by_params[key] = augment_copies(data["train_x"], a) if a.copies else data["train_x"][None]
        # Seeds interleave across recipes, so a slow spell of the machine hits every recipe alike.
    for seed in args.seeds:
        for spec, r in zip(args.recipes, recipes, strict=True):
            params = with_overrides(base, spec["overrides"])
            copies = copies_by_params[json.dumps(params.augment.model_dump(), sort_keys=True)]
            print(f"{r['name']} seed {seed}: {' '.join(spec['overrides']) or 'params.yaml'}", flush=True)
            run = train_run(params, seed, data, copies)
            r["runs"].append(run)
            print(
                f"  {run['train_seconds']:.0f}s, best epoch {run['best_epoch']}, "
                f"val {run['val_accuracy']:.4f}, test {run['test_accuracy']:.4f}",
                flush=True,
            )
            out_json.write_text(json.dumps({"recipes": recipes}, indent=2) + "\n")  # so far
    report(recipes, args.out)


def report(recipes: list[dict], out: Path) -> None:
    summarize(recipes)
    out.with_suffix(".json").write_text(json.dumps({"recipes": recipes}, indent=2) + "\n")
    chart(recipes, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
