"""Did two full pipeline runs compute the same thing? For a refactor: `dvc repro -f` before and after.

    python benchmarks/compare_runs.py BEFORE AFTER

BEFORE and AFTER are two checkouts that each ran `dvc repro -f` on the same machine (run each with
PYTHONPATH=<checkout>, so the editable install does not import this one). Compared: the weights of every
.keras model (the file holds its save date), the serving bundle's .tflite files byte for byte, model.json
apart from `source` (the .keras file's hash), models/calibration.json, every metrics file apart from timing
keys, the plots' CSV files, and the md5 of every data/ output in dvc.lock. Exits 1 if anything differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml

TIMING = {"train_seconds", "images_per_second", "seconds"}


def strip_timing(value: object) -> object:
    if isinstance(value, dict):
        return {k: strip_timing(v) for k, v in value.items() if k not in TIMING}
    return value


def data_md5(run: Path) -> dict[str, str]:
    lock = yaml.safe_load((run / "dvc.lock").read_text())["stages"]
    return {
        o["path"]: o["md5"] for s in lock.values() for o in s.get("outs", []) if o["path"].startswith("data/")
    }


def compare(before: Path, after: Path) -> list[tuple[str, bool]]:
    import keras

    checks = []
    for model in sorted(before.glob("models/**/*.keras")):
        rel = model.relative_to(before)
        a, b = (keras.saving.load_model(d / rel, compile=False).get_weights() for d in (before, after))
        checks.append((f"{rel}: weights", len(a) == len(b) and all(map(np.array_equal, a, b))))
    for rel in ("models/serving/model.tflite", "models/serving/model_int8.tflite", "models/calibration.json"):
        if (before / rel).exists():
            checks.append((f"{rel}: bytes", (before / rel).read_bytes() == (after / rel).read_bytes()))
    meta = [json.loads((d / "models/serving/model.json").read_text()) for d in (before, after)]
    differ = sorted(
        k for k in meta[0].keys() | meta[1].keys() if k != "source" and meta[0].get(k) != meta[1].get(k)
    )
    checks.append(
        (
            f"models/serving/model.json apart from source{': differs in ' + str(differ) if differ else ''}",
            not differ,
        )
    )
    for path in sorted(before.glob("metrics/*.json")):
        other = after / path.relative_to(before)
        same = strip_timing(json.loads(path.read_text())) == strip_timing(json.loads(other.read_text()))
        checks.append((f"{path.relative_to(before)} apart from timing", same))
    for path in sorted(before.glob("plots/**/*.csv")):
        other = after / path.relative_to(before)
        checks.append(
            (
                f"{path.relative_to(before)}: bytes",
                other.is_file() and other.read_bytes() == path.read_bytes(),
            )
        )
    ours, theirs = data_md5(before), data_md5(after)
    checks += [(f"{path}: md5 in dvc.lock", md5 == theirs.get(path)) for path, md5 in sorted(ours.items())]
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    checks = compare(args.before, args.after)
    for name, same in checks:
        print(f"{'same     ' if same else 'DIFFERENT'}  {name}")
    return 0 if all(same for _, same in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
