"""The docs cannot drift: the site builds strictly, the README's DAG is dvc's, and every make target, path,
module, params key and stage the docs name exists. Also the build hook's placeholders (docs/hooks.py)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
TEXTS = {path.relative_to(ROOT).as_posix(): path.read_text() for path in [README, *PAGES]}
BIN = Path(sys.executable).parent

FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
SPAN = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def code(text: str) -> list[str]:
    """Fenced blocks and inline code spans: where commands, paths and keys are named."""
    blocks = [m.group(2) for m in FENCE.finditer(text)]
    return blocks + [m.group(2) for m in SPAN.finditer(FENCE.sub("", text))]


def named(pattern: str) -> dict[str, set[str]]:
    """Each match of `pattern` (its first group) in the docs' code, with the files naming it."""
    found: dict[str, set[str]] = {}
    for name, text in TEXTS.items():
        for chunk in code(text):
            for match in re.finditer(pattern, chunk):
                found.setdefault(match.group(1), set()).add(name)
    return found


def load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mkdocs_build(config: Path, site: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "DIGITS_DOCS_DATA"}
    environ |= {"NO_MKDOCS_2_WARNING": "1", **env}  # material's banner about MkDocs 2 is noise here
    command = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "-f",
        str(config),
        "--site-dir",
        str(site),
    ]
    return subprocess.run(command, capture_output=True, text=True, env=environ, timeout=300)


# (a) the site


def test_site_builds_strictly(tmp_path):
    result = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "model-card" / "index.html").is_file()


# (b) the README's DAG


def mermaid_graph(text: str) -> tuple[set[str], set[tuple[str, str]]]:
    """Nodes and edges of a mermaid flowchart, by label (node ids are only names for the labels)."""
    labels = dict(re.findall(r"(\w+)\[\"?([^\"\]]+)\"?\]", text))
    edges = {
        (labels.get(a, a), labels.get(b, b))
        for a, b in re.findall(r"(\w+)(?:\[[^\]]*\])?\s*-->\s*(\w+)", text)
    }
    return set(labels.values()) | {n for edge in edges for n in edge}, edges


def test_readme_dag_is_dvc_dag():
    blocks = re.findall(r"^```mermaid\n(.*?)^```", TEXTS["README.md"], re.M | re.S)
    assert len(blocks) == 1, "README.md should hold one ```mermaid block: the output of `dvc dag --mermaid`"
    dag = subprocess.run(
        [str(BIN / "dvc"), "dag", "--mermaid"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    (readme_nodes, readme_edges), (nodes, edges) = mermaid_graph(blocks[0]), mermaid_graph(dag)
    assert edges, "no edges parsed from `dvc dag --mermaid`"
    assert (readme_nodes, readme_edges) == (nodes, edges), (
        "README.md's DAG drifted from `dvc dag --mermaid` (paste its output again): "
        f"missing edges {sorted(edges - readme_edges)}, extra edges {sorted(readme_edges - edges)}, "
        f"missing stages {sorted(nodes - readme_nodes)}, extra stages {sorted(readme_nodes - nodes)}"
    )


def test_mermaid_parser():
    nodes, edges = mermaid_graph(
        'flowchart TD\n\tnode1["fetch"]\n\tnode2["train"]\n\tnode1-->node2\n\tb --> c\n'
    )
    assert edges == {("fetch", "train"), ("b", "c")}
    assert nodes == {"fetch", "train", "b", "c"}


# (c) what the docs name exists


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M))


def test_make_targets_exist():
    targets = named(r"(?<![\w-])make\s+([a-z][\w-]*)")
    assert targets, "no `make <target>` found in the docs"
    missing = {t: sorted(files) for t, files in targets.items() if t not in makefile_targets()}
    assert not missing, f"make targets named in the docs but not in the Makefile: {missing}"


def test_repository_paths_exist():
    paths = named(r"(?<![\w./~-])((?:stages|digits|benchmarks|tests)/[\w./-]*)")
    assert "stages/train.py" in paths
    missing = {p: sorted(files) for p, files in paths.items() if not (ROOT / p.rstrip(".")).exists()}
    assert not missing, f"paths named in the docs that do not exist: {missing}"
    tests = named(r"(tests/[\w/]+\.py::\w+)")  # a test named with its file
    gone = [
        t
        for t in tests
        if not re.search(rf"^def {t.split('::')[1]}\(", (ROOT / t.split("::")[0]).read_text(), re.M)
    ]
    assert not gone, f"tests named in the docs that do not exist: {gone}"


