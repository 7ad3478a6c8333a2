"""Inference runtimes compared on the MNIST test set: latency, throughput, start-up, memory and parity.

    python benchmarks/inference.py [--keras models/model.keras] [--bundle models/serving] [--repeat 3]
    python benchmarks/inference.py --runtimes litert litert-int8 --kernels   # float32 vs int8, and why

Runtimes, each measured in a fresh process (so import time and memory are its own):
  keras-eager   model(x, training=False) on the .keras file
  tf-function   digits.runtime.KerasPredictor: the model through a tf.function (the reference for parity)
  litert        digits.runtime.LiteRTPredictor on the bundle's float32 model.tflite (no TensorFlow imported)
  litert-int8   the same on the bundle's model_int8.tflite (int8 weights and activations)
  onnxruntime   only with --onnx FILE and the onnxruntime package installed
Per run: import+load (seconds from importing the runtime to a warmed-up model), RSS after load (MiB),
single-image latency p50/p99 over --calls calls after 50 warm-up calls, and images/s over the whole test
set in batches of each --batch size (best of 3 passes). Parity: the argmax and the probabilities of the
test set (batches and single calls) against tf-function, and the int8 file's argmax against the float32
file's. Table cells are medians over --repeat runs, interleaved. The share of the CPUs that other
processes used during the runs is reported too: take timings on a quiet machine (no training or
test run beside them), and check that share.
Without --bundle, the .keras file is exported to a temporary bundle first (digits.export, with the int8
file calibrated and checked on data/prepared and params.yaml's export section).
--kernels: which kernels run. LiteRT's delegation (which ops the XNNPACK delegate took), and, where
`perf` works, one more run of each LiteRT runtime under `perf record` and its hottest functions
(XNNPACK's microkernel names say the instruction set, e.g. ..._avx512vnni).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("keras-eager", "tf-function", "litert", "litert-int8", "onnxruntime")
REFERENCE = "tf-function"
WARM_UP = 50
LITERT = ("litert", "litert-int8")


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def own_cpu_s() -> float:
    """CPU seconds used by this process and its finished children (the workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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
    if runtime in ("tf-function", *LITERT):
        from digits.runtime import KerasPredictor, LiteRTPredictor

        return (KerasPredictor if runtime == "tf-function" else LiteRTPredictor)(path)
    if runtime == "onnxruntime":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        session.run(None, {name: np.zeros((1, 28, 28, 1), np.float32)})
        return lambda x: session.run(None, {name: x[..., None]})[0]
    raise ValueError(runtime)


def delegation(path: Path) -> dict:
    """Which ops of the .tflite file LiteRT hands to its default delegate (XNNPACK) and which run on its
    own kernels, as an interpreter built like digits.runtime's sees them."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))  # delegation does not depend on the threads
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()  # the only view of the delegated graph the Python API gives
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    producers = {int(t): op for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    delegated: set[int] = set()
    for node in delegates:  # a delegate node replaced the ops between its inputs and outputs
        stop, todo = {int(t) for t in node["inputs"]}, [int(t) for t in node["outputs"]]
        while todo:
            tensor = todo.pop()
            op = producers.get(tensor)
            if tensor in stop or op is None or op["index"] in delegated:
                continue
            delegated.add(op["index"])
            todo += [int(t) for t in op["inputs"]]
    own = [op["op_name"] for op in ops if op["op_name"] != "DELEGATE" and op["index"] not in delegated]
    return {
        "delegate_partitions": len(delegates),
        "delegated": sorted(op["op_name"] for op in ops if op["index"] in delegated),
        "litert_kernels": own,
    }


def worker(runtime: str, path: Path, data: Path, calls: int, batches: list[int], out: Path) -> None:
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

    images_per_s = {}
    for batch in batches:
        passes = []
        for _ in range(3):
            t = time.perf_counter()
            probs = np.concatenate([predict(images[i : i + batch]) for i in range(0, len(images), batch)])
            passes.append(len(images) / (time.perf_counter() - t))
        images_per_s[str(batch)] = max(passes)
    np.savez(out, batch=probs, singles=singles)  # the last batch size's
    result = {
        "runtime": runtime,
        "load_s": load_s,
        "rss_mib": rss,
        "tensorflow_imported": tensorflow_imported,
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p99_ms": float(np.percentile(times, 99) * 1e3),
        "images_per_s": images_per_s,
    }
    if runtime in LITERT:
        result["delegation"] = delegation(path)
    print(json.dumps(result))


def worker_command(runtime: str, path: Path, args: argparse.Namespace, out: Path) -> list[str]:
    cmd = [sys.executable, __file__, "--worker", runtime, "--model", str(path), "--data", str(args.data)]
    return [*cmd, "--calls", str(args.calls), "--batch", *map(str, args.batch), "--out", str(out)]


def run_worker(runtime: str, path: Path, args: argparse.Namespace, out: Path) -> dict:
    done = subprocess.run(worker_command(runtime, path, args, out), capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"{runtime} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def hottest_functions(runtime: str, path: Path, args: argparse.Namespace, tmp: Path, top: int = 5) -> list:
    """One more worker run under `perf record`: its `top` hottest functions, [share %, name]; [] without
    a working perf (not installed, or perf_event_paranoid forbids it)."""
    data = tmp / f"{runtime}.perf"
    record = ["perf", "record", "-q", "-F", "2000", "-o", str(data), "--"]
    try:
        subprocess.run(
            record + worker_command(runtime, path, args, tmp / "perf.npz"),
            capture_output=True,
            check=True,
            cwd=ROOT,
        )
        report = subprocess.run(
            ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "symbol"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"perf failed for {runtime}: {e}", file=sys.stderr)
        return []
    rows = []
    for line in report.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].endswith("%") and parts[1] == "[.]":
            rows.append([float(parts[0].rstrip("%")), parts[2]])
    return rows[:top]


def bundle_for(args: argparse.Namespace, tmp: Path) -> Path:
    """--bundle, or the .keras file exported to a temporary bundle as the export stage does."""
    if args.bundle:
        return args.bundle
    from digits.export import Int8Inputs, ParitySet, export_bundle, representative_pictures
    from digits.params import load_params
    from digits.splits import load_split

    params = load_params(ROOT / "params.yaml").export
    train, _ = load_split(ROOT / "data/prepared/train.npz")
    val, test = (ParitySet(*load_split(ROOT / f"data/prepared/{s}.npz")) for s in ("val", "test"))
    representative = representative_pictures(train, None, params)
    inputs = Int8Inputs(representative, val, test, params)
    return export_bundle(args.keras, tmp / "serving", inputs).float32.path.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keras", type=Path, default=ROOT / "models/model.keras")
    parser.add_argument(
        "--bundle", type=Path, help="a serving bundle folder (default: export --keras to a temporary one)"
    )
    parser.add_argument("--onnx", type=Path, help="also measure onnxruntime on this file")
    parser.add_argument("--data", type=Path, default=ROOT / "data/prepared/test.npz")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument("--calls", type=int, default=1000, help="single-image calls per run")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 256, 1024], help="batch sizes")
    parser.add_argument("--kernels", action="store_true", help="also profile LiteRT's runs with perf")
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
        bundle = bundle_for(args, tmp) if set(LITERT) & set(runtimes) else None
        from digits.runtime import BUNDLE_INT8, BUNDLE_MODEL

        paths = {
            "keras-eager": args.keras,
            "tf-function": args.keras,
            "litert": bundle and bundle / BUNDLE_MODEL,
            "litert-int8": bundle and bundle / BUNDLE_INT8,
            "onnxruntime": args.onnx,
        }
        runs: dict[str, list[dict]] = {r: [] for r in runtimes}
        busy, total, own = *cpu_jiffies(), own_cpu_s()
        for i in range(args.repeat):
            for runtime in runtimes:  # interleaved, so a busy spell on shared cores hits every runtime
                runs[runtime].append(run_worker(runtime, paths[runtime], args, tmp / f"{runtime}-{i}.npz"))
                print(
                    f"run {i + 1}/{args.repeat} {runtime}: {json.dumps(runs[runtime][-1])}", file=sys.stderr
                )
        busy, total, own = cpu_jiffies()[0] - busy, cpu_jiffies()[1] - total, own_cpu_s() - own
        ticks = os.sysconf("SC_CLK_TCK")
        # Other processes' share of all CPUs while the runs ran: near 0 means the timings are this code's.
        others = max(0.0, (busy / ticks - own) / (total / ticks))
        kernels = {
            r: hottest_functions(r, paths[r], args, tmp) for r in runtimes if args.kernels and r in LITERT
        }

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

        if set(LITERT) <= set(runtimes):  # the export stage's parity figure, on the same runs
            with np.load(tmp / "litert-0.npz") as f, np.load(tmp / "litert-int8-0.npz") as g:
                parity["litert-int8"]["changed_vs_float32"] = int(
                    (f["batch"].argmax(1) != g["batch"].argmax(1)).sum()
                )

    cols = ["p50_ms", "p99_ms", "load_s", "rss_mib"]
    print(
        f"{len(labels)} test digits, {args.calls} single calls, median of {args.repeat} runs, interleaved; "
        f"parity against {REFERENCE} (batches and single calls); other processes used {others:.1%} of the "
        f"CPUs meanwhile\n"
    )
    sizes = [str(b) for b in args.batch]
    print(
        "| runtime | 1 image p50 ms | p99 ms | "
        + " | ".join(f"batch {b} images/s" for b in sizes)
        + " | import+load s | RSS MiB | TF imported | argmax differs | max abs Δprob | accuracy |"
    )
    print("|---" * (9 + len(sizes)) + "|")
    for runtime in runtimes:
        med = {c: statistics.median(r[c] for r in runs[runtime]) for c in cols}
        rates = [statistics.median(r["images_per_s"][b] for r in runs[runtime]) for b in sizes]
        p = parity[runtime]
        print(
            f"| {runtime} | {med['p50_ms']:.3f} | {med['p99_ms']:.3f} | "
            + " | ".join(f"{x:,.0f}" for x in rates)
            + f" | {med['load_s']:.2f} | {med['rss_mib']:.0f} | {runs[runtime][0]['tensorflow_imported']} "
            f"| {p['argmax_differs']} | {p['max_abs_diff']:.1e} | {p['accuracy']:.2%} |"
        )
    if "litert-int8" in parity and "changed_vs_float32" in parity["litert-int8"]:
        changed = parity["litert-int8"]["changed_vs_float32"]
        print(f"\nint8 vs float32 LiteRT: {changed} of {len(labels)} test predictions changed")
    for runtime in (r for r in LITERT if r in runs):
        d = runs[runtime][0]["delegation"]
        print(
            f"{runtime}: XNNPACK runs {len(d['delegated'])} ops in {d['delegate_partitions']} partitions "
            f"({', '.join(sorted(set(d['delegated'])))}); LiteRT's own kernels: "
            f"{', '.join(d['litert_kernels']) or 'none'}"
        )
        for share, name in kernels.get(runtime, []):
            print(f"  {share:5.1f}%  {name}")
    if args.json:
        report = {"runs": runs, "parity": parity, "other_cpu_share": others, "hottest_functions": kernels}
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
