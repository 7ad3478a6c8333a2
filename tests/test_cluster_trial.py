"""A trial's own failure: reported with its log tail, its scratch clone removed (no Ray needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from digits.cluster.trial import Result


def test_a_trial_that_cannot_clone_fails_with_its_log_and_leaves_nothing(tmp_path: Path) -> None:
    spec = {
        "name": "trial-0123456789",
        "url": str(tmp_path / "no-such-remote.git"),
        "commit": "0" * 40,
        "params": {"train.lr": "0.002"},
        "scratch": str(tmp_path / "scratch"),
    }
    (tmp_path / "scratch").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "digits.cluster.trial"],
        input=json.dumps(spec), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = Result(**json.loads(proc.stdout))  # stdout holds the result only
    assert result.status == "failed" and result.params == {"train.lr": "0.002"}
    assert "$ git clone" in result.log_tail and "no-such-remote.git" in result.log_tail
    assert "git clone exited with 128" in result.log_tail
    assert list((tmp_path / "scratch").iterdir()) == []
