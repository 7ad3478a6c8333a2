"""Calibrated confidence and "not a digit" answers: temperature scaling, the accept/reject rule, and the
numbers that judge them. NumPy only, so the server applies exactly what the pipeline measured.

A softmax's top probability is not the chance of being right, and says nothing about a picture that is no
digit at all. Two steps fix what it means:
- temperature scaling (Guo et al. 2017): probabilities softmax(log p / T), with T fitted on the validation
  digits by minimising their negative log-likelihood. It keeps every argmax.
- rejection: the calibrated top probability is the score; below `threshold` the answer is not accepted.
  The training saw generated non-digits with a uniform target (outlier exposure, Hendrycks et al. 2019), so
  a non-digit spreads its probability; an ambiguous digit splits it between two classes instead, and the
  reason says which: "unsure between 4 and 9" when the top two hold at least `unsure_mass`, else
  "not a digit".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

_TINY = 1e-30  # log(0) guard: float32 softmax underflows to 0 for far-off classes
NOT_A_DIGIT = "not a digit"


@dataclass(frozen=True)
class Calibration:
    """What travels with a model: its temperature and its rejection rule."""

    temperature: float = 1.0
    threshold: float = 0.0  # calibrated top probability below which an answer is rejected (0: never)
    unsure_mass: float = 0.8  # a rejected answer whose top two hold this much is "unsure", not "not a digit"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")
        for name in ("threshold", "unsure_mass"):
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
        return decide(calibrated, self.threshold, self.unsure_mass)


def calibrate(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) row by row: float32 (n, k) probabilities summing to 1, argmax unchanged."""
    logits = np.log(np.maximum(np.asarray(probs, dtype=np.float64), _TINY)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    out /= out.sum(axis=1, keepdims=True)
    return out.astype(np.float32)


def decide(
    calibrated: np.ndarray, threshold: float, unsure_mass: float
) -> tuple[np.ndarray, list[str | None]]:
    """Per row: accepted (top probability >= threshold) and, when not, the reason in words."""
    p = np.asarray(calibrated, dtype=np.float64)
    top2 = np.argsort(-p, axis=1, kind="stable")[:, :2]
    first, second = p[np.arange(len(p)), top2[:, 0]], p[np.arange(len(p)), top2[:, 1]]
    accepted = first >= threshold
    reasons: list[str | None] = []
    for ok, (a, b), mass in zip(accepted, top2, first + second, strict=True):
        if ok:
            reasons.append(None)
        elif mass >= unsure_mass:
            low, high = sorted((int(a), int(b)))
            reasons.append(f"unsure between {low} and {high}")
        else:
            reasons.append(NOT_A_DIGIT)
    return accepted, reasons


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


def choose_threshold(digit_scores: np.ndarray, max_rejected: float) -> float:
    """The highest threshold rejecting at most `max_rejected` of these digits (a score below it rejects)."""
    s = np.sort(np.asarray(digit_scores, dtype=np.float64))
    if not len(s):
        raise ValueError("no scores to choose a threshold from")
    k = int(np.floor(max_rejected * len(s)))
    return float(s[k]) if k < len(s) else 1.0


# ---------------------------------------------------------------- measuring


def top_probability(probs: np.ndarray) -> np.ndarray:
    return np.asarray(probs).max(axis=1)


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over rows of the squared distance to the one-hot label (0 best, 2 worst)."""
    p = np.asarray(probs, dtype=np.float64)
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
    digit_scores: np.ndarray, other_scores: np.ndarray, threshold: float
) -> dict[str, float]:
    """How well a set of non-digits is told apart from the digits: the share rejected at the threshold,
    AUROC, and the share still accepted at the threshold that accepts 95% of the digits."""
    return {
        "rejected": round(float(np.mean(np.asarray(other_scores) < threshold)), 5),
        "auroc": round(auroc(digit_scores, other_scores), 5),
        "fpr_at_95_tpr": round(fpr_at_tpr(digit_scores, other_scores, 0.95), 5),
    }
