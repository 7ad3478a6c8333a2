"""CNN presets built from params: `seed` (the original plain CNN), `deep` and `best` (Deotte-style)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from digits import DigitsError
from digits.params import ModelParams
from digits.shapes import NUM_CLASSES, SIDE, to_model_input

INPUT_SHAPE = (SIDE, SIDE, 1)


@dataclass(frozen=True)
class Architecture:
    preset: str
    filters: tuple[int, ...]
    dense: int
    dropout: float
    pool_first: bool = False
    first_stride: int = 1


PRESETS = {
    # The seed project's network: conv/pool twice, one dense layer, no normalisation.
    "seed": Architecture("seed", (32, 64), 128, 0.0),
    # Built for a CPU: one conv at full resolution, pooled before its batch norm and ReLU, then two after
    # the pooling, where they cost a quarter as much; batch norm and dropout as in `deep`.
    "fast": Architecture("fast", (32, 64), 128, 0.25, pool_first=True),
    # Stacked 3x3 convs with batch norm per block, max-pooling, dropout.
    "deep": Architecture("deep", (32, 64), 128, 0.25),
    # Deotte's "How to choose CNN architecture MNIST": 3x3 convs + a stride-2 5x5 conv per block,
    # BN everywhere, dropout 0.4; `dense` is the width of the final 4x4 conv acting as a dense layer.
    "best": Architecture("best", (32, 64), 128, 0.4),
}


def resolve(params: ModelParams) -> Architecture:
    """The preset's architecture with any overrides from params applied."""
    base = PRESETS[params.preset]
    return Architecture(
        preset=base.preset,
        filters=tuple(params.filters) if params.filters is not None else base.filters,
        dense=params.dense if params.dense is not None else base.dense,
        dropout=params.dropout if params.dropout is not None else base.dropout,
        pool_first=params.pool_first if params.pool_first is not None else base.pool_first,
        first_stride=params.first_stride if params.first_stride is not None else base.first_stride,
    )


def _conv_bn(filters: int, kernel: int, strides: int = 1, padding: str = "valid") -> list[layers.Layer]:
    # No conv bias: batch norm's beta does the same job.
    return [
        layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False),
        layers.BatchNormalization(),
        layers.ReLU(),
    ]


def _body(arch: Architecture) -> list[layers.Layer]:
    out: list[layers.Layer] = []
    if arch.preset == "seed":
        for f in arch.filters:
            out += [layers.Conv2D(f, 3, activation="relu"), layers.MaxPooling2D()]
        out += [layers.Flatten(), layers.Dense(arch.dense, activation="relu")]
        if arch.dropout:
            out.append(layers.Dropout(arch.dropout))
    elif arch.preset == "fast":
        first, *rest = arch.filters
        conv, norm, relu = _conv_bn(first, 3, strides=arch.first_stride)
        # Pooled first, batch norm and ReLU work on a quarter of the pixels: the same layers, less work.
        # Strided, the conv itself computes only those pixels (13x13 either way), nothing to pool.
        if arch.first_stride == 2:
            out += [conv, norm, relu]
        elif arch.pool_first:
            out += [conv, layers.MaxPooling2D(), norm, relu]
        else:
            out += [conv, norm, relu, layers.MaxPooling2D()]
        for f in rest:
            out += _conv_bn(f, 3) + _conv_bn(f, 3)
            out += [layers.MaxPooling2D(), layers.Dropout(arch.dropout)]
        out += [layers.Flatten(), layers.Dense(arch.dense, use_bias=False), layers.BatchNormalization()]
        out += [layers.ReLU(), layers.Dropout(arch.dropout)]
    elif arch.preset == "deep":
        for f in arch.filters:
            out += _conv_bn(f, 3) + _conv_bn(f, 3)
            out += [layers.MaxPooling2D(), layers.Dropout(arch.dropout)]
        out += [layers.Flatten(), layers.Dense(arch.dense, use_bias=False), layers.BatchNormalization()]
        out += [layers.ReLU(), layers.Dropout(arch.dropout)]
    elif arch.preset == "best":
        for f in arch.filters:
            out += _conv_bn(f, 3) + _conv_bn(f, 3) + _conv_bn(f, 5, strides=2, padding="same")
            out.append(layers.Dropout(arch.dropout))
        out += [*_conv_bn(arch.dense, 4), layers.Flatten(), layers.Dropout(arch.dropout)]
    else:  # the schema admits only the presets above
        raise ValueError(f"unknown preset {arch.preset!r}")
    return out


def build_model(params: ModelParams, lr: float = 1e-3, not_a_digit: bool = False) -> keras.Model:
    """A compiled softmax classifier for 28x28x1 inputs in [0, 1]: 10 digits, plus "not a digit" if asked."""
    arch = resolve(params)
    classes = NUM_CLASSES + not_a_digit
    try:
        model = keras.Sequential(
            [keras.Input(INPUT_SHAPE), *_body(arch), layers.Dense(classes, activation="softmax")],
            name=f"digits_{arch.preset}",
        )
    except ValueError as e:  # e.g. more blocks than a 28x28 image can be downsampled through
        raise DigitsError(
            f"model.filters={list(arch.filters)} does not fit 28x28 inputs with preset {arch.preset!r}: {e}"
        ) from None
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def digit_outputs(model: keras.Model) -> keras.Model:
    """The model as everything downstream takes it: 10 outputs, the probability of each digit.

    A model trained with a "not a digit" class keeps its softmax over 11 and drops the last column, so the
    saved file, the exports, the runtime and the ensembles stay 10-wide; the rows then sum to less than 1 and
    what they lack is the probability of no digit (digits.confidence.with_rest puts it back). Standard layers
    only: the file still loads in safe mode and converts to LiteRT.
    """
    if model.output_shape[-1] == NUM_CLASSES:
        return model
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            *model.layers,
            layers.Reshape((NUM_CLASSES + 1, 1)),
            layers.Cropping1D((0, 1)),
            layers.Flatten(),
        ],
        name=model.name,
    )


def load_model(path: str | Path) -> keras.Model:
    """Load a .keras file in safe mode (no arbitrary code); a missing or damaged file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise DigitsError(f"{path}: no model file; run `dvc repro` (or `dvc pull`) first")
    if not zipfile.is_zipfile(path):  # else Keras says "File not found" of a file that is there
        raise DigitsError(f"{path}: not a Keras model: a .keras file is a zip archive and this is none")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types (ValueError, zipfile/h5 errors) for a bad file
        raise DigitsError(f"{path}: not a loadable Keras model ({type(e).__name__}: {e})") from None


def predict_probs(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Digit probabilities (n, 10) for uint8 digits (n, 28, 28), in batches of 1000."""
    return model.predict(to_model_input(images), batch_size=1000, verbose=0)
