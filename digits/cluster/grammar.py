"""`-S key=v1,v2` overrides (the grammar of `dvc exp run --queue -S`) as trials, and search spaces.

A sweep is the product of every override's values, as DVC's queue makes it: `-S a=1,2 -S b=3,4` is four
trials. Search mode reads ranges instead: `uniform(lo,hi)`, `loguniform(lo,hi)`, `intuniform(lo,hi)`,
`choice(a,b,...)` (a comma list means the same as choice). Values stay the strings the user wrote until DVC
reads them (as YAML), so a trial's params are exactly what `dvc exp run -S` would set.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from digits import DigitsError
from digits.params import parse_params, read_yaml

KEY = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)+")  # section.key[.sub...]: params.yaml only
CALL = re.compile(r"(\w+)\((.*)\)")
RANGES = ("uniform", "loguniform", "intuniform")


class GrammarError(DigitsError):
    """An override that cannot be read, or params that a trial would break."""


@dataclass(frozen=True)
class Override:
    key: str
    values: tuple[str, ...]  # one or more values, as written (a sweep axis or a choice)
    kind: str = "choice"  # choice | uniform | loguniform | intuniform
    low: float = 0.0
    high: float = 0.0


def _split(text: str) -> list[str]:
    """Split on commas outside brackets, so `model.filters=[32,64],[16,32]` is two values."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def parse_override(text: str) -> Override:
    """`key=v1,v2` or `key=uniform(lo,hi)` (and the other ranges) as an Override; a clear error otherwise."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not value.strip():
        raise GrammarError(f"-S {text!r}: expected key=value[,value...], e.g. train.lr=0.001,0.003")
    if ":" in key:
        raise GrammarError(
            f"-S {text!r}: only params.yaml keys are swept here (section.key, no file: prefix)"
        )
    if not KEY.fullmatch(key):
        raise GrammarError(f"-S {text!r}: {key!r} is not a params key (section.key, e.g. train.lr)")
    call = CALL.fullmatch(value.strip())
    if call and call[1] in (*RANGES, "choice"):
        args = _split(call[2])
        if call[1] == "choice":
            return Override(key, tuple(args))
        try:
            low, high = (float(a) for a in args)
        except ValueError:
            raise GrammarError(f"-S {text!r}: {call[1]} takes two numbers, low and high") from None
        if not low < high or (call[1] == "loguniform" and low <= 0):
            raise GrammarError(f"-S {text!r}: needs low < high{' and low > 0' * (call[1] == 'loguniform')}")
        return Override(key, (), call[1], low, high)
    if call:
        allowed = ", ".join((*RANGES, "choice"))
        raise GrammarError(f"-S {text!r}: unknown function {call[1]!r} (allowed: {allowed})")
    values = _split(value)
    if "" in values:
        raise GrammarError(f"-S {text!r}: an empty value between commas")
    return Override(key, tuple(values))


def sweep(overrides: list[Override], seeds: list[int] | None = None) -> list[dict[str, str]]:
    """Every combination of the overrides' values (and of the seeds, as train.seed), in a stable order."""
    ranged = [o.key for o in overrides if o.kind != "choice"]
    if ranged:
        raise GrammarError(f"{', '.join(ranged)}: ranges need --search optuna; a sweep takes value lists")
    keys = [o.key for o in overrides]
    if len(set(keys)) != len(keys):
        raise GrammarError(f"a key is given twice: {', '.join(sorted(k for k in keys if keys.count(k) > 1))}")
    axes = [[(o.key, v) for v in o.values] for o in overrides]
    if seeds:
        if "train.seed" in keys:
            raise GrammarError("--seeds sets train.seed: do not also give -S train.seed")
        axes.append([("train.seed", str(s)) for s in seeds])
    return [dict(combo) for combo in itertools.product(*axes)]


def trial_name(commit: str, params: dict[str, str]) -> str:
    """The experiment's name from its baseline commit and params: a retried trial pushes the same name."""
    blob = json.dumps([commit, sorted(params.items())]).encode()
    return "trial-" + hashlib.sha256(blob).hexdigest()[:10]


def _set(tree: dict, key: str, value: object) -> None:
    *sections, leaf = key.split(".")
    for part in sections:
        node = tree.get(part)
        if not isinstance(node, dict):
            raise GrammarError(f"{key}: params.yaml has no section {part!r}")
        tree = node
    tree[leaf] = value


def check(params_file: Path, trials: list[dict[str, str]]) -> None:
    """Refuse, before anything is submitted, a trial whose params the schema would refuse in its stages."""
    base = read_yaml(params_file.read_text())
    for params in trials:
        tree = json.loads(json.dumps(base))  # a deep copy of plain data
        for key, value in params.items():
            _set(tree, key, read_yaml(value))  # as DVC reads a -S value: YAML
        try:
            parse_params(tree, "params.yaml with " + " ".join(f"{k}={v}" for k, v in params.items()))
        except DigitsError as e:
            raise GrammarError(str(e)) from None
