"""MkDocs hook: pages quote the committed metrics and plots instead of copying numbers that would drift.

Placeholders, replaced at build time (an unknown file, key or placeholder fails the build):

- `{{ metric evaluate.accuracy }}`: the value at `accuracy` in `metrics/evaluate.json` (file stem, then a
  dotted path into the JSON). Shares (floats in [0, 1]) print as percentages with two decimals, integers
  with thousands separators, other floats with one decimal. An optional last word changes that: a Python
  format spec (`{{ metric openset.fashion_auroc .4f }}`) or `yes|no`, the words for a true and a false
  value (`{{ metric export.int8 int8|float32 }}`).
- `{{ table plots/per_class.csv }}`: that CSV as a Markdown table, with an optional format spec for its
  fractional numbers and an optional choice of columns
  (`{{ table plots/openset.csv .2% columns=set,rejected }}`).

The files are read from the directory named by `extra.data_root` in mkdocs.yml (relative to it; default
`.`, the repository), or from `$DIGITS_DOCS_DATA` when set, so a test can build against a fixture tree.
The PNG pictures under `plots/` there are published at the same paths, so pages show the committed ones.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s+([^{}]*?)\s*\}\}")
# Fenced blocks (``` or ~~~, closed by the same fence) and inline spans (closed by as many backticks).
CODE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?^[ \t]*\1[ \t]*$|(`+)(?!`).+?(?<!`)\2(?!`)", re.M | re.S)
PICTURES = "plots/**/*.png"


def data_root(config: MkDocsConfig) -> Path:
    """Where metrics/ and plots/ are read from."""
    base = Path(config.config_file_path).parent
    return (base / (os.environ.get("DIGITS_DOCS_DATA") or config.extra.get("data_root", "."))).resolve()


def format_value(value: Any, spec: str | None = None) -> str:
    if spec and "|" in spec:
        yes, no = spec.split("|", 1)
        return yes if value else no
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, int | float):
        if spec:
            raise PluginError(f"format {spec!r} needs a number, got {value!r}")
        return str(value)
    if spec is None:
        if isinstance(value, int):
            spec = ","
        elif 0 <= value <= 1:
            spec = ".2%"
        else:
            spec = ",.1f"
    try:
        return format(value, spec)
    except ValueError as e:
        raise PluginError(f"bad format {spec!r} for {value!r}: {e}") from None


def metric(root: Path, name: str, spec: str | None = None) -> str:
    stem, _, dotted = name.partition(".")
    path = root / "metrics" / f"{stem}.json"
    if not dotted or not path.is_file():
        raise PluginError(f"metric {name!r}: no file metrics/{stem}.json (write it as <file stem>.<key>)")
    value: Any = json.loads(path.read_text())
    for depth, key in enumerate(dotted.split(".")):
        if not isinstance(value, dict) or key not in value:
            known = ", ".join(sorted(value)) if isinstance(value, dict) else "none: it is a value"
            where = ".".join(dotted.split(".")[:depth]) or "the top level"
            raise PluginError(
                f"metric {name!r}: metrics/{stem}.json has no {key!r} under {where} (keys: {known})"
            )
        value = value[key]
    if isinstance(value, dict | list):
        raise PluginError(f"metric {name!r} is not a single value")
    return format_value(value, spec)


def number(cell: str) -> int | float | None:
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        return float(cell)
    except ValueError:
        return None


def table(root: Path, relative: str, *options: str) -> str:
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise PluginError(f"table {relative!r}: no such file under the data root")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise PluginError(f"table {relative!r} is empty")
    spec = next((o for o in options if not o.startswith("columns=")), None)
    chosen = next(
        (o.removeprefix("columns=").split(",") for o in options if o.startswith("columns=")), rows[0]
    )
    unknown = [c for c in chosen if c not in rows[0]]
    if unknown:
        raise PluginError(f"table {relative!r} has no column {unknown[0]!r} (columns: {', '.join(rows[0])})")
    keep = [rows[0].index(c) for c in chosen]
    header, body = chosen, [[row[i] if i < len(row) else "" for i in keep] for row in rows[1:]]

    def cell(text: str) -> str:
        value = number(text)
        if isinstance(value, float) and spec:
            return format_value(value, spec)
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def render(markdown: str, root: Path) -> str:
    """The page with every placeholder outside code replaced (code shows them literally, as the docs
    about this hook need)."""

    def replace(match: re.Match[str]) -> str:
        kind, words = match.group(1), match.group(2).split()
        if kind not in ("metric", "table") or not 1 <= len(words) <= (2 if kind == "metric" else 3):
            raise PluginError(
                f"unknown placeholder {match.group(0)!r}: use {{{{ metric <stem>.<key> [format] }}}} "
                "or {{ table <path.csv> [format] [columns=a,b] }}"
            )
        return (metric if kind == "metric" else table)(root, words[0], *words[1:])

    out, done = [], 0
    for code in CODE.finditer(markdown):
        out += [PLACEHOLDER.sub(replace, markdown[done : code.start()]), code.group(0)]
        done = code.end()
    return "".join([*out, PLACEHOLDER.sub(replace, markdown[done:])])


def on_files(files: Files, config: MkDocsConfig) -> Files:
    root = data_root(config)
    for path in sorted(root.glob(PICTURES)):
        uri = path.relative_to(root).as_posix()
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    try:
        return render(markdown, data_root(config))
    except PluginError as e:
        raise PluginError(f"{page.file.src_uri}: {e}") from None
