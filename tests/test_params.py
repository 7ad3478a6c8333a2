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
    (tmp_path / "params.yaml").write_text("? [a, b]\n: 1\n")
    with pytest.raises(ParamsError, match=r"(?s)not valid YAML.*unhashable key"):
        load_params(tmp_path / "params.yaml")


def test_make_run_checks_params_before_dvc(tmp_path: Path) -> None:
    # `make run` calls this before `dvc repro`, which deletes a stage's outputs before the stage runs.
    check = [sys.executable, "-m", "digits.params"]
    good = subprocess.run([*check, str(ROOT / "params.yaml")], capture_output=True, text=True, cwd=ROOT)
    assert good.returncode == 0 and "valid" in good.stderr
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 0\n")
    bad = subprocess.run([*check, str(tmp_path / "params.yaml")], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "train.epochs: Input should be greater than 0 (got 0)" in bad.stderr
