"""Measuring a server from outside, for the benchmarks and the tests: a free loopback port to start it on,
and the CPU time and memory its process tree has used (Linux /proc)."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"


def bound_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port (the caller closes it): hand it to a server, no race."""
    sock = socket.socket()
    sock.bind((LOOPBACK, 0))
    return sock


def free_port() -> int:
    """A loopback port that was free a moment ago (bound, then released), for a server started by number."""
    with bound_socket() as sock:
        return sock.getsockname()[1]


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # the fields after comm's


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (e.g. uvicorn's --workers processes)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):  # it exited meanwhile
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process tree has used so far."""
    ticks = 0
    for p in process_tree(pid):
        utime, stime = _stat(p)[11:13]  # fields 14 and 15 of /proc/<pid>/stat
        ticks += int(utime) + int(stime)
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS) and at its peak (VmHWM), in MiB, summed over the process tree."""
    total = {"VmRSS": 0.0, "VmHWM": 0.0}
    for p in process_tree(pid):
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{p}/status").read_text().splitlines())
        for key in total:
            total[key] += int(fields[key].split()[0]) / 1024
    return total
