"""Where the stages read and write: every path of dvc.yaml's deps and outs, written once.

tests/test_paths.py holds this module against dvc.yaml: each path here is declared there, and each stage
script uses only paths its stage declares. Library functions take paths as arguments; only stage scripts
(and the server's defaults) read them from here.
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "val", "test")

RAW = Path("data/raw")  # fetch: the four MNIST IDX files (+ Kaggle's) and manifest.json
VERIFIED = Path("data/verified.json")  # verify: data/raw's sha256, checked on every run
FASHION = Path("data/fashion")  # fashion: Fashion-MNIST's test set
PREPARED = Path("data/prepared")  # preprocess: {train,val,test}.npz and summary.json
AUGMENTED = Path("data/augmented/train.npz")  # augment: the training split's copies
NEGATIVES = Path("data/negatives")  # negatives: {train,val,test}.npz of non-digits
FEEDBACK = Path("data/feedback")  # in git: reviewed corrections, PNGs + labels.jsonl (digits.feedback)
FEEDBACK_SET = Path("data/feedback.npz")  # feedback: them as MNIST-like digits
PREDICTIONS = Path("data/predictions.npz")  # evaluate: train's model's probabilities on val and test

MODEL = Path("models/model.keras")  # train
MEMBERS = Path("models/members")  # member@<seed>: seed-<seed>.keras and .json
CALIBRATION = Path("models/calibration.json")  # calibrate: temperature and thresholds
SERVING = Path("models/serving")  # export: the serving bundle
SUBMISSION = Path("submission.csv")  # submission: Kaggle's upload

METRICS = Path("metrics")  # <stage>.json, cache: false
PLOTS = Path("plots")  # evaluate's report; the other stages' plots below
TRAINING_CURVES = PLOTS / "training"  # DVCLive's per-epoch curves
AUGMENT_PREVIEW = PLOTS / "augment_preview.png"
CALIBRATION_REPORT = PLOTS / "calibration.csv"
RELIABILITY = PLOTS / "reliability"  # {before,after}.csv
RELIABILITY_PICTURE = PLOTS / "reliability.png"
OPENSET_REPORT = PLOTS / "openset.csv"
OPENSET_SCORES = PLOTS / "openset_scores.png"
ROBUSTNESS_REPORT = PLOTS / "robustness.csv"
ROBUSTNESS_EXAMPLES = PLOTS / "robustness_examples.png"
ENSEMBLE_PLOTS = PLOTS / "ensemble"  # evaluate's report for the ensemble
ENSEMBLE_MEMBERS = ENSEMBLE_PLOTS / "members.csv"  # every model's accuracy and the ensemble's


def prepared(split: str) -> Path:
    """data/prepared/<split>.npz: the MNIST digits of one split (train, val or test)."""
    return PREPARED / f"{split}.npz"


def negatives(split: str) -> Path:
    """data/negatives/<split>.npz: the generated non-digits of one split."""
    return NEGATIVES / f"{split}.npz"


def member(seed: int) -> Path:
    """models/members/seed-<seed>.keras: the ensemble member trained with that seed."""
    return MEMBERS / f"seed-{seed}.keras"


def metrics(stage: str) -> Path:
    """metrics/<stage>.json: a stage's headline numbers."""
    return METRICS / f"{stage}.json"
