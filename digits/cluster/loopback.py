"""A Ray cluster on this machine: a head and more nodes, each a separate `ray start` on a loopback address.

For trying the cluster commands on one box, and for the tests and benchmarks. Each node has its own temp
dir; usage stats and the dashboard are off. Ray rewrites 127.0.0.1 to the machine's network address (so
that other machines could reach it), so the nodes take 127.0.0.2, 127.0.0.3, ...; note that Ray 2.60
still listens on every interface for some of its ports (GCS, object manager).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from digits.cluster.repo import ClusterError
from digits.measure import free_port

START_TIMEOUT = 60  # seconds for a node to join


def _ray() -> Path:
    return Path(sys.executable).parent / "ray"


def _nodes(address: str, env: dict[str, str]) -> int:
    proc = subprocess.run(
        [_ray(), "status", "--address", address], capture_output=True, text=True, env=env, timeout=30
    )
    return proc.stdout.split("Pending:")[0].count(" node_")


def _stop(node: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):  # `ray start --block` leads its node's process group
        try:
            os.killpg(node.pid, sig)
        except ProcessLookupError:
            return
        time.sleep(1)


@contextmanager
def loopback_cluster(
    root: Path, nodes: int = 2, cpus: int = 1, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Start `nodes` Ray nodes of `cpus` CPUs under `root` (one temp dir each); yield the head's address.

    Raises ClusterError when a node does not start (its log's tail in the message); stops them all on exit.
    """
    if not _ray().exists():
        raise ClusterError("Ray is not installed (make setup-cluster)")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    env["PATH"] = f"{_ray().parent}{os.pathsep}{env.get('PATH', '')}"
    port = free_port()
    address = f"127.0.0.2:{port}"
    started: list[subprocess.Popen] = []
    try:
        for i in range(nodes):
            ip = f"127.0.0.{i + 2}"
            head = ["--head", "--port", str(port), "--ray-client-server-port", str(free_port())]
            role = [*head, "--include-dashboard=false"] if i == 0 else ["--address", address]
            temp = root / f"node{i}"
            temp.mkdir(parents=True, exist_ok=True)
            with open(temp / "start.log", "w") as out:
                cmd = [_ray(), "start", *role, "--node-ip-address", ip, "--num-cpus", str(cpus)]
                cmd += ["--disable-usage-stats", "--block", "--temp-dir", str(temp)]
                started.append(subprocess.Popen(cmd, env=env, start_new_session=True, stdout=out, stderr=out))
            deadline = time.monotonic() + START_TIMEOUT
            while _nodes(address, env) < i + 1:
                if time.monotonic() > deadline or started[-1].poll() is not None:
                    tail = (temp / "start.log").read_text()[-2000:]
                    raise ClusterError(f"Ray node {i} did not start:\n{tail}")
                time.sleep(0.5)
        yield address
    finally:
        for node in started:
            _stop(node)
