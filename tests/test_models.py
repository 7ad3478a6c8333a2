"""Model presets: shapes, parameter counts, overrides, and model files that cannot be trusted."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from digits import DigitsError
from digits.models import PRESETS, build_model, load_model, resolve
from digits.params import ModelParams

# Pinned so an accidental architecture change shows up here, not as a surprise in `dvc exp show`.
PARAM_COUNTS = {"seed": 225_034, "fast": 189_098, "deep": 198_442, "best": 326_826}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_shapes_and_sizes(preset: str) -> None:
    model = build_model(ModelParams(preset=preset))
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10)
    assert model.count_params() == PARAM_COUNTS[preset]
    probs = np.asarray(model(np.zeros((3, 28, 28, 1), np.float32)))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_only_the_deeper_presets_use_batch_norm() -> None:
    kinds = {
        p: {type(layer).__name__ for layer in build_model(ModelParams(preset=p)).layers} for p in PRESETS
    }
    assert "BatchNormalization" not in kinds["seed"]
    assert all("BatchNormalization" in kinds[p] for p in ("fast", "deep", "best"))


def test_overrides_resize_a_preset() -> None:
    arch = resolve(ModelParams(preset="deep", filters=[8, 16], dense=32, dropout=0.1))
    assert (arch.filters, arch.dense, arch.dropout) == ((8, 16), 32, 0.1)
    small = build_model(ModelParams(preset="deep", filters=[8, 16], dense=32))
    assert small.count_params() < PARAM_COUNTS["deep"] / 10
    assert resolve(ModelParams(preset="seed")) == PRESETS["seed"]


def test_pool_first_pools_before_the_first_batch_norm() -> None:
    def first_layers(model) -> list[str]:
        return [type(layer).__name__ for layer in model.layers[:4]]

    pooled = build_model(ModelParams())  # fast's own order
    assert first_layers(pooled) == ["Conv2D", "MaxPooling2D", "BatchNormalization", "ReLU"]
    after = build_model(ModelParams(pool_first=False))  # fast until 2026-12-07
    assert first_layers(after) == ["Conv2D", "BatchNormalization", "ReLU", "MaxPooling2D"]
    assert pooled.count_params() == PARAM_COUNTS["fast"]  # the same weights, in another order
    with pytest.raises(ValueError, match="pool_first is a `fast` option; preset is 'deep'"):
        ModelParams(preset="deep", pool_first=True)


def test_a_strided_first_conv_replaces_the_first_pooling() -> None:
    strided = build_model(ModelParams(first_stride=2))
    kinds = [type(layer).__name__ for layer in strided.layers]
    assert kinds[:4] == ["Conv2D", "BatchNormalization", "ReLU", "Conv2D"]
    assert strided.layers[0].output.shape[1:] == (13, 13, 32)  # as pooled
    assert kinds.count("MaxPooling2D") == 1 and strided.count_params() == PARAM_COUNTS["fast"]
    with pytest.raises(ValueError, match="first_stride is a `fast` option; preset is 'best'"):
        ModelParams(preset="best", first_stride=2)
    with pytest.raises(ValueError, match="pool_first means nothing with first_stride 2"):
        ModelParams(first_stride=2, pool_first=False)


def test_too_many_blocks_is_a_clear_error() -> None:
    with pytest.raises(DigitsError, match=r"model.filters=\[8, 8, 8\] does not fit 28x28 inputs"):
        build_model(ModelParams(preset="best", filters=[8, 8, 8]))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = build_model(ModelParams(preset="seed", filters=[4, 8], dense=8))
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)


def test_missing_and_garbage_model_files(tmp_path: Path) -> None:
    with pytest.raises(DigitsError, match="no model file; run `dvc repro`"):
        load_model(tmp_path / "absent.keras")
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"this is not a zip archive" * 10)
    with pytest.raises(DigitsError, match=r"not a Keras model: a \.keras file is a zip archive"):
        load_model(garbage)
    other_zip = tmp_path / "other.keras"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("hello.txt", "a zip, but no model in it")
    with pytest.raises(DigitsError, match="not a loadable Keras model"):
        load_model(other_zip)
