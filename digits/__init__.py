"""Handwritten digit recognition as a reproducible DVC pipeline: the library the stages and the app share."""


class DigitsError(Exception):
    """A failure with a message meant for the user: stages print it without a traceback and exit non-zero."""
