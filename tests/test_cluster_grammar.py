"""The `-S` grammar of cluster sweeps and searches, and trial names (no Ray needed)."""

from __future__ import annotations

import pytest
from helpers import ROOT

from digits.cluster.grammar import GrammarError, check, parse_override, sweep, trial_name


def test_a_sweep_is_the_product_of_the_value_lists_and_the_seeds() -> None:
    overrides = [parse_override("train.lr=0.001,0.003"), parse_override("model.filters=[16,32],[32,64]")]
    trials = sweep(overrides, seeds=[1, 2])
    assert len(trials) == 8
    assert trials[0] == {"train.lr": "0.001", "model.filters": "[16,32]", "train.seed": "1"}
    assert {t["model.filters"] for t in trials} == {"[16,32]", "[32,64]"}


def test_ranges_parse_and_need_a_search() -> None:
    o = parse_override("train.lr=loguniform(1e-3, 1e-2)")
    assert (o.kind, o.low, o.high) == ("loguniform", 0.001, 0.01)
    assert parse_override("train.epochs=choice(4,6)").values == ("4", "6")
    with pytest.raises(GrammarError, match="need --search"):
        sweep([o])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train.lr", "expected key=value"),
        ("lr=0.1", "not a params key"),
        ("params.yaml:train.lr=0.1", "no file: prefix"),
        ("train.lr=0.1,,0.2", "empty value"),
        ("train.lr=loguniform(0,1)", "low > 0"),
        ("train.lr=uniform(2,1)", "low < high"),
        ("train.lr=normal(0,1)", "unknown function 'normal'"),
    ],
)
def test_bad_overrides_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(GrammarError, match=message):
        parse_override(text)


def test_trials_are_checked_against_the_params_schema_before_any_run() -> None:
    check(ROOT / "params.yaml", [{"train.lr": "0.002"}])
    with pytest.raises(GrammarError, match=r"train\.epochs"):
        check(ROOT / "params.yaml", [{"train.epochs": "-1"}])
    with pytest.raises(GrammarError, match="no section 'trainn'"):
        check(ROOT / "params.yaml", [{"trainn.lr": "0.002"}])


def test_a_trial_name_follows_its_params_and_commit_only() -> None:
    name = trial_name("a" * 40, {"train.lr": "0.002", "train.seed": "1"})
    assert name == trial_name("a" * 40, {"train.seed": "1", "train.lr": "0.002"})
    assert name != trial_name("b" * 40, {"train.lr": "0.002", "train.seed": "1"})
    assert name.startswith("trial-") and len(name) == 16
