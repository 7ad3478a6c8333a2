"""dvc.yaml against the code: each stage declares the digits modules its script imports, and member's params.

Static checks only (ast and yaml; DVC is not run): a module missing from a stage's `deps` means editing it
would not rerun the stage, and a train key missing from member's `params` would leave the members stale.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml
from helpers import ROOT

from digits.params import TrainParams

# Deliberately not in any stage's deps: the stage runner, the params schema (each stage tracks its params
# keys instead), the file helpers and the paths (held against dvc.yaml by test_paths.py).
UNDECLARED = {"digits/cli.py", "digits/params.py", "digits/files.py", "digits/paths.py"}
SCRIPT = re.compile(r"^python3?\s+(stages/[\w/]+\.py)\b")


def load_stages() -> dict[str, dict]:
    """dvc.yaml's stages, each foreach/matrix stage's `do:` body (if any) flattened into the stage itself."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: {**stage, **stage.get("do", {})} for name, stage in stages.items()}


def stage_script(stage: dict) -> str | None:
    """The stages/<name>.py a stage's cmd runs with python (a matrix stage's ${item...} args ignored)."""
    cmds = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
    scripts = {m.group(1) for cmd in cmds if (m := SCRIPT.match(cmd.strip()))}
    assert len(scripts) <= 1, f"several python scripts in one stage: {sorted(scripts)}"
    return scripts.pop() if scripts else None


def _module_file(dotted: str) -> str:
    """digits.a.b -> digits/a/b.py (relative to ROOT)."""
    return dotted.replace(".", "/") + ".py"


def direct_digits_imports(path: Path) -> set[str]:
    """The digits/*.py files (ROOT-relative) that path imports anywhere, inside functions too."""
    found: set[str] = set()
    in_package = path.parent.name == "digits"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(_module_file(a.name) for a in node.names if a.name.startswith("digits."))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1 and in_package:  # from . import x / from .x import y, inside digits/
                base = "digits" + (f".{node.module}" if node.module else "")
            elif node.level == 0 and (node.module or "").split(".")[0] == "digits":
                base = node.module
            else:
                continue
            if base != "digits":
                found.add(_module_file(base))
            # `from digits(.x) import y`: y is a module if there is a file for it, else a name (DigitsError).
            for alias in node.names:
                candidate = _module_file(f"{base}.{alias.name}")
                if (ROOT / candidate).is_file():
                    found.add(candidate)
    found.discard("digits/__init__.py")
    return found


def transitive_digits_imports(script: str) -> set[str]:
    """Every digits/*.py file a script imports, directly or through other digits modules."""
    seen: set[str] = set()
    todo = list(direct_digits_imports(ROOT / script))
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if (ROOT / module).is_file():  # one that does not exist is still reported, as missing from deps
            todo.extend(direct_digits_imports(ROOT / module) - seen)
    return seen


def declared(module: str, deps: set[str]) -> bool:
    """Whether deps lists the module file itself or a folder holding it (such as `digits`)."""
    return any(module == dep or module.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_stage_deps_declare_every_imported_digits_module() -> None:
    stages = load_stages()
    scripted = {name: script for name, stage in stages.items() if (script := stage_script(stage))}
    assert {"train", "member", "submission"} <= scripted.keys(), sorted(scripted)  # matrix stage parsed too
    assert scripted["member"] == "stages/train.py"
    problems = []
    for name, script in sorted(scripted.items()):
        deps = set(stages[name].get("deps", []))
        if script not in deps:
            problems.append(f"{name}: its script {script} is not in its deps")
        missing = sorted(m for m in transitive_digits_imports(script) - UNDECLARED if not declared(m, deps))
        if missing:
            problems.append(f"{name} ({script}) imports but does not list in deps: {', '.join(missing)}")
    assert not problems, "stages missing code deps:\n" + "\n".join(problems)


def _params_keys(stage: dict) -> list[str]:
    """A stage's params entries as keys (a `params.yaml: [keys]` entry contributes its keys)."""
    keys: list[str] = []
    for entry in stage.get("params", []):
        if isinstance(entry, dict):
            for file, listed in entry.items():
                assert file == "params.yaml", f"params from another file: {file}"
                keys.extend(listed or [])
        else:
            keys.append(entry)
    return keys


def test_member_params_are_train_params_but_the_seed() -> None:
    stages = load_stages()
    train, member = _params_keys(stages["train"]), _params_keys(stages["member"])
    assert "model" in train and "train" in train, train  # whole sections
    assert "model" in member, member
    assert {k for k in member if not k.startswith("train.")} == set(train) - {"train"}, (train, member)
    member_train = {k.removeprefix("train.") for k in member if k.startswith("train.")}
    expected = set(TrainParams.model_fields) - {"seed"}
    assert member_train == expected, (
        f"member's train.* params: missing {sorted(expected - member_train)}, "
        f"unknown {sorted(member_train - expected)}"
    )
