"""Seed spread and ensembles at full length: one recipe, N seeds, single-model and ensemble test accuracy.

What `ensemble.seeds` does in the pipeline, at a scale a 2-core CPU cannot afford (15 `best` CNNs x 45
epochs), runnable on any Keras backend, e.g. JAX on a GPU. Same library, same data, same selection on the
validation split; no DVC. Needs data/prepared/ and data/negatives/ (`dvc repro negatives`): it trains the
stage's 11-class model (each epoch's share of non-digits, batch norm recalibrated; `stage_data`). Augments
in-process with the `augment` params, so every seed trains on the same augmented copies, as pipeline
members do (`--augment-per-seed` gives each seed its own copies instead, to measure what that diversity is
worth).

    python benchmarks/seeds.py --seeds 1-15 --out benchmarks/results/seeds-best \\
        -S model.preset=best -S train.epochs=45 -S train.lr=0.001 -S train.lr_decay=0.95 -S augment.copies=45

Each seed writes <out>/seed-<s>.npz (validation and test softmax + its training summary), so several
processes can share the seeds of one run; `--report` only combines what is in <out> and prints the table:
single-model test accuracy per seed, mean +- std, and the softmax average of the first k seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digits.params import Params, load_params, parse_params

ROOT = Path(__file__).resolve().parent.parent

if TYPE_CHECKING:
    from digits.train import TrainingData


def seed_list(text: str) -> list[int]:
    """'1-5' or '1,3,7' or '1-3,9'."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def with_overrides(params: Params, overrides: list[str]) -> Params:
    """`dvc exp run -S key=value` semantics on the validated params."""
    raw = params.model_dump()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"-S {item!r}: expected key=value")
        *path, last = key.split(".")
        node = raw
        for part in path:
            node = node[part]
        node[last] = yaml.safe_load(value)
    return parse_params(raw, "params.yaml with -S overrides")


def stage_data(
    params: Params,
    train_x: np.ndarray,
    train_y: np.ndarray,
    copies: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
) -> TrainingData:
    """What the train stage trains on (digits.train.load_training_data), from copies augmented here: each
    copy followed by its share of the stage's non-digits, and with any non-digits the batch-norm
    recalibration pictures, so the model is the 11-class one the pipeline ships. The non-digits are
    data/negatives/train.npz (`dvc repro negatives`) when the recipe's params for them (`negatives` and
    the degradations in `augment`) are params.yaml's, else drawn here by the stage's code for the recipe,
    as they are for a count above the file's; `-S negatives.train=0` trains without them, and a count
    below the file's takes that many of its pictures, family by family (`fewer_non_digits`)."""
    from digits import paths
    from digits.negatives import draw_splits
    from digits.splits import load_split
    from digits.train import TrainingData, batch_norm_images, with_negatives

    non_digits = train_x[:0]
    if params.negatives.train:
        if negatives_params(params) == negatives_params(load_params()):
            non_digits, families = load_split(paths.negatives("train"))
        if params.negatives.train > len(non_digits):  # the recipe's own, or more than the file holds
            non_digits = draw_splits(params, ("train",))["train"][0]
        elif params.negatives.train < len(non_digits):
            non_digits = fewer_non_digits(non_digits, families, params.negatives.train, params.negatives.seed)
    mixed, labels = with_negatives(copies, train_y, non_digits)
    bn = params.train.bn_digits if len(non_digits) else 0
    bn_images = batch_norm_images(train_x[:bn], mixed, len(train_y)) if bn else None
    return TrainingData(mixed, labels, val_x, val_y, bn_images)


def negatives_params(params: Params) -> list:
    """The params the negatives stage declares in dvc.yaml, but the count (`fewer_non_digits` takes fewer)."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["negatives"]
    dump, values = params.model_dump(), []
    for key in stage["params"]:
        node = dump
        for part in key.split("."):
            node = node[part]
        values.append({k: v for k, v in node.items() if k != "train"} if key == "negatives" else node)
    return values


def fewer_non_digits(images: np.ndarray, families: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n of the negatives stage's training non-digits, as many of each family as the stage would draw for
    n (a seeded choice, file order kept). Each picture is an independent draw of its family, so this is the
    stage's set for `negatives.train=n` in distribution, without rerunning the stage (not its bytes)."""
    from digits.negatives import spread

    present = np.unique(families)
    counts = spread(n, len(present))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(families == f))[:c] for f, c in zip(present, counts, strict=True)]
    return images[np.sort(np.concatenate(keep))]


def train_seeds(params: Params, seeds: list[int], out: Path, augment_per_seed: bool, refit_all: bool) -> None:
    from digits.augment import augment_copies
    from digits.evaluate import tta_probs
    from digits.models import predict_probs
    from digits.splits import load_split
    from digits.train import build_and_train

    train_x, train_y = load_split("data/prepared/train.npz")
    val_x, val_y = load_split("data/prepared/val.npz")
    test_x, _ = load_split("data/prepared/test.npz")
    if refit_all:  # all 60,000 training digits; the validation digits are seen in training too
        train_x, train_y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])

    def copies_for(augment_seed: int) -> np.ndarray:
        if not params.augment.copies:
            return train_x[None]
        return augment_copies(train_x, params.augment.model_copy(update={"seed": augment_seed}))

    copies = None if augment_per_seed else copies_for(params.augment.seed)
    for seed in seeds:
        if augment_per_seed:
            copies = copies_for(seed)
        result = build_and_train(
            params.model,
            params.train.model_copy(update={"seed": seed}),
            stage_data(params, train_x, train_y, copies, val_x, val_y),
        )
        summary = result.summary()
        np.savez(
            out / f"seed-{seed}.npz",
            val=predict_probs(result.model, val_x),
            test=predict_probs(result.model, test_x),
            test_tta=tta_probs(partial(predict_probs, result.model), test_x, params.evaluate),
            summary=json.dumps(summary),
        )
        print(f"seed {seed}: {json.dumps(summary)}", flush=True)


