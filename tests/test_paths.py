"""digits.paths against dvc.yaml: every path the stages use is written once, and declared where it is used.

Static checks (ast and yaml; DVC is not run): a stage script that reads or writes a path its stage does not
declare would escape DVC's tracking, and a path literal in a script would be a second copy of dvc.yaml's.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from helpers import ROOT
from test_dvc_yaml import load_stages, stage_script

from digits import paths

SAMPLE_ARGS = {"prepared": paths.SPLITS, "negatives": paths.SPLITS, "member": (7,), "metrics": ("train",)}
LITERAL = re.compile(r"^(data|models|metrics|plots)/")


def declared(stage: dict) -> list[str]:
    """A stage's deps, outs, metrics and plots, as path strings."""
    found = []
    for key in ("deps", "outs", "metrics", "plots"):
        for entry in stage.get(key, []):
            found.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return found


def covers(declarations: list[str], path: Path) -> bool:
    """Whether a declared path is `path`, a folder above it, or (for a folder) a file below it."""
    for d in declarations:
        pattern = re.escape(d).replace(re.escape("${item.seed}"), r"[^/]+")
        if re.fullmatch(pattern, str(path)) or re.fullmatch(pattern + "/.*", str(path)):
            return True
        if d.startswith(f"{path}/"):
            return True
    return False


def used_paths(script: Path) -> set[Path]:
    """The digits.paths values a script uses: constants, and functions at their literal or sample args."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner, name = node.func.value, node.func.attr
            if isinstance(owner, ast.Name) and owner.id == "paths":
                literal = [a.value for a in node.args if isinstance(a, ast.Constant)]
                found.update(getattr(paths, name)(arg) for arg in literal or SAMPLE_ARGS[name])
        elif (
            isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "paths"
        ):
            value = getattr(paths, node.attr)
            if isinstance(value, Path):
                found.add(value)
    return found


def scripts() -> dict[str, list[dict]]:
    """stages/<name>.py -> the dvc.yaml stages that run it (train runs for member@<seed> too)."""
    runs: dict[str, list[dict]] = {}
    for stage in load_stages().values():
        if script := stage_script(stage):
            runs.setdefault(script, []).append(stage)
    return runs


@pytest.mark.parametrize("script", sorted(scripts()))
def test_a_stage_uses_only_paths_its_stage_declares(script: str) -> None:
    declarations = [d for stage in scripts()[script] for d in declared(stage)]
    undeclared = sorted(str(p) for p in used_paths(ROOT / script) if not covers(declarations, p))
    assert not undeclared, f"{script} uses paths its stage does not declare in dvc.yaml: {undeclared}"


@pytest.mark.parametrize("script", sorted(scripts()))
def test_no_stage_writes_a_path_of_its_own(script: str) -> None:
    strings = [
        n.value for n in ast.walk(ast.parse((ROOT / script).read_text())) if isinstance(n, ast.Constant)
    ]
    literals = [s for s in strings if isinstance(s, str) and LITERAL.match(s)]
    assert not literals, f"{script}: path literals {literals}; name them in digits/paths.py"


def test_every_path_in_the_module_is_declared_in_dvc_yaml() -> None:
    everything = [d for stage in load_stages().values() for d in declared(stage)]
    values = [v for v in vars(paths).values() if isinstance(v, Path)]
    values += [getattr(paths, f)(arg) for f, args in SAMPLE_ARGS.items() for arg in args]
    missing = sorted(str(v) for v in values if not covers(everything, v))
    assert not missing, f"digits/paths.py names paths no stage declares: {missing}"
