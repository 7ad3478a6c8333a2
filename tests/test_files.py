"""digits/files.py: every output file is written whole or not at all."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from digits.files import atomic_path, save_arrays, save_model, write_csv, write_json

ROOT = Path(__file__).resolve().parent.parent


def test_atomic_path_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out" / "model.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and not target.exists()
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # shareable, unlike mkstemp's 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.bin"]

    with pytest.raises(RuntimeError, match="killed halfway"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed halfway")
    assert target.read_bytes() == b"new"  # the old file stays, the temp file is gone
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.bin"]


def test_write_json_and_csv(tmp_path: Path) -> None:
    write_json(tmp_path / "m.json", {"accuracy": 0.99})
    assert (tmp_path / "m.json").read_text() == '{\n  "accuracy": 0.99\n}\n'
    write_csv(tmp_path / "p.csv", [{"digit": 0, "f1": 0.5}, {"digit": 1, "f1": 1.0}])
    assert (tmp_path / "p.csv").read_text().splitlines() == ["digit,f1", "0,0.5", "1,1.0"]


def test_save_arrays_round_trips_and_repeats_its_bytes(tmp_path: Path) -> None:
    arrays = {"val": np.random.default_rng(0).random((6, 10), np.float32), "test": np.arange(3)}
    path = tmp_path / "p.npz"
    save_arrays(path, **arrays)
    with np.load(path) as f:
        assert sorted(f) == ["test", "val"]
        assert all(np.array_equal(f[k], a) and f[k].dtype == a.dtype for k, a in arrays.items())
    first = path.read_bytes()
    save_arrays(path, **arrays)  # same arrays, same bytes: DVC sees an unchanged rerun as unchanged
    assert path.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]


def test_save_model_writes_a_loadable_keras_file_atomically(tmp_path: Path) -> None:
    import keras

    from digits.models import load_model

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    save_model(model, tmp_path / "m.keras")
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]
    assert load_model(tmp_path / "m.keras").count_params() == 3


def test_save_model_repeats_its_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = (
        "import keras; from digits.files import save_model; keras.utils.set_random_seed(0); "
        "model = keras.Sequential([keras.Input((2,), name='x'), keras.layers.Dense(1, name='d')], name='m')"
    )
    scope: dict = {}
    exec(build, scope)
    saved = []
    for now in (1.0e9, 1.5e9):  # two saving times, years apart, as zip entries record them
        monkeypatch.setattr(time, "time", lambda now=now: now)
        save_model(scope["model"], tmp_path / "m.keras")
        saved.append((tmp_path / "m.keras").read_bytes())
    # Another process: Keras numbers shared objects (the dtype policy) by their memory address.
    other = f"{build}; save_model(model, {str(tmp_path / 'o.keras')!r})"
    subprocess.run([sys.executable, "-c", other], check=True, cwd=ROOT, capture_output=True, timeout=120)
    saved.append((tmp_path / "o.keras").read_bytes())
    assert saved[0] == saved[1] == saved[2]  # DVC sees the same weights as the same file
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        assert "date_saved" not in json.loads(z.read("metadata.json"))
