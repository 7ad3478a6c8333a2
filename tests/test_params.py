"""The params schema: defaults are valid, and every bad value fails naming the key, before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT
from pipeline_repo import run_stage_script

from digits.params import Params, ParamsError, load_params, parse_params


def test_committed_params_yaml_is_valid_and_complete() -> None:
    params = load_params(ROOT / "params.yaml")
    # params.yaml spells out every knob: nothing left to a default a reader cannot see.
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in params.model_dump().items():
        assert set(raw[section]) == set(values), section
    # And the schema's defaults are the committed params, so code building Params() trains the default.
    assert params == Params()


BAD = [
    ({"train": {"epochz": 3}}, "train.epochz: unknown key (allowed: epochs,"),
    ({"trainer": {}}, "trainer: unknown key (allowed: fetch, preprocess,"),
    ({"train": {"epochs": -1}}, "train.epochs: Input should be greater than 0"),
    ({"train": {"epochs": 0}}, "train.epochs: Input should be greater than 0"),
    ({"train": {"epochs": "ten"}}, "train.epochs: Input should be a valid integer"),
    ({"train": {"epochs": 2.5}}, "train.epochs: Input should be a valid integer"),
    ({"train": {"lr": 0}}, "train.lr: Input should be greater than 0"),
    ({"preprocess": {"val_fraction": 1.0}}, "preprocess.val_fraction: Input should be less than 1"),
    ({"preprocess": {"val_fraction": 0}}, "preprocess.val_fraction: Input should be greater than 0"),
    (
        {"model": {"preset": "huge"}},
        "model.preset: Input should be 'seed', 'fast', 'deep' or 'best' (got 'huge')",
    ),
    ({"model": {"filters": [32, 0]}}, "model.filters.1: Input should be greater than 0"),
    (
        {"fetch": {"sources": ["ftp"]}},
        "fetch.sources.0: Input should be 'mirrors', 'pip', 'local' or 'kaggle'",
    ),
    ({"fetch": {"sources": []}}, "fetch.sources: List should have at least 1 item"),
    ({"augment": {"rotation": 270}}, "augment.rotation: Input should be less than or equal to 180"),
    ({"augment": {"seed": -1}}, "augment.seed: Input should be greater than or equal to 0"),
    ({"train": {"seed": True}}, "train.seed: Input should be a valid integer"),
    (
        {"train": {"distribute": "tpu"}},
        "train.distribute: Input should be 'default', 'mirrored' or 'multi_host'",
    ),
    ({"ensemble": {"seeds": [1, 1]}}, "ensemble.seeds: seeds must be distinct (got [1, 1])"),
    ({"ensemble": {"seeds": [-3]}}, "ensemble.seeds.0: Input should be greater than or equal to 0"),
    ({"ensemble": {"seeds": 3}}, "ensemble.seeds: Input should be a valid list"),
    ({"ensemble": {"seeds": [1, 42]}}, "ensemble.seeds contains 42, which is train.seed (the main model)"),
    ([1, 2], "expected a mapping of sections, got list"),
]


@pytest.mark.parametrize(("raw", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_values_name_the_key(raw: object, message: str) -> None:
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert message in str(err.value)


def test_missing_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train: [epochs: 3\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("stage", ["preprocess", "train"])
def test_stage_rejects_bad_params_before_writing_anything(tmp_path: Path, stage: str) -> None:
    (tmp_path / "params.yaml").write_text("train:\n  epochs: -5\n")
    proc = run_stage_script(tmp_path, stage)
    assert proc.returncode == 2
    assert "train.epochs: Input should be greater than 0 (got -5)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_duplicate_keys_are_rejected_with_their_lines(tmp_path: Path) -> None:
    # PyYAML alone would keep the last value silently (DVC refuses the same file).
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 3\n  lr: 0.01\n  epochs: 5\n")
    with pytest.raises(ParamsError, match=r"duplicate key 'epochs' on lines 2 and 4"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 3\ntrain:\n  lr: 0.01\n")
    with pytest.raises(ParamsError, match=r"duplicate key 'train' on lines 1 and 3"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("? [a, b]\n: 1\n")  # YAML 1.2 makes the key a tuple
    with pytest.raises(ParamsError, match=r"\('a', 'b'\): Keys should be strings"):
        load_params(tmp_path / "params.yaml")


# Values that YAML 1.1 (PyYAML) and YAML 1.2 (ruamel.yaml, DVC's reader) read differently, and some that
# they read alike: ours must read each as DVC does, or `dvc params diff` records other params than ran.
TRICKY = ["010", "1e-3", "1E3", "0o10", "0x1F", "yes", "on", "1_000", ".5", "~", "1.0e+3", "-.inf", "0b11"]


@pytest.mark.parametrize("value", TRICKY)
def test_values_are_read_as_dvc_reads_them(value: str) -> None:
    from dvc.utils.serialize import parse_yaml

    from digits.params import read_yaml

    text = f"train:\n  x: {value}\n"
    assert read_yaml(text) == parse_yaml(text, "params.yaml")


def test_octal_looking_seed_and_exponent_lr_are_what_dvc_records(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("train:\n  seed: 010\n  lr: 1e-3\n")
    train = load_params(tmp_path / "params.yaml").train
    assert (train.seed, train.lr) == (10, 0.001)


def test_anchors_and_aliases_are_refused_before_anything_is_built(tmp_path: Path) -> None:
    # Nine levels of aliases, each ten of the one below: 10^9 items if it were expanded.
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    (tmp_path / "params.yaml").write_text("\n".join(bomb) + "\n")
    with pytest.raises(ParamsError) as refused:
        load_params(tmp_path / "params.yaml")
    assert str(refused.value).endswith("line 1: anchors and aliases (&a0, *a0) are not allowed")


def test_a_huge_bad_value_is_shown_in_at_most_a_few_hundred_characters(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(f"train:\n  epochs: {list(range(100_000))}\n")
    with pytest.raises(ParamsError) as refused:
        load_params(tmp_path / "params.yaml")
    message = str(refused.value)
    assert "train.epochs: Input should be a valid integer" in message and len(message) < 400
    assert message.endswith(" characters))")  # "(got [0, 1, ... (688890 characters))"


def test_make_run_checks_params_before_dvc(tmp_path: Path) -> None:
    # `make run` calls this before `dvc repro`, which deletes a stage's outputs before the stage runs.
    check = [sys.executable, "-m", "digits.params"]
    good = subprocess.run([*check, str(ROOT / "params.yaml")], capture_output=True, text=True, cwd=ROOT)
    assert good.returncode == 0 and "valid" in good.stderr
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 0\n")
    bad = subprocess.run([*check, str(tmp_path / "params.yaml")], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "train.epochs: Input should be greater than 0 (got 0)" in bad.stderr
