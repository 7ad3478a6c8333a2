"""Inference runtimes compared on the MNIST test set: latency, throughput, start-up, memory and parity.

    python benchmarks/inference.py [--keras models/model.keras] [--tflite models/serving/model.tflite]
        [--repeat 3]

Runtimes, each measured in a fresh process (so import time and memory are its own):
  keras-eager   model(x, training=False) on the .keras file
  tf-function   digits.runtime.KerasPredictor: the model through a tf.function (the reference for parity)
  litert        digits.runtime.LiteRTPredictor on the .tflite file (no TensorFlow imported)
  onnxruntime   only with --onnx FILE and the onnxruntime package installed
Per run: import+load (seconds from importing the runtime to a warmed-up model), RSS after load (MiB),
single-image latency p50/p99 over --calls calls after 50 warm-up calls, and images/s over the whole test
set in batches of --batch (best of 3 passes). Parity: the argmax and the probabilities of the test set
(batches and single calls) against tf-function. Table cells are medians over --repeat runs.
Without --tflite, the .keras file is exported to a temporary .tflite first (digits.export).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("keras-eager", "tf-function", "litert", "onnxruntime")
REFERENCE = "tf-function"
WARM_UP = 50


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak, where /proc is missing


def load(runtime: str, path: Path):
    """The runtime's (n, 28, 28) float32 -> (n, 10) callable, loaded and warmed up."""
    if runtime == "keras-eager":
        from digits.models import load_model

        model = load_model(path)
        model(np.zeros((1, 28, 28, 1), np.float32), training=False)
        return lambda x: np.asarray(model(x[..., None], training=False))
    if runtime in ("tf-function", "litert"):
        from digits.runtime import KerasPredictor, LiteRTPredictor

        return (KerasPredictor if runtime == "tf-function" else LiteRTPredictor)(path)
    if runtime == "onnxruntime":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        session.run(None, {name: np.zeros((1, 28, 28, 1), np.float32)})
        return lambda x: session.run(None, {name: x[..., None]})[0]
    raise ValueError(runtime)


def worker(runtime: str, path: Path, data: Path, calls: int, batch: int, out: Path) -> None:
    """Measure one runtime in this process; numbers as JSON on stdout, test-set probabilities to `out`."""
    start = time.perf_counter()
    predict = load(runtime, path)
    load_s = time.perf_counter() - start
    rss = rss_mib()
    tensorflow_imported = "tensorflow" in sys.modules

    from digits.shapes import to_model_input

    with np.load(data) as f:  # the split's uint8 digits; np.load rather than load_split: no scikit-learn
        images = to_model_input(f["x"])
    singles = np.empty((calls, 10), np.float32)
    times = np.empty(calls)
    for i in range(WARM_UP):
        predict(images[i : i + 1])
    for i in range(calls):
        x = images[i % len(images) : i % len(images) + 1]
        t = time.perf_counter()
        singles[i] = predict(x)[0]
        times[i] = time.perf_counter() - t

    passes = []
    for _ in range(3):
        t = time.perf_counter()
        probs = np.concatenate([predict(images[i : i + batch]) for i in range(0, len(images), batch)])
        passes.append(len(images) / (time.perf_counter() - t))
    np.savez(out, batch=probs, singles=singles)
    result = {
        "runtime": runtime,
        "load_s": load_s,
        "rss_mib": rss,
        "tensorflow_imported": tensorflow_imported,
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p99_ms": float(np.percentile(times, 99) * 1e3),
        "images_per_s": max(passes),
    }
    print(json.dumps(result))


def run_worker(runtime: str, path: Path, args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", runtime, "--model", str(path), "--data", str(args.data)]
    cmd += ["--calls", str(args.calls), "--batch", str(args.batch), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"{runtime} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keras", type=Path, default=ROOT / "models/model.keras")
    parser.add_argument("--tflite", type=Path, help="default: export --keras to a temporary file")
    parser.add_argument("--onnx", type=Path, help="also measure onnxruntime on this file")
    parser.add_argument("--data", type=Path, default=ROOT / "data/prepared/test.npz")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument("--calls", type=int, default=1000, help="single-image calls per run")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3, help="runs per runtime, interleaved")
    parser.add_argument("--json", type=Path, help="write every run's numbers and the parity here")
    parser.add_argument("--worker", choices=RUNTIMES, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.model, args.data, args.calls, args.batch, args.out)

    runtimes = [r for r in args.runtimes if r != "onnxruntime" or args.onnx]
    if REFERENCE not in runtimes:
        runtimes.insert(0, REFERENCE)
    with tempfile.TemporaryDirectory(prefix="digits-bench-") as tmp:
        tmp = Path(tmp)
        tflite = args.tflite
        if "litert" in runtimes and tflite is None:
            from digits.export import export_tflite

            tflite = export_tflite(args.keras, tmp / "model.tflite").path
        paths = {
            "keras-eager": args.keras,
            "tf-function": args.keras,
            "litert": tflite,
            "onnxruntime": args.onnx,
        }
        runs: dict[str, list[dict]] = {r: [] for r in runtimes}
        for i in range(args.repeat):
            for runtime in runtimes:  # interleaved, so a busy spell on shared cores hits every runtime
                runs[runtime].append(run_worker(runtime, paths[runtime], args, tmp / f"{runtime}-{i}.npz"))
                print(
                    f"run {i + 1}/{args.repeat} {runtime}: {json.dumps(runs[runtime][-1])}", file=sys.stderr
                )

        with np.load(args.data) as f:
            labels = f["y"]
        with np.load(tmp / f"{REFERENCE}-0.npz") as f:
            ref_batch, ref_singles = f["batch"], f["singles"]
        parity = {}
        for runtime in runtimes:
            with np.load(tmp / f"{runtime}-0.npz") as f:
                batch, singles = f["batch"], f["singles"]
            parity[runtime] = {
                "argmax_differs": int((batch.argmax(1) != ref_batch.argmax(1)).sum())
                + int((singles.argmax(1) != ref_singles.argmax(1)).sum()),
                "max_abs_diff": float(
                    max(np.abs(batch - ref_batch).max(), np.abs(singles - ref_singles).max())
                ),
                "accuracy": float((batch.argmax(1) == labels).mean()),
            }

    cols = ["p50_ms", "p99_ms", "images_per_s", "load_s", "rss_mib"]
    print(
        f"{len(labels)} test digits, {args.calls} single calls, batches of {args.batch}, "
        f"median of {args.repeat} runs; parity against {REFERENCE}\n"
    )
    print(
        "| runtime | 1 image p50 ms | p99 ms | batch images/s | import+load s | RSS MiB | TF imported "
        "| argmax differs | max abs Δprob | accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for runtime in runtimes:
        med = {c: statistics.median(r[c] for r in runs[runtime]) for c in cols}
        p = parity[runtime]
        print(
            f"| {runtime} | {med['p50_ms']:.3f} | {med['p99_ms']:.3f} | {med['images_per_s']:.0f} "
            f"| {med['load_s']:.2f} | {med['rss_mib']:.0f} | {runs[runtime][0]['tensorflow_imported']} "
            f"| {p['argmax_differs']} | {p['max_abs_diff']:.1e} | {p['accuracy']:.2%} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "parity": parity}, indent=2) + "\n")


if __name__ == "__main__":
    main()