def test_readme_links_exist():
    targets = re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", TEXTS["README.md"])
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def committed(path: str) -> str:
    """A file as the last commit holds it: a local `dvc repro` (as CI's `make run`, on another CPU) rewrites
    metrics/ a few digits apart, and the README quotes the committed run, not the workspace's."""
    shown = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else (ROOT / path).read_text()


def test_readme_quotes_the_committed_metrics():
    """The front page's figures are the committed run's: after a new `dvc repro`, update README.md."""
    metrics = {s: json.loads(committed(f"metrics/{s}.json")) for s in ("evaluate", "openset", "calibrate")}
    evaluate, openset, calibrate = metrics["evaluate"], metrics["openset"], metrics["calibrate"]
    keys = {
        "evaluate": ["accuracy", "errors"],
        "openset": ["fashion_rejected", "mnist_rejected"],
        "calibrate": ["ece"],
    }
    absent = [f"metrics/{s}.json:{k}" for s, ks in keys.items() for k in ks if k not in metrics[s]]
    assert not absent, f"the metrics the README quotes are missing: {absent}"
    quoted = [
        f"**{evaluate['accuracy']:.2%}** ({evaluate['errors']} errors)",
        f"{openset['fashion_rejected']:.1%} of Fashion-MNIST",
        f"{openset['mnist_rejected']:.2%} of the test digits",
        f"(ECE) of {calibrate['ece']:.2%}",
    ]
    stale = [q for q in quoted if q not in TEXTS["README.md"]]
    assert not stale, f"README.md should quote the committed metrics as: {stale}"


MODULES = sorted({m for text in TEXTS.values() for m in re.findall(r"python -m (digits(?:\.\w+)+)", text)})


def test_modules_are_named():
    assert "digits.serve" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_named_module_answers_help(module):
    path = ROOT / module.replace(".", "/")
    assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), (
        f"{module} is named in the docs, no such module"
    )
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (
        f"python -m {module} --help exited {result.returncode}: {result.stderr[-2000:]}"
    )


# Names like `model.keras` or `train.py` are files, not params keys.
FILE_SUFFIXES = {
    "py",
    "json",
    "keras",
    "csv",
    "png",
    "tflite",
    "npz",
    "yaml",
    "yml",
    "lock",
    "md",
    "html",
    "tsv",
}


