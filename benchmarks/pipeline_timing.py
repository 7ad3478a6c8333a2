"""DVC pipeline timings in a temporary copy of the repo: no-op `dvc repro`, a params change, each stage's RSS.

    python benchmarks/pipeline_timing.py [--noop-repeats 5] [--epochs 1] [--json PATH] [--keep]

Never touches this checkout's dvc.lock or outputs: the working tree (data/, models/, .dvc/cache, .git, but
not .venv) is copied to a temp directory and every DVC command runs there, with this interpreter's bin/
first on PATH so `dvc` and the stages' `python` are the virtualenv's. Measured:
  warm-up     one `dvc repro` (not timed as a no-op: the copy's fresh inodes make DVC rehash once); it
              reports any stage that was stale in the copy
  no-op       `dvc repro` with nothing changed, --noop-repeats times, median wall time (goal <= 3 s)
  params      params.yaml's train.epochs set to --epochs, then `dvc repro evaluate`: the stages that
              reran (train and evaluate) and its wall time; `dvc status` then lists the stages a full
              `dvc repro` would also rerun (robustness, export, submission take train's model too)
  stages      each `python stages/<stage>.py` run directly in the copy, in pipeline order, with
              train.epochs still --epochs (to bound train): wall time and peak RSS (MiB, os.wait4's
              ru_maxrss: the stage process and any child it waited for, e.g. fetch's `pip download`)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from digits import log

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".venv", ".ruff_cache", ".pytest_cache", "__pycache__", "dvc_plots")


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.pop("VIRTUAL_ENV", None)
    return e


def run(cmd: list[str], cwd: Path, timeout: float) -> dict:
    """Run `cmd`; wall time, exit status, peak RSS of it and its waited-for children, output tail."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return {
        "cmd": " ".join(cmd),
        "rc": proc.returncode,
        "timed_out": wall > timeout,
        "wall_s": round(wall, 2),
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
        "output_tail": text[-1500:],
        "output": text,
    }


def stages_ran(output: str) -> tuple[list[str], list[str]]:
    ran = re.findall(r"Running stage '([^']+)'", output)
    skipped = re.findall(r"Stage '([^']+)' didn't change", output)
    return ran, skipped


def set_epochs(params_file: Path, epochs: int) -> int:
    """Rewrite train.epochs in place (line edit, so comments and layout stay); returns the old value."""
    old = yaml.safe_load(params_file.read_text())["train"]["epochs"]
    lines = params_file.read_text().splitlines(keepends=True)
    section = None
    for i, line in enumerate(lines):
        if re.match(r"^\S", line):
            section = line.split(":")[0]
        elif section == "train" and re.match(r"^\s+epochs:", line):
            lines[i] = re.sub(r"epochs:\s*\d+", f"epochs: {epochs}", line)
            break
    params_file.write_text("".join(lines))
    assert yaml.safe_load(params_file.read_text())["train"]["epochs"] == epochs
    return old


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noop-repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1, help="train.epochs for the params change and stages")
    parser.add_argument("--stage-timeout", type=float, default=300, help="seconds per command")
    parser.add_argument("--skip-stages", action="store_true", help="no per-stage RSS runs")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every number here")
    parser.add_argument("--keep", action="store_true", help="keep the temp copy and print its path")
    args = parser.parse_args()

    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    # Matrix stages (member@<seed>) have no instances with the default ensemble.seeds: [] and no fixed cmd.
    stage_names = [name for name, stage in dvc_yaml["stages"].items() if "matrix" not in stage]
    report: dict = {"noop": {}, "params_change": {}, "stages": {}}
    tmp = Path(tempfile.mkdtemp(prefix="digits-pipeline-bench-"))
    repo = tmp / "repo"
    try:
        start = time.perf_counter()
        shutil.copytree(ROOT, repo, symlinks=True, ignore=IGNORE)
        report["copy_s"] = round(time.perf_counter() - start, 2)
        log(f"copied the working tree to {repo} in {report['copy_s']}s")

        warm = run(["dvc", "repro"], repo, args.stage_timeout)
        ran, _ = stages_ran(warm["output"])
        report["warmup"] = {"wall_s": warm["wall_s"], "rc": warm["rc"], "stages_ran": ran}
        log(f"warm-up dvc repro: {warm['wall_s']}s, reran {ran or 'nothing'}")
        if warm["rc"] != 0:
            sys.exit(f"dvc repro failed in the copy:\n{warm['output_tail']}")

        noops = []
        for i in range(args.noop_repeats):
            r = run(["dvc", "repro"], repo, args.stage_timeout)
            ran, skipped = stages_ran(r["output"])
            noops.append({"wall_s": r["wall_s"], "rc": r["rc"], "stages_ran": ran, "skipped": len(skipped)})
            log(f"no-op dvc repro {i + 1}/{args.noop_repeats}: {r['wall_s']}s, reran {ran or 'nothing'}")
        report["noop"] = {
            "runs": noops,
            "median_s": statistics.median(n["wall_s"] for n in noops),
            "goal_s": 3.0,
        }
        st = run(["dvc", "status"], repo, args.stage_timeout)
        report["noop"]["dvc_status_s"] = st["wall_s"]

        old = set_epochs(repo / "params.yaml", args.epochs)
        r = run(["dvc", "repro", "evaluate"], repo, args.stage_timeout * 2)
        ran, skipped = stages_ran(r["output"])
        stale = run(["dvc", "status"], repo, args.stage_timeout)
        stale_stages = sorted(set(re.findall(r"^(\w+):\s*$", stale["output"], re.M)) & set(stage_names))
        report["params_change"] = {
            "change": f"train.epochs {old} -> {args.epochs} in params.yaml",
            "cmd": "dvc repro evaluate",
            "wall_s": r["wall_s"],
            "rc": r["rc"],
            "stages_ran": ran,
            "stages_skipped": skipped,
            "still_stale_for_full_repro": stale_stages,
        }
        log(f"params change: `dvc repro evaluate` {r['wall_s']}s, reran {ran}; still stale: {stale_stages}")
        if r["rc"] != 0:
            log(r["output_tail"])

        if not args.skip_stages:
            for name in stage_names:
                cmd = dvc_yaml["stages"][name]["cmd"].split()
                r = run(cmd, repo, args.stage_timeout)
                report["stages"][name] = {
                    k: r[k] for k in ("cmd", "rc", "timed_out", "wall_s", "max_rss_mib")
                }
                if r["rc"] != 0:
                    report["stages"][name]["error"] = r["output_tail"][-600:]
                log(f"stage {name}: {r['wall_s']}s, max RSS {r['max_rss_mib']} MiB, rc {r['rc']}")
    finally:
        if args.keep:
            log(f"kept {repo}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    n = report["noop"]
    p = report["params_change"]
    print(f"\nno-op `dvc repro` (median of {len(n['runs'])}): {n['median_s']:.2f} s (goal <= 3 s); ", end="")
    print(f"`dvc status`: {n['dvc_status_s']:.2f} s")
    print(
        f"{p['change']}, `{p['cmd']}`: {p['wall_s']:.1f} s, reran {', '.join(p['stages_ran'])}; "
        f"a full `dvc repro` would also rerun {', '.join(p['still_stale_for_full_repro']) or 'nothing'}"
    )
    if report["stages"]:
        print(f"\neach stage run directly (`python stages/<stage>.py`), train.epochs={args.epochs}\n")
        print("| stage | wall s | peak RSS MiB | exit |")
        print("|---|---|---|---|")
        for name, s in report["stages"].items():
            print(f"| {name} | {s['wall_s']:.1f} | {s['max_rss_mib']:.0f} | {s['rc']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
