"""End to end: the real `dvc repro` and `dvc exp run` on a copy of the repo fed 600 real MNIST digits."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from pipeline_repo import ALWAYS_CHANGED, STAGES, git_commit, ran, run, up_to_date

pytestmark = pytest.mark.slow

# `repo` (conftest.py): a temp git repo holding the pipeline on 600 tiny MNIST digits, after `dvc repro`.


@pytest.fixture(scope="module")
def baseline(repo: Path) -> None:
    """`repo` with its first `dvc repro` committed: what later tests reset to, whichever runs first."""
    git_commit(repo, "baseline")


def test_repro_writes_every_output(repo: Path) -> None:
    manifest = json.loads((repo / "data/raw/manifest.json").read_text())
    assert manifest["source"] == "local"
    for split, n in [("train", 540), ("val", 60), ("test", 200)]:
        data = np.load(repo / f"data/prepared/{split}.npz")
        assert data["x"].shape == (n, 28, 28) and data["x"].dtype == np.uint8
    assert np.load(repo / "data/augmented/train.npz")["x"].shape == (2, 540, 28, 28)
    assert (repo / "models/model.keras").stat().st_size > 10_000
    for png in ["augment_preview", "confusion", "misclassified"]:
        assert (repo / f"plots/{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_are_sane(repo: Path) -> None:
    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["epochs_run"] == 3
    assert train["train_seconds"] > 0 and 0 < train["best_val_accuracy"] <= 1
    evaluate = json.loads((repo / "metrics/evaluate.json").read_text())
    # 540 real digits and 3 epochs of a tiny CNN: far above chance (10%), far from MNIST-grade.
    assert 0.5 < evaluate["accuracy"] <= 1.0
    assert evaluate["errors"] == round((1 - evaluate["accuracy"]) * 200)
    per_class = (repo / "plots/per_class.csv").read_text().splitlines()
    assert per_class[0] == "digit,precision,recall,f1,support"
    assert [int(r.split(",")[0]) for r in per_class[1:]] == list(range(10))
    assert sum(int(r.split(",")[4]) for r in per_class[1:]) == 200
    summary = json.loads((repo / "data/prepared/summary.json").read_text())
    assert [summary[s]["total"] for s in ("train", "val", "test")] == [540, 60, 200]
    confusion = (repo / "plots/confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) == 201
    curve = (repo / "plots/training/plots/metrics/eval/accuracy.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "accuracy"] and len(curve) == 4


# The headline numbers users compare across experiments; the detailed reports are plots/ files.
HEADLINE = {
    "metrics/train.json": {"best_val_accuracy", "epochs_run", "train_seconds"},
    "metrics/evaluate.json": {"accuracy", "errors"},
    "metrics/calibrate.json": {"ece"},
    "metrics/openset.json": {
        "mnist_rejected",
        "fashion_rejected",
        "fashion_auroc",
        "heldout_rejected",
        "lowres_rejected",
    },
    "metrics/robustness.json": {"mean_corrupted", "corruptions.gaussian_noise"},
    "metrics/export.json": {"int8", "int8_changed"},
    "metrics/ensemble.json": {"members"},
}


def test_metrics_are_the_headline_numbers_only(repo: Path) -> None:
    shown = json.loads(run(repo, "dvc", "metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]

    def flat(d: dict, prefix: str = "") -> set[str]:
        return set().union(
            *(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k} for k, v in d.items())
        )

    keys = {path: flat(entry["data"]) for path, entry in files.items()}
    assert keys == HEADLINE
    assert sum(map(len, keys.values())) <= 30
    # Each name once, so `dvc exp show` never needs the file's path to tell two columns apart.
    names = [k for ks in keys.values() for k in ks]
    assert len(names) == len(set(names))


def test_calibration_and_openset_reports(repo: Path) -> None:
    calibration = json.loads((repo / "models/calibration.json").read_text())
    assert set(calibration) == {"temperature", "threshold", "unsure_mass", "digit_threshold"}
    # The tiny model trained with non-digits: an 11th class, so both steps of the rejection rule are on.
    assert calibration["temperature"] > 0 and 0 < calibration["digit_threshold"] <= 1
    calibrate = json.loads((repo / "metrics/calibrate.json").read_text())
    assert set(calibrate) == {"ece"}
    report = {r["set"]: r for r in csv.DictReader((repo / "plots/calibration.csv").open())}
    before, after = report["test, uncalibrated"], report["test, calibrated"]
    assert float(after["ece"]) == calibrate["ece"] and float(before["ece"]) > 0
    # Temperature scaling minimises the validation NLL; on the test digits it may not win, but it is close.
    assert float(after["nll"]) <= float(before["nll"]) * 1.2
    assert 0 <= float(report["val digits"]["rejected"]) <= 0.004 + 1 / 60  # 60 validation digits
    openset = json.loads((repo / "metrics/openset.json").read_text())
    assert set(openset) == HEADLINE["metrics/openset.json"]
    sets = {r["set"]: r for r in csv.DictReader((repo / "plots/openset.csv").open())}
    assert sets["MNIST test"]["n"] == "100" and sets["font digits"]["n"] == "100"
    families = ["letters", "strokes", "shapes", "noise", "scribbles (held out)", "blobs"]
    non_digits = ["Fashion-MNIST", *families, "pure noise"]
    assert {"MNIST test", "font digits", *non_digits, "MNIST gaussian_noise", "MNIST thin"} <= set(sets)
    assert sets["Fashion-MNIST"]["n"] == "100"
    for name in non_digits:
        assert 0 <= float(sets[name]["rejected"]) <= 1 and 0 <= float(sets[name]["auroc"]) <= 1
    assert float(sets["Fashion-MNIST"]["rejected"]) == openset["fashion_rejected"]
    assert float(sets["scribbles (held out)"]["rejected"]) == openset["heldout_rejected"]
    assert float(sets["MNIST test"]["rejected"]) == openset["mnist_rejected"]
    assert float(sets["MNIST lowres"]["rejected"]) == openset["lowres_rejected"]
    # Fashion-MNIST class by class: the same 100 clothes, split by their label.
    clothes = [sets[name] for name in sets if name.startswith("Fashion-MNIST ")]
    assert 2 <= len(clothes) <= 10 and sum(int(c["n"]) for c in clothes) == 100
    rejected = sum(float(c["rejected"]) * int(c["n"]) for c in clothes) / 100
    assert rejected == pytest.approx(openset["fashion_rejected"], abs=1e-4)
    bundle = json.loads((repo / "models/serving/model.json").read_text())
    assert bundle["calibration"] == calibration  # the server applies what calibrate chose


def test_dag_has_every_stage(repo: Path) -> None:
    dag = run(repo, "dvc", "dag", "--md")
    for stage in STAGES:
        assert stage in dag


def test_second_repro_is_a_no_op(repo: Path) -> None:
    lock = (repo / "dvc.lock").read_bytes()
    out = run(repo, "dvc", "repro")
    assert ran(out) == ALWAYS_CHANGED, out
    assert up_to_date(run(repo, "dvc", "status"))
    assert (repo / "dvc.lock").read_bytes() == lock  # verify wrote the same bytes: nothing to record


def test_plots_show_draws_each_plot_once(repo: Path) -> None:
    shown = json.loads(run(repo, "dvc", "plots", "show", "--json"))
    assert "errors" not in shown, shown["errors"]
    tables = ["confusion.csv", "per_class.csv", "robustness.csv", "openset.csv", "calibration.csv"]
    pngs = ["augment_preview.png", "confusion.png", "misclassified.png", "robustness_examples.png"]
    pngs += ["reliability.png", "openset_scores.png"]
    ensemble = [f"ensemble/{f}" for f in ["members.csv", "confusion.csv", "per_class.csv"]]
    ensemble += ["ensemble/confusion.png", "ensemble/misclassified.png"]
    overlays = {
        "Accuracy per epoch",
        "Loss per epoch",
        "Reliability (test digits, before and after temperature scaling)",
    }
    expected = {*overlays, *(f"plots/{f}" for f in tables + pngs + ensemble)}
    assert set(shown["data"]) == expected


def test_every_stage_restores_from_the_run_cache(repo: Path) -> None:
    # With every output deleted, `dvc repro` restores them all from .dvc/cache: no stage runs again.
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            path = repo / out["path"]
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out = run(repo, "dvc", "repro")
    assert ran(out) == ALWAYS_CHANGED, out
    for stage in set(STAGES) - ALWAYS_CHANGED:
        assert f"Stage '{stage}' is cached - skipping run" in out, out
    # Back to params trained before (epochs=3 is the baseline): restored, not retrained.
    run(repo, "dvc", "exp", "run", "-S", "train.epochs=1")
    out = run(repo, "dvc", "exp", "run", "-S", "train.epochs=3")
    assert "Stage 'train' is cached - skipping run" in out and ran(out) == ALWAYS_CHANGED, out
    assert json.loads((repo / "metrics/train.json").read_text())["epochs_run"] == 3
    assert up_to_date(run(repo, "dvc", "status"))


@pytest.mark.usefixtures("baseline")
def test_exp_run_reruns_only_what_depends_on_train_params(repo: Path) -> None:
    out = run(repo, "dvc", "exp", "run", "-S", "train.epochs=2", "-n", "two-epochs")
    for stage in ["train", "evaluate", "ensemble", "robustness", "export", "submission"]:
        assert f"Running stage '{stage}'" in out
    for stage in ["fetch", "preprocess", "augment"]:
        assert f"Running stage '{stage}'" not in out
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json"))
    names = {exp["name"]: exp for rev in shown for exp in (rev.get("experiments") or []) if exp.get("name")}
    assert "two-epochs" in names, shown
    epochs = json.loads((repo / "metrics/train.json").read_text())["epochs_run"]
    assert epochs == 2


@pytest.mark.usefixtures("baseline")
def test_ensemble_without_members_is_the_main_model(repo: Path) -> None:
    run(repo, "git", "reset", "-q", "--hard")
    run(repo, "dvc", "checkout", "-f")
    ensemble = json.loads((repo / "metrics/ensemble.json").read_text())
    evaluate = json.loads((repo / "metrics/evaluate.json").read_text())
    assert ensemble == {"members": 1}  # its accuracy would repeat evaluate's
    rows = list(csv.DictReader((repo / "plots/ensemble/members.csv").open()))
    assert [float(r["test_accuracy"]) for r in rows] == [evaluate["accuracy"]] * 2  # main model, ensemble
    # Evaluate's probabilities are all it reads: it runs without the model file (and without TensorFlow).
    before = (repo / "plots/ensemble/members.csv").read_bytes()
    (repo / "models/model.keras").rename(repo / "model.keras.away")
    try:
        out = run(repo, "python", "-X", "importtime", "stages/ensemble.py")
    finally:
        (repo / "model.keras.away").rename(repo / "models/model.keras")
    assert (repo / "plots/ensemble/members.csv").read_bytes() == before
    assert not re.search(r"\|\s+(tensorflow|keras)$", out, re.MULTILINE), "imported TensorFlow"


@pytest.mark.usefixtures("baseline")
def test_tta_is_reported_beside_the_plain_metrics(repo: Path) -> None:
    run(repo, "git", "reset", "-q", "--hard")
    run(repo, "dvc", "checkout", "-f")
    plain = json.loads((repo / "metrics/evaluate.json").read_text())
    out = run(repo, "dvc", "exp", "run", "-S", "evaluate.tta=true", "-S", "evaluate.tta_shift=2")
    ran = {s for s in ["train", "evaluate", "ensemble", "robustness"] if f"Running stage '{s}'" in out}
    assert ran == {"evaluate", "ensemble"}, out
    evaluate = json.loads((repo / "metrics/evaluate.json").read_text())
    assert {k: evaluate[k] for k in plain} == plain  # what is served is reported as before
    assert 0.5 < evaluate["tta_accuracy"] <= 1.0
    assert evaluate["tta_errors"] == round((1 - evaluate["tta_accuracy"]) * 200)
    rows = list(csv.DictReader((repo / "plots/ensemble/members.csv").open()))
    assert list(rows[0]) == ["model", "val_accuracy", "test_accuracy", "tta_test_accuracy"]
    assert float(rows[-1]["tta_test_accuracy"]) == evaluate["tta_accuracy"]  # one model: the same TTA


@pytest.mark.usefixtures("baseline")
def test_ensemble_seeds_add_member_stages(repo: Path) -> None:
    run(repo, "git", "reset", "-q", "--hard")
    run(repo, "dvc", "checkout", "-f")
    out = run(repo, "dvc", "exp", "run", "-S", "ensemble.seeds=[7]")
    ran = {
        s for s in ["fetch", "augment", "train", "evaluate", "member@7", "ensemble"] if f"stage '{s}'" in out
    }
    assert "Running stage 'member@7'" in out and "Running stage 'ensemble'" in out, out
    assert ran == {"member@7", "ensemble"}, out  # nothing upstream reruns
    ensemble = json.loads((repo / "metrics/ensemble.json").read_text())
    rows = (repo / "plots/ensemble/members.csv").read_text().splitlines()
    assert rows[0] == "model,val_accuracy,test_accuracy"
    assert [r.split(",")[0] for r in rows[1:]] == ["main (seed 42)", "seed 7", "ensemble of 2"]
    single = [float(r.split(",")[2]) for r in rows[1:3]]
    assert ensemble == {"members": 2, "ensemble_accuracy": float(rows[3].split(",")[2])}
    assert 0.5 < ensemble["ensemble_accuracy"] <= 1.0 and single[0] != single[1]  # two different CNNs
    assert json.loads((repo / "models/members/seed-7.json").read_text())["epochs_run"] == 3

    # A second member: seed 7 comes from DVC's run cache, only seed 8 trains.
    out = run(repo, "dvc", "exp", "run", "-S", "ensemble.seeds=[7,8]")
    assert "Running stage 'member@8'" in out and "Running stage 'member@7'" not in out, out
    assert json.loads((repo / "metrics/ensemble.json").read_text())["members"] == 3
    assert up_to_date(run(repo, "dvc", "status"))


@pytest.mark.usefixtures("baseline")
def test_damaged_raw_data_in_the_cache_is_caught(repo: Path) -> None:
    # Eight flipped bytes in the cached object of a raw file: DVC checks it out again without complaint and
    # calls every stage cached, so the verify stage, which runs on every repro, must report it.
    run(repo, "git", "reset", "-q", "--hard")
    run(repo, "dvc", "checkout", "-f")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    raw_md5 = next(o["md5"] for o in lock["stages"]["fetch"]["outs"] if o["path"] == "data/raw")
    cache = repo / ".dvc/cache/files/md5"
    listing = json.loads((cache / raw_md5[:2] / raw_md5[2:]).read_text())
    md5 = next(e["md5"] for e in listing if e["relpath"] == "t10k-images-idx3-ubyte")
    obj = cache / md5[:2] / md5[2:]
    good = obj.read_bytes()
    obj.chmod(0o644)
    obj.write_bytes(good[:1000] + bytes(b ^ 0xFF for b in good[1000:1008]) + good[1008:])
    obj.chmod(0o444)  # as DVC left it: the damage is silent
    try:
        (repo / "data/raw/t10k-images-idx3-ubyte").unlink()
        run(repo, "dvc", "checkout")
        assert (repo / "data/raw/t10k-images-idx3-ubyte").read_bytes() != good  # DVC restored the bad bytes
        assert "data/raw" not in run(repo, "dvc", "status")  # and DVC sees nothing wrong
        outputs = {p: p.stat().st_mtime_ns for p in (repo / "data/prepared").iterdir()}
        out = run(repo, "dvc", "repro", fail=True)
        copy = obj.relative_to(repo)  # named, since DVC would never replace it
        assert "data/raw/t10k-images-idx3-ubyte is damaged" in out, out
        assert f"remove it (`rm -f {copy}`), then run `dvc repro -f fetch`" in out, out
        assert ran(out) == {"verify"}, out  # nothing ran on the bad bytes, and nothing was deleted
        assert {p: p.stat().st_mtime_ns for p in (repo / "data/prepared").iterdir()} == outputs
        assert (repo / "data/raw/t10k-images-idx3-ubyte").read_bytes() != good
        # preprocess checks what it reads too, for `dvc repro -s preprocess`
        out = run(repo, "dvc", "repro", "-f", "-s", "preprocess", fail=True)
        assert "data/raw/t10k-images-idx3-ubyte is damaged" in out and "`dvc repro verify` says how" in out
        # The advised fix: the damaged copy removed, fetch again writes good bytes, into the cache too.
        obj.unlink()
        run(repo, "dvc", "repro", "-f", "fetch")
        assert (repo / "data/raw/t10k-images-idx3-ubyte").read_bytes() == good == obj.read_bytes()
        assert ran(run(repo, "dvc", "repro", "preprocess")) == {"verify"}  # intact again: nothing reruns
    finally:
        obj.chmod(0o644)
        obj.write_bytes(good)
        obj.chmod(0o444)
        run(repo, "dvc", "checkout", "-f")
    assert "up to date" in run(repo, "dvc", "status", "fetch", "preprocess")


@pytest.mark.usefixtures("baseline")
def test_corrections_flow_back_into_training(repo: Path, tmp_path: Path) -> None:
    """collect -> add -> repro: unused at weight 0 (nothing downstream reruns), then used by their weight,
    and `dvc diff` shows what the data gained."""
    from PIL import Image

    from digits.feedback import Collector
    from digits.idx import read_idx
    from digits.splits import load_split

    run(repo, "git", "reset", "-q", "--hard")
    run(repo, "git", "clean", "-fdxq", "models/members")  # members an earlier experiment left behind
    run(repo, "dvc", "checkout", "-f")
    assert up_to_date(run(repo, "dvc", "status"))
    collected = Collector(tmp_path / "collected")
    images = read_idx(next(repo.glob("data/raw/t10k-images*")))[:3]
    for image, label in zip(images, (7, 2, "not a digit"), strict=True):
        drawn = (
            np.asarray(Image.fromarray(image).resize((280, 280)), np.float32) / 255
        )  # as the page sends it
        collected.store(drawn, label, None, "0123456789ab")
    out = run(repo, "python", "-m", "digits.feedback", "add", str(tmp_path / "collected"))
    assert "added 3 items to data/feedback: 000001.png, 000002.png, 000003.png" in out
    out = run(repo, "dvc", "repro")
    assert ran(out) == {"feedback"} | ALWAYS_CHANGED, out  # weight 0: the same empty set, train untouched
    assert "3 corrections in data/feedback, none used" in out

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["feedback_weight"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(repo, "dvc", "repro")
    assert {"feedback", "train", "evaluate"} <= ran(out), out
    assert "3 corrections for training {'2': 1, '7': 1, 'not a digit': 1}" in out
    x, y = load_split(repo / "data/feedback.npz")
    assert x.shape == (3, 28, 28) and y.tolist() == [7, 2, 10]
    git_commit(repo, "corrections, weight 2")
    diff = json.loads(run(repo, "dvc", "diff", "--json", "HEAD~1"))
    assert "data/feedback.npz" in {entry["path"] for entry in diff["modified"]}, diff
    assert "train.json" in run(repo, "dvc", "metrics", "diff", "HEAD~1")