def test_params_keys_exist():
    """`section.key` in the docs' code, where section is a top-level params.yaml section, must be a key.
    Not after `/` or `.` (paths, dotted module names), not a file name, not inside {{ placeholders }}."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    sections = "|".join(sorted(params, key=len, reverse=True))
    pattern = rf"(?<![\w./-])((?:{sections})(?:\.[A-Za-z_]\w*)+)(?![\w(])"  # not a call: `model.predict(x)`
    found: dict[str, set[str]] = {}
    for name, text in TEXTS.items():
        for chunk in code(text):
            for match in re.finditer(pattern, re.sub(r"\{\{.*?\}\}", "", chunk)):
                if match.group(1).rsplit(".", 1)[1] not in FILE_SUFFIXES:
                    found.setdefault(match.group(1), set()).add(name)
    assert "train.epochs" in found

    def exists(dotted: str) -> bool:
        value = params
        for key in dotted.split("."):
            if not isinstance(value, dict) or key not in value:
                return False
            value = value[key]
        return True

    missing = {key: sorted(files) for key, files in found.items() if not exists(key)}
    assert not missing, f"params keys named in the docs that params.yaml does not have: {missing}"


def test_every_stage_is_described_in_the_pipeline_page():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    page = (ROOT / "docs" / "pipeline.md").read_text()
    cells = re.findall(r"^\|\s*([^|\n]+?)\s*\|", page, re.M) + re.findall(r"^#+\s+(.+)$", page, re.M)
    described = {re.split(r"[@\s]", c.strip("`* "))[0] for c in cells}
    missing = sorted(set(stages) - described)
    assert not missing, f"stages without a row or heading of their own in docs/pipeline.md: {missing}"


# (d) the hook's placeholders


@pytest.fixture
def data(tmp_path):
    """A fixture tree shaped like the repository's metrics/ and plots/."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    files = {
        "evaluate": {"accuracy": 0.9951, "errors": 49, "n": 10000},
        "train": {"best_val_accuracy": 0.9925, "train_seconds": 126.7},
        "openset": {"fashion_auroc": 0.99951, "heldout_rejected": 0.668},
        "robustness": {"corruptions": {"gaussian_noise": 0.9938}},
        "export": {"int8": 1},
    }
    for stem, content in files.items():
        (metrics / f"{stem}.json").write_text(json.dumps(content))
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "per_class.csv").write_text("digit,f1,support\n0,0.99696,980\n1,0.99603,1135\n")
    (tmp_path / "plots" / "confusion.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return tmp_path


def test_metric_placeholders(data):
    hooks = load_hooks()
    page = (
        "{{ metric evaluate.accuracy }} / {{ metric evaluate.errors }} of {{metric evaluate.n}}; "
        "{{ metric train.train_seconds }} s; {{ metric openset.fashion_auroc .4f }}; "
        "{{ metric robustness.corruptions.gaussian_noise }}; {{ metric export.int8 int8|float32 }}"
    )
    assert hooks.render(page, data) == "99.51% / 49 of 10,000; 126.7 s; 0.9995; 99.38%; int8"


def test_table_placeholder(data):
    hooks = load_hooks()
    assert hooks.render("{{ table plots/per_class.csv .2% }}", data).splitlines() == [
        "| digit | f1 | support |",
        "|---|---|---|",
        "| 0 | 99.70% | 980 |",
        "| 1 | 99.60% | 1135 |",
    ]


def test_table_columns(data):
    hooks = load_hooks()
    assert hooks.render("{{ table plots/per_class.csv columns=support,digit }}", data).splitlines() == [
        "| support | digit |",
        "|---|---|",
        "| 980 | 0 |",
        "| 1135 | 1 |",
    ]


def test_placeholders_in_code_stay_literal(data):
    hooks = load_hooks()
    page = "`{{ metric nothing.here }}`\n\n```\n{{ table nowhere.csv }}\n```\n{{ metric evaluate.errors }}\n"
    assert hooks.render(page, data) == page.replace("{{ metric evaluate.errors }}", "49")


@pytest.mark.parametrize(
    ("placeholder", "message"),
    [
        ("{{ metric evaluate.recall }}", "has no 'recall'"),
        ("{{ metric robustness.corruptions.fog }}", "has no 'fog' under corruptions"),
        ("{{ metric calibrate.ece }}", "no file metrics/calibrate.json"),
        ("{{ metric evaluate }}", "no file"),
        ("{{ metric robustness.corruptions }}", "not a single value"),
        ("{{ metric evaluate.accuracy %%% }}", "bad format"),
        ("{{ table plots/robustness.csv }}", "no such file"),
        ("{{ table ../outside.csv }}", "no such file"),
        ("{{ table plots/per_class.csv columns=digit,recall }}", "has no column 'recall'"),
        ("{{ metrics evaluate.accuracy }}", "unknown placeholder"),
    ],
)
def test_unknown_placeholders_fail(data, placeholder, message):
    hooks = load_hooks()
    (data.parent / "outside.csv").write_text("a\n1\n")
    with pytest.raises(hooks.PluginError, match=re.escape(message)):
        hooks.render(f"text {placeholder} text", data)


def site_with_hook(data: Path, page: str) -> Path:
    """A one-page site in `data` that uses the repository's hook, its data root relative to mkdocs.yml."""
    (data / "docs").mkdir(exist_ok=True)
    (data / "docs" / "index.md").write_text(page)
    config = {"site_name": "t", "hooks": [str(ROOT / "docs" / "hooks.py")], "extra": {"data_root": "."}}
    (data / "mkdocs.yml").write_text(yaml.safe_dump(config))
    return data / "mkdocs.yml"


def test_the_hook_runs_in_a_build(data):
    config = site_with_hook(data, "# T\n\n{{ metric evaluate.accuracy }}\n\n![c](plots/confusion.png)\n")
    result = mkdocs_build(config, data / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "99.51%" in (data / "site" / "index.html").read_text()
    assert (data / "site" / "plots" / "confusion.png").is_file()


def test_an_unknown_key_fails_the_build(data):
    config = site_with_hook(data, "# T\n\n{{ metric evaluate.nothing }}\n")
    result = mkdocs_build(config, data / "site")
    assert result.returncode != 0
    assert "metrics/evaluate.json has no 'nothing'" in result.stdout + result.stderr
