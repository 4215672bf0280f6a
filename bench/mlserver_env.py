"""MLServer in its own venv (bench/.venv-mlserver), created on first use.

Its own venv because MLServer pins fastapi/uvicorn/pydantic versions that must not touch the
project's .venv. torch is pinned to the CPU wheel: unpinned it would pull a multi-GB CUDA build.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from bench.settings import BENCH_DIR, LOG_DIR

VENV = BENCH_DIR / ".venv-mlserver"
PACKAGES = ("mlserver", "torch==2.13.0")
STAMP = VENV / ".installed"
INSTALL_TIMEOUT_SECONDS = 1800


class Unavailable(Exception):
    """A baseline that cannot run here; the message says why (shown in the table)."""


def mlserver_executable() -> Path:
    """The `mlserver` command, installing it first if needed; Unavailable when that fails."""
    binary = VENV / "bin" / "mlserver"
    wanted = " ".join(PACKAGES)
    if binary.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return binary
    python = shutil.which("python3.11")
    if python is None:
        raise Unavailable("python3.11 not found to create bench/.venv-mlserver")
    log_path = LOG_DIR / "mlserver-install.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"  creating {VENV} (first run only, 1-2 min; log {log_path})", file=sys.stderr)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    steps = [
        [python, "-m", "venv", "--clear", str(VENV)],
        [*pip, "--upgrade", "pip"],
        [*pip, *PACKAGES],
    ]
    with open(log_path, "wb") as log:
        for step in steps:
            try:
                done = subprocess.run(
                    step, stdout=log, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_SECONDS
                )
            except subprocess.TimeoutExpired as exc:
                raise Unavailable(f"install timed out: {' '.join(step)}") from exc
            if done.returncode != 0:
                raise Unavailable(f"`{' '.join(step[-2:])}` failed (see {log_path})")
    if not binary.exists():
        raise Unavailable(f"pip installed no mlserver command (see {log_path})")
    STAMP.write_text(wanted + "\n")
    return binary
