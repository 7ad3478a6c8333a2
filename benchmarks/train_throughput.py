"""Training images/s: the train stage's code path vs a plain Keras script on the same model and arrays.

    python benchmarks/train_throughput.py [--steps 40] [--epochs 2] [--rounds 5] [--toggles auto]
    python benchmarks/train_throughput.py --json benchmarks/results/train_throughput.json

Variants, each in its own persistent worker process (so process-wide state such as TF op determinism is
its own), built and warmed up once, then timed in alternating rounds so a busy neighbour on the shared
cores slows every variant alike; the median over rounds is reported:
  plain     keras.utils.set_random_seed + digits.models.build_model + model.fit(x_float32, y_onehot,
            batch_size=B, validation_data=...) on in-memory arrays: what a plain Keras script does
  pipeline  the train stage's path: digits.train.make_deterministic, build_model, compile_for,
            digits.train.train_model (digits.feeds' tf.data feed over the augmented uint8 copies, the recipe's
            schedule, EarlyStopping with restore_best_weights) plus a DVCLiveCallback writing to a temp
            dir, as stages/train.py does
Both train on the same `--steps` x B digits of data/augmented/train.npz for `--epochs` epochs and validate on
the same `--val` digits of data/prepared/val.npz each epoch; images/s = training digits / seconds of fit,
validation included (as metrics/train.json counts it). Images per CPU-second (user + system time of all the
worker's threads) is reported too: on a shared VM it is far less noisy than wall time. Then every preset
(seed, deep, best) through the pipeline path. With --toggles (by default only when the pipeline/plain
ratio is below 1.0; `only` skips the two phases before and takes the ratio from this one), pipeline
variants that each remove one suspect, timed alternately with pipeline and plain:
  no-determinism  keras.utils.set_random_seed only, no tf.config.experimental.enable_op_determinism
  no-dvclive      without the DVCLiveCallback
  no-callbacks    EpochCopies into model.fit with no callbacks at all (no LR schedule, early stop, DVCLive)
  float32-copies  EpochCopies over copies scaled to float32 once, so batches skip the uint8 -> float32 step
  arrays          model.fit on in-memory float32 arrays (no PyDataset), with the stage's callbacks
Needs data/prepared/{train,val}.npz and data/augmented/train.npz (`dvc repro augment`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from digits import log

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("seed", "deep", "best")
TOGGLES = ("no-determinism", "no-dvclive", "no-callbacks", "float32-copies", "arrays")


# --- worker: one variant in its own process -----------------------------------------------------------


class Worker:
    """Builds one variant's model and data once; `round()` times one bounded training run."""

    def __init__(self, variant: str, preset: str, data: Path, batch: int, epochs: int, seed: int) -> None:
        import keras

        from digits.models import build_model
        from digits.params import ModelParams, TrainParams
        from digits.shapes import one_hot, to_model_input
        from digits.train import compile_for, make_deterministic

        self.variant, self.batch, self.epochs = variant, batch, epochs
        with np.load(data) as f:
            self.copies, self.labels = f["copies"], f["labels"]
            self.val_x, self.val_y = f["val_x"], f["val_y"]
        self.params = TrainParams(epochs=epochs, batch_size=batch, seed=seed)
        if variant in ("plain", "no-determinism"):
            keras.utils.set_random_seed(seed)
        else:
            make_deterministic(seed)  # what build_and_train does before building the model
        self.model = build_model(ModelParams(preset=preset), lr=self.params.lr)
        if variant != "plain":  # the stage's optimizer, schedule and loss
            compile_for(self.model, self.params, len(self.labels))
        # The plain script's arrays: copy 0 scaled once, as a script holding float32 data in memory would.
        self.x32 = to_model_input(self.copies[0])
        self.y1h = one_hot(self.labels)
        self.val = (to_model_input(self.val_x), one_hot(self.val_y))
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=data.parent))  # removed with it
        self.rounds = 0

    def _callbacks(self) -> tuple[list, object | None]:
        if self.variant in ("no-dvclive", "no-callbacks", "plain"):
            return [], None
        from dvclive import Live
        from dvclive.keras import DVCLiveCallback

        live = Live(str(self.tmp / f"live-{self.rounds}"), dvcyaml=False, save_dvc_exp=False)
        return [DVCLiveCallback(live=live)], live

    def _stage_callbacks(self) -> list:
        import keras

        p = self.params
        return [
            keras.callbacks.LearningRateScheduler(lambda epoch: p.lr * p.lr_decay**epoch),
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", mode="max", patience=p.patience, restore_best_weights=True
            ),
        ]

    def round(self) -> dict:
        from digits.feeds import EpochCopies
        from digits.train import TrainingData, train_model

        callbacks, live = self._callbacks()  # Live() set up outside the timing, as the stage does it once
        fit = self.model.fit
        v = self.variant
        with contextlib.redirect_stdout(io.StringIO()):  # the stage's verbose=2 epoch lines
            start, cpu_start = time.perf_counter(), time.process_time()
            if v in ("plain", "arrays"):  # "arrays": plain data feeding, but the stage's callbacks
                fit(
                    self.x32,
                    self.y1h,
                    batch_size=self.batch,
                    epochs=self.epochs,
                    validation_data=self.val,
                    callbacks=[] if v == "plain" else self._stage_callbacks() + callbacks,
                    verbose=2,
                )
            elif v in ("pipeline", "no-determinism", "no-dvclive"):
                data = TrainingData(self.copies, self.labels, self.val_x, self.val_y)
                train_model(self.model, data, self.params, callbacks)
            elif v == "no-callbacks":
                data = EpochCopies(self.copies, self.labels, self.batch, self.params.seed)
                fit(data, epochs=self.epochs, validation_data=self.val, verbose=2)
            elif v == "float32-copies":
                data = Float32Copies(self.copies, self.labels, self.batch, self.params.seed)
                fit(
                    data,
                    epochs=self.epochs,
                    validation_data=self.val,
                    callbacks=self._stage_callbacks() + callbacks,
                    verbose=2,
                )
            else:
                raise ValueError(v)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if live is not None:
            live.end()
        self.rounds += 1
        images = self.epochs * len(self.labels)
        # CPU seconds (all threads) barely move when a neighbour steals the cores, unlike wall time.
        return {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "images": images,
            "images_per_s": images / seconds,
            "images_per_cpu_s": images / cpu,
        }


