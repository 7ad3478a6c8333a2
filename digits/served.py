"""The answers the app would give, computed offline: each picture prepared as the server prepares it
(digits.mnistify.as_served), the model's probabilities, then the calibration and its accept/reject rule.

The calibrate stage fits the calibration on these probabilities; the openset stage judges sets with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from digits.confidence import Calibration
from digits.mnistify import as_served
from digits.models import predict_probs


def served_probs(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The model's (uncalibrated) probabilities for uint8 pictures prepared as the server prepares them."""
    served, _ = as_served(images)  # MNIST digits always have ink
    return predict_probs(model, served)


# Fashion-MNIST's labels' names, by index: the openset report's clothes, class by class.
FASHION_CLASSES = (
    "T-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)


@dataclass(frozen=True)
class Judged:
    """The served answers for a set of pictures."""

    probs: np.ndarray  # calibrated
    accepted: np.ndarray  # bool; a picture the server would refuse as blank is not accepted ...
    scores: np.ndarray  # ... and scores 0 (Calibration.score)

    def __getitem__(self, rows: np.ndarray) -> Judged:
        return Judged(self.probs[rows], self.accepted[rows], self.scores[rows])


def judge(model: keras.Model, calibration: Calibration, images: np.ndarray) -> Judged:
    """Calibrated probabilities, accepted or not, and scores, as the server would answer each picture."""
    served, ink = as_served(images)
    probs = calibration.apply(predict_probs(model, served))
    return Judged(probs, ink & calibration.decide(probs)[0], np.where(ink, calibration.score(probs), 0.0))


def digits_report(judged: Judged, labels: np.ndarray) -> dict:
    """For pictures of digits: accuracy, the share rejected, the share accepted and right, and their count."""
    correct = judged.probs.argmax(axis=1) == labels
    return {
        "accuracy": round(float(correct.mean()), 5),
        "rejected": round(float((~judged.accepted).mean()), 5),
        "accepted_and_correct": round(float((judged.accepted & correct).mean()), 5),
        "n": len(labels),
    }
