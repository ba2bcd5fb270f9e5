"""Helpers shared by the benchmark scripts (scripts/bench_*.py import it:
a script's own folder is on sys.path when it runs)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

# Plain Datasette 0.65.5 with no plugin: the baseline the benchmarks name.
PLAIN_VENV = Path(os.environ.get("LAION_PLAIN_VENV", "/tmp/laion-plain-venv"))


def pct(values, p):
    """The p-th percentile by nearest rank; None when there are no values."""
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_plain_venv():
    """The plain Datasette executable, installed into PLAIN_VENV when missing."""
    datasette = PLAIN_VENV / "bin" / "datasette"
    if not datasette.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PLAIN_VENV)], check=True)
        subprocess.run([str(PLAIN_VENV / "bin" / "pip"), "install", "-q", "datasette==0.65.5"], check=True)
    return datasette


def tree_rss_kb(pid):
    """RSS of a process and all its descendants, from /proc."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in os.listdir(f"/proc/{p}/task"):
                stack.extend(int(c) for c in open(f"/proc/{p}/task/{task}/children").read().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total