def _float32_copies_class():
    from digits.feeds import EpochCopies
    from digits.shapes import to_model_input

    class Float32Copies(EpochCopies):
        """EpochCopies with every copy scaled to float32 up front: batches are plain fancy indexing."""

        def __init__(self, copies: np.ndarray, labels: np.ndarray, batch_size: int, seed: int) -> None:
            super().__init__(copies, labels, batch_size, seed)
            self.scaled = to_model_input(copies)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
            return self.scaled[self.epoch % len(self.scaled)][idx], self.targets[idx]

    return Float32Copies


Float32Copies = None  # set in the worker process, where TensorFlow is imported


def serve_worker(args: argparse.Namespace) -> None:
    """Worker loop: build + warm up, print READY, then one timed round per `run` line on stdin."""
    global Float32Copies
    out = sys.stdout
    sys.stdout = sys.stderr  # TF/Keras chatter must not reach the protocol channel
    start = time.perf_counter()
    worker = Worker(args.worker, args.preset, args.data, args.batch, args.epochs, args.seed)
    if args.worker == "float32-copies":
        Float32Copies = _float32_copies_class()
    warm = worker.round()  # traces the train and test functions; not counted
    ready = {"ready": True, "setup_s": time.perf_counter() - start, "warmup": warm}
    print(json.dumps(ready), file=out, flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        print(json.dumps(worker.round()), file=out, flush=True)


# --- orchestrator -------------------------------------------------------------------------------------


class Proc:
    def __init__(self, name: str, variant: str, preset: str, args: argparse.Namespace, data: Path) -> None:
        self.name = name
        cmd = [sys.executable, __file__, "--worker", variant, "--preset", preset, "--data", str(data)]
        cmd += ["--batch", str(args.batch), "--epochs", str(args.epochs), "--seed", str(args.seed)]
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in close())
        self.p = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, cwd=ROOT
        )
        self.ready: dict | None = None

    def _read(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            self.stderr.seek(0)
            sys.exit(f"{self.name}: worker died:\n{self.stderr.read()[-3000:]}")
        return json.loads(line)

    def wait_ready(self) -> dict:
        if self.ready is None:
            self.ready = self._read()
        return self.ready

    def run(self) -> dict:
        self.p.stdin.write("run\n")
        self.p.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait(timeout=60)
        self.stderr.close()


def alternate(procs: dict[str, Proc], rounds: int, phase: str) -> dict[str, list[dict]]:
    for proc in procs.values():  # workers were started together; wait for all before timing anything
        ready = proc.wait_ready()
        log(f"{phase}: {proc.name} ready in {ready['setup_s']:.1f}s")
    runs: dict[str, list[dict]] = {name: [] for name in procs}
    for r in range(rounds):
        order = list(procs) if r % 2 == 0 else list(reversed(procs))  # ABBA: no variant always goes first
        for name in order:
            runs[name].append(procs[name].run())
            log(f"{phase} round {r + 1}/{rounds} {name:>15}: {runs[name][-1]['images_per_s']:7.0f} images/s")
    for proc in procs.values():
        proc.close()
    return runs


def median_ips(runs: list[dict], key: str = "images_per_s") -> float:
    return statistics.median(r[key] for r in runs)


def best_ratio(runs: dict[str, list[dict]]) -> float:
    """Pipeline/plain over each variant's fastest round: on a shared VM whose speed changes in steps
    (the same round taking 5, 8 or 10 s), the rounds that ran at full speed compare like with like."""
    best = {k: max(r["images_per_s"] for r in runs[k]) for k in ("pipeline", "plain")}
    return best["pipeline"] / best["plain"]


def start_batch(specs: list[tuple[str, str, str]], args: argparse.Namespace, data: Path) -> dict[str, Proc]:
    # Start at most two at a time (two cores): imports and tracing of a third would only queue.
    procs: dict[str, Proc] = {}
    for name, variant, preset in specs:
        procs[name] = Proc(name, variant, preset, args, data)
        if len(procs) % 2 == 0:
            for p in procs.values():
                p.wait_ready()
    return procs


def write_subset(args: argparse.Namespace, path: Path) -> dict:
    from digits import paths
    from digits.splits import load_split

    n = args.steps * args.batch  # whole batches only, so no ragged last batch retraces anything
    args.val = args.val or n // 9  # the stage validates 6,000 digits per 54,000 trained
    copies, labels = load_split(ROOT / paths.AUGMENTED)  # the digits only: no "not a digit" class
    val_x, val_y = load_split(ROOT / paths.prepared("val"))
    np.savez(
        path,
        copies=np.ascontiguousarray(copies[:, :n]),
        labels=labels[:n],
        val_x=val_x[: args.val],
        val_y=val_y[: args.val],
    )
    return {"train_digits": n, "copies": len(copies), "val_digits": min(args.val, len(val_y))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=None, choices=PRESETS, help="default: params.yaml's model.preset")
    parser.add_argument("--batch", type=int, default=None, help="default: params.yaml's train.batch_size")
    parser.add_argument("--steps", type=int, default=40, help="batches per epoch (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed round (default: %(default)s)")
    parser.add_argument(
        "--val", type=int, help="validation digits (default: the stage's 1:9 of the train digits)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--preset-rounds", type=int, default=3, help="rounds for the per-preset phase")
    parser.add_argument("--toggles", choices=["auto", "always", "never", "only"], default="auto")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every number here")
    parser.add_argument("--worker", choices=("plain", "pipeline", *TOGGLES), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return serve_worker(args)

    from digits.params import load_params

    params = load_params(ROOT / "params.yaml")
    args.preset = args.preset or params.model.preset
    args.batch = args.batch or params.train.batch_size
    started = time.perf_counter()
    report: dict = {"config": {}, "phases": {}}
    with tempfile.TemporaryDirectory(prefix="digits-train-bench-") as tmp:
        data = Path(tmp) / "subset.npz"
        sizes = write_subset(args, data)
        report["config"] = {
            **sizes,
            **{k: v for k, v in vars(args).items() if k not in ("worker", "data", "json")},
        }
        log(f"config: {json.dumps(report['config'])}")

        # 1. pipeline vs plain, same preset, same digits, same batch size.
        if args.toggles != "only":
            specs = [("plain", "plain", args.preset), ("pipeline", "pipeline", args.preset)]
            runs = alternate(start_batch(specs, args, data), args.rounds, "pipeline-vs-plain")
            plain, pipe = median_ips(runs["plain"]), median_ips(runs["pipeline"])
            cpu = {v: median_ips(runs[v], "images_per_cpu_s") for v in ("plain", "pipeline")}
            report["phases"]["pipeline_vs_plain"] = {
                "runs": runs,
                "plain": plain,
                "pipeline": pipe,
                "per_cpu_s": cpu,
            }
            report["ratio"] = pipe / plain
            report["cpu_ratio"] = cpu["pipeline"] / cpu["plain"]
            report["ratio_best_round"] = best_ratio(runs)

            # 2. every preset through the pipeline path.
            specs = [(p, "pipeline", p) for p in PRESETS]
            runs = alternate(start_batch(specs, args, data), args.preset_rounds, "presets")
            report["phases"]["presets"] = {"runs": runs, "median": {p: median_ips(runs[p]) for p in PRESETS}}

        # 3. where the overhead is: one suspect removed at a time.
        if args.toggles in ("always", "only") or (args.toggles == "auto" and report["ratio"] < 1.0):
            specs = [("pipeline", "pipeline", args.preset), ("plain", "plain", args.preset)]
            specs += [(t, t, args.preset) for t in TOGGLES]
            runs = alternate(start_batch(specs, args, data), args.preset_rounds, "toggles")
            med = {name: median_ips(r) for name, r in runs.items()}
            cpu = {name: median_ips(r, "images_per_cpu_s") for name, r in runs.items()}
            report["phases"]["toggles"] = {
                "runs": runs,
                "median": med,
                "median_per_cpu_s": cpu,
                "gain_vs_pipeline": {t: med[t] / med["pipeline"] - 1 for t in TOGGLES},
            }
            if args.toggles == "only":
                plain, pipe = med["plain"], med["pipeline"]
                report["ratio"] = pipe / plain
                report["ratio_best_round"] = best_ratio(runs)
                report["cpu_ratio"] = cpu["pipeline"] / cpu["plain"]
    report["seconds"] = time.perf_counter() - started

    c = report["config"]
    print(
        f"\n{c['train_digits']} digits x {args.epochs} epochs per round "
        f"(batch {args.batch}, {args.steps} steps), "
        f"{c['val_digits']} validation digits per epoch; median images/s over alternating rounds\n"
    )
    print("| variant | preset | images/s | vs plain | images per CPU-second | vs plain |")
    print("|---|---|---|---|---|---|")
    if "pipeline_vs_plain" in report["phases"]:
        cpu = report["phases"]["pipeline_vs_plain"]["per_cpu_s"]
        print(f"| plain Keras (arrays) | {args.preset} | {plain:.0f} | 1.00 | {cpu['plain']:.0f} | 1.00 |")
        print(
            f"| pipeline (train stage path) | {args.preset} | {pipe:.0f} | {report['ratio']:.2f} "
            f"| {cpu['pipeline']:.0f} | {report['cpu_ratio']:.2f} |"
        )
    for p, v in report["phases"].get("presets", {}).get("median", {}).items():
        print(f"| pipeline | {p} | {v:.0f} | |")
    if "toggles" in report["phases"]:
        t = report["phases"]["toggles"]
        print(f"\ntoggles (each removes one thing from the pipeline path), preset {args.preset}\n")
        print("| variant | images/s | vs pipeline | vs plain | images/CPU-s | vs pipeline | vs plain |")
        print("|---|---|---|---|---|---|---|")
        for name, v in t["median"].items():
            vs_pipe, vs_plain = v / t["median"]["pipeline"], v / t["median"]["plain"]
            c = t["median_per_cpu_s"][name]
            c_pipe, c_plain = c / t["median_per_cpu_s"]["pipeline"], c / t["median_per_cpu_s"]["plain"]
            print(f"| {name} | {v:.0f} | {vs_pipe:.2f} | {vs_plain:.2f} ", end="")
            print(f"| {c:.0f} | {c_pipe:.2f} | {c_plain:.2f} |")
    print(
        f"\nratio pipeline/plain {report['ratio']:.2f} of medians, {report['ratio_best_round']:.2f} of best "
        f"rounds (goal >= 1.0); per CPU-second {report.get('cpu_ratio', float('nan')):.2f}; "
        f"{report['seconds']:.0f}s in all"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
