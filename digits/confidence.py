"""Calibrated confidence and "not a digit" answers: temperature scaling, the accept/reject rule, and the
numbers that judge them. NumPy only, so the server applies exactly what the pipeline measured.

A softmax's top probability is not the chance of being right, and says nothing about a picture that is no
digit at all. Two steps fix what it means:
- temperature scaling (Guo et al. 2017): probabilities softmax(log p / T), with T fitted on the validation
  digits by minimising their negative log-likelihood. It keeps every argmax.
- rejection, in two steps. A model trained on generated non-digits as an 11th class (digits.train.NOT_A_DIGIT)
  gives a non-digit little probability on any digit: below `digit_threshold` of it in all, the answer is
  "not a digit". An ambiguous digit keeps its probability but splits it between two digits: below
  `threshold` for the top one, the answer is "unsure between 4 and 9" when the top two hold at least
  `unsure_mass`, else "not a digit". (A 10-class model has only the second step.)

Probabilities are (n, 10) rows, one per digit. A model with the "not a digit" class answers rows that sum
to less than 1 (digits.models.digit_outputs): what they lack is the probability of no digit, and
temperature scaling treats it as the 11th class it is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

_TINY = 1e-30  # log(0) guard: float32 softmax underflows to 0 for far-off classes
_ROUNDING = 1e-5  # a 10-way float32 softmax's rows sum to 1 only within ~1e-6: less is no "not a digit"
NOT_A_DIGIT = "not a digit"


@dataclass(frozen=True)
class Calibration:
    """What travels with a model: its temperature and its rejection rule.

    Each field's metadata says what it does (`help`) and what its default means (`default`): the server's
    flags (`python -m digits.serve --help`) are made from them.
    """

    temperature: float = field(
        default=1.0,
        metadata={"help": "T > 0: probabilities become softmax(log p / T)", "default": "unchanged"},
    )
    threshold: float = field(
        default=0.0,
        metadata={
            "help": "in [0, 1]: an answer whose calibrated top probability is below it is not accepted",
            "default": "all accepted",
        },
    )
    unsure_mass: float = field(
        default=0.8,
        metadata={
            "help": "in [0, 1]: a refused answer whose top two probabilities hold this much is 'unsure "
            "between A and B', else 'not a digit'"
        },
    )
    digit_threshold: float = field(
        default=0.0,
        metadata={
            "help": "in [0, 1]: an answer whose calibrated probability of any digit is below it is 'not a "
            "digit'",
            "default": "never",
        },
    )

    def __post_init__(self) -> None:
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")
        for name in ("threshold", "unsure_mass", "digit_threshold"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> Calibration:
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown calibration keys {sorted(unknown)}")
        return cls(**{k: float(v) for k, v in raw.items()})

    def apply(self, probs: np.ndarray) -> np.ndarray:
        return calibrate(probs, self.temperature)

    def decide(self, calibrated: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        """Per row of calibrated probabilities: accepted (probability of any digit >= digit_threshold and
        top probability >= threshold) and, when not, the reason in words."""
        p = np.asarray(calibrated, dtype=np.float64)
        top2 = np.argsort(-p, axis=1, kind="stable")[:, :2]
        first, second = p[np.arange(len(p)), top2[:, 0]], p[np.arange(len(p)), top2[:, 1]]
        digit = p.sum(axis=1) >= self.digit_threshold
        accepted = digit & (first >= self.threshold)
        reasons: list[str | None] = []
        for ok, is_digit, (a, b), mass in zip(accepted, digit, top2, first + second, strict=True):
            if ok:
                reasons.append(None)
            elif is_digit and mass >= self.unsure_mass:
                low, high = sorted((int(a), int(b)))
                reasons.append(f"unsure between {low} and {high}")
            else:
                reasons.append(NOT_A_DIGIT)
        return accepted, reasons

    def score(self, calibrated: np.ndarray) -> np.ndarray:
        """How much each picture looks like a digit, what AUROC and the histograms rank: the probability
        of any digit when there is a "not a digit" step, else the top probability."""
        p = np.asarray(calibrated, dtype=np.float64)
        return p.sum(axis=1) if self.digit_threshold else p.max(axis=1)

    def score_threshold(self) -> tuple[float, str]:
        """The threshold score() is held against, and what score() measures (for plots)."""
        if self.digit_threshold:
            return self.digit_threshold, "calibrated probability of any digit"
        return self.threshold, "calibrated top probability"


def with_rest(probs: np.ndarray) -> np.ndarray:
    """(n, 10) digit probabilities -> (n, 11) float64: the last column is what they lack of 1 (no digit)."""
    p = np.asarray(probs, dtype=np.float64)
    rest = 1 - p.sum(axis=1, keepdims=True)
    return np.concatenate([p, np.where(rest > _ROUNDING, rest, 0.0)], axis=1)


def calibrate(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) over the digits and "not a digit": float32 (n, 10), argmax unchanged.

    Rows summing to 1 stay so; rows that lack the probability of no digit keep lacking its calibrated value.
    """
    logits = np.log(np.maximum(with_rest(probs), _TINY)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    out /= out.sum(axis=1, keepdims=True)
    return out[:, :-1].astype(np.float32)


# ---------------------------------------------------------------- fitting and choosing, on validation data


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels."""
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(p, _TINY)).mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    """The T in [low, high] that minimises the NLL of calibrate(probs, T): golden-section search on log T.

    The NLL of temperature scaling is convex in 1/T, so a one-dimensional search finds the optimum.
    """
    ratio = (np.sqrt(5) - 1) / 2
    a, b = np.log(low), np.log(high)

    def loss(log_t: float) -> float:
        return nll(calibrate(probs, float(np.exp(log_t))), labels)

    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(60):  # (b - a) shrinks by 0.618 per step: 60 steps reach ~1e-12 in log T
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    return round(float(np.exp((a + b) / 2)), 5)


def fit_calibration(
    probs: np.ndarray, labels: np.ndarray, rejected: float, unsure: float, unsure_mass: float
) -> Calibration:
    """The temperature fitted on these validation probabilities, then the thresholds chosen on them once
    calibrated (choose_thresholds). Thresholds are rounded down to 6 decimals: rounding up would reject the
    digits that sit on one."""
    temperature = fit_temperature(probs, labels)
    digit_threshold, threshold = choose_thresholds(calibrate(probs, temperature), rejected, unsure)
    return Calibration(temperature, _floor6(threshold), unsure_mass, _floor6(digit_threshold))


def _floor6(x: float) -> float:
    return math.floor(x * 1e6) / 1e6


def choose_thresholds(calibrated: np.ndarray, rejected: float, unsure: float) -> tuple[float, float]:
    """(digit_threshold, threshold) rejecting `rejected` of these validation digits in all, `unsure` of them
    by their top probability and the rest by their probability of any digit ("not a digit").

    A model without a "not a digit" class gives every digit probability 1 in all: digit_threshold is then
    0 and the top probability rejects the whole share.
    """
    p = np.asarray(calibrated, dtype=np.float64)
    mass = p.sum(axis=1)
    if not (1 - mass > _ROUNDING).any():
        return 0.0, choose_threshold(p.max(axis=1), rejected)
    digit_threshold = choose_threshold(mass, max(rejected - unsure, 0.0))
    kept = mass >= digit_threshold
    return digit_threshold, choose_threshold(p[kept].max(axis=1), unsure * len(p) / kept.sum())


def choose_threshold(digit_scores: np.ndarray, max_rejected: float) -> float:
    """The highest threshold rejecting at most `max_rejected` of these digits (a score below it rejects)."""
    s = np.sort(np.asarray(digit_scores, dtype=np.float64))
    if not len(s):
        raise ValueError("no scores to choose a threshold from")
    k = int(np.floor(max_rejected * len(s)))
    return float(s[k]) if k < len(s) else 1.0


# ---------------------------------------------------------------- measuring


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared distance to the one-hot label over the 11 outcomes, "not a digit" included (0 best)."""
    p = with_rest(probs)
    target = np.zeros_like(p)
    target[np.arange(len(labels)), labels] = 1
    return float(((p - target) ** 2).sum(axis=1).mean())


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> list[dict[str, float | int]]:
    """Per equal-width bin of top probability: mean confidence, accuracy and count (empty bins left out)."""
    p = np.asarray(probs, dtype=np.float64)
    confidence, correct = p.max(axis=1), p.argmax(axis=1) == labels
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            rows.append(
                {
                    "bin": b,
                    "low": round(b / bins, 5),
                    "confidence": round(float(confidence[inside].mean()), 5),
                    "accuracy": round(float(correct[inside].mean()), 5),
                    "count": int(inside.sum()),
                }
            )
    return rows


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: the count-weighted mean |accuracy - confidence| over equal-width bins."""
    rows = reliability(probs, labels, bins)
    total = sum(r["count"] for r in rows)
    return float(sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / total)


def calibration_metrics(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, float]:
    return {
        "ece": round(ece(probs, labels, bins), 5),
        "nll": round(nll(probs, labels), 5),
        "brier": round(brier(probs, labels), 5),
    }


def auroc(digit_scores: np.ndarray, other_scores: np.ndarray) -> float:
    """The chance that a random digit scores above a random non-digit (ties count half)."""
    pos, neg = np.asarray(digit_scores, np.float64), np.asarray(other_scores, np.float64)
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="stable")
    ranks = np.empty(len(both))
    sorted_scores = both[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2 + 1
    ranks[order] = np.repeat(average, counts)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def fpr_at_tpr(digit_scores: np.ndarray, other_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Share of non-digits still accepted at the threshold that accepts `tpr` of the digits."""
    threshold = choose_threshold(digit_scores, 1 - tpr)
    return float(np.mean(np.asarray(other_scores) >= threshold))


def rejection_metrics(
    digit_scores: np.ndarray, other_scores: np.ndarray, other_accepted: np.ndarray
) -> dict[str, float]:
    """How well a set of non-digits is told apart from the digits: the share the rule rejects, and by the
    score alone, AUROC and the share still accepted at the score that accepts 95% of the digits."""
    return {
        "rejected": round(float(1 - np.mean(other_accepted)), 5),
        "auroc": round(auroc(digit_scores, other_scores), 5),
        "fpr_at_95_tpr": round(fpr_at_tpr(digit_scores, other_scores, 0.95), 5),
    }
