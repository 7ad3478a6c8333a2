"""Handwritten digit recognition as a reproducible DVC pipeline: the library the stages and the app share."""

import os
import sys

# TensorFlow's C++ start-up chatter (CPU feature notes, oneDNN banners) buries the stage's own progress.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class DigitsError(Exception):
    """A failure with a message meant for the user: stages print it without a traceback and exit non-zero."""


def log(msg: str) -> None:
    """Progress for the user, on stderr (stdout stays free for data)."""
    print(msg, file=sys.stderr, flush=True)