def report(out: Path) -> dict:
    from digits.splits import load_split

    _, val_y = load_split("data/prepared/val.npz")
    _, test_y = load_split("data/prepared/test.npz")
    files = sorted(out.glob("seed-*.npz"), key=lambda f: int(f.stem.split("-")[1]))
    if not files:
        raise SystemExit(f"{out}: no seed-*.npz files")
    runs = [np.load(f) for f in files]
    seeds = [int(f.stem.split("-")[1]) for f in files]
    single = np.array([np.mean(r["test"].argmax(1) == test_y) for r in runs])
    # Test-time augmentation (evaluate.tta_shift / tta_rotation views), in runs that recorded it.
    tta = all("test_tta" in r for r in runs)
    single_tta = np.array([np.mean(r["test_tta"].argmax(1) == test_y) for r in runs]) if tta else None
    rows = []
    print(f"{'seed':>5} {'val acc':>8} {'test acc':>9} {'with TTA':>9} {'epochs':>7} {'train s':>8}")
    for i, (seed, r, acc) in enumerate(zip(seeds, runs, single, strict=True)):
        s = json.loads(str(r["summary"]))
        rows.append({"seed": seed, "test_accuracy": float(acc), **s})
        with_tta = f"{single_tta[i]:>9.4f}" if tta else f"{'-':>9}"
        if tta:
            rows[-1]["tta_test_accuracy"] = float(single_tta[i])
        val, epochs, secs = s["best_val_accuracy"], s["epochs_run"], s["train_seconds"]
        print(f"{seed:>5} {val:>8.4f} {acc:>9.4f} {with_tta} {epochs:>7} {secs:>7.0f}s")
    val_sum, test_sum = np.zeros_like(runs[0]["val"]), np.zeros_like(runs[0]["test"])
    tta_sum = np.zeros_like(test_sum)
    curve = []
    for k, r in enumerate(runs, 1):
        val_sum += r["val"]
        test_sum += r["test"]
        curve.append(
            {
                "members": k,
                "val_accuracy": float(np.mean(val_sum.argmax(1) == val_y)),
                "test_accuracy": float(np.mean(test_sum.argmax(1) == test_y)),
            }
        )
        if tta:
            tta_sum += r["test_tta"]
            curve[-1]["tta_test_accuracy"] = float(np.mean(tta_sum.argmax(1) == test_y))
    std = single.std(ddof=1) if len(single) > 1 else 0.0
    print(
        f"single models: test accuracy mean {single.mean():.4%} +- {std:.4%} "
        f"(min {single.min():.4%}, max {single.max():.4%}, n={len(single)})"
    )
    if tta:
        print(f"single models with TTA: test accuracy mean {single_tta.mean():.4%}")
    print("ensemble of the first k seeds (softmax average):")
    for c in curve:
        with_tta = f"  with TTA {c['tta_test_accuracy']:.4%}" if tta else ""
        print(f"  k={c['members']:>2}: val {c['val_accuracy']:.4%}  test {c['test_accuracy']:.4%}{with_tta}")
    summary = {
        "single": rows,
        "single_test_mean": float(single.mean()),
        "single_test_std": float(std),
        **({"single_tta_test_mean": float(single_tta.mean())} if tta else {}),
        "ensemble_test_accuracy": curve[-1]["test_accuracy"],  # all the seeds' softmax average
        "ensemble": curve,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=seed_list, default=[1, 2, 3], help="e.g. 1-15 or 1,4,9")
    ap.add_argument("--out", type=Path, required=True, help="folder for seed-<s>.npz and summary.json")
    ap.add_argument("-S", dest="overrides", action="append", default=[], help="key=value, as dvc exp run -S")
    ap.add_argument("--report", action="store_true", help="only combine the seeds already in --out")
    ap.add_argument(
        "--augment-per-seed",
        action="store_true",
        help="augment afresh for every seed (augment.seed = the seed) instead of sharing one set of copies",
    )
    ap.add_argument(
        "--refit-all",
        action="store_true",
        help="train on all 60,000 training digits (train + val) for the recipe's fixed epochs: the "
        "validation figures then measure digits seen in training, so nothing is chosen on held-out data (use "
        "with a fixed schedule, e.g. onecycle; the epoch kept is the last or near it)",
    )
    args = ap.parse_args()
    params = with_overrides(load_params(), args.overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        (args.out / "params.json").write_text(json.dumps(params.model_dump(), indent=2) + "\n")
        train_seeds(params, args.seeds, args.out, args.augment_per_seed, args.refit_all)
    report(args.out)


if __name__ == "__main__":
    main()
