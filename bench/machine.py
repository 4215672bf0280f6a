"""Which machine and code a run measured: printed with every table, figures mean nothing alone."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

from bench.settings import REPO


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    dirty = " (+ uncommitted changes)" if git("status", "--porcelain", "--", "service") else ""
    return (git("rev-parse", "--short", "HEAD") or "unknown") + dirty


def describe() -> list[str]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cores = len(os.sched_getaffinity(0))
    return [
        f"date: {now}",
        f"machine: {cores} cores (nproc), {cpu_model()}, Python {platform.python_version()}",
        f"code: service at {git_revision()}",
        f"load average at start: {load_note()}",
    ]


def load_note() -> str:
    """Other processes on a 2-core machine skew every figure (ratios less): say so up front."""
    one_minute = os.getloadavg()[0]
    busy = " (machine busy: expect noisy figures)" if one_minute > 0.5 else ""
    return f"{one_minute:.2f}{busy}"
