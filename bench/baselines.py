"""The scripts in the baselines folder, invoked where they are (never copied into the repo)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.mlserver_env import Unavailable, mlserver_executable
from bench.procs import Managed, free_port, port_is_free, running, wait_http
from bench.settings import LOG_DIR, baselines_dir

TRAIN_S = re.compile(r"train_s=([0-9.]+)")
# Fixed by the baseline's read-only mlserver_runtime/settings.json (HTTP, gRPC, metrics).
MLSERVER_PORTS = (8082, 8083, 8084)


def _dir() -> Path:
    path = baselines_dir()
    if not (path / "README.md").exists():
        raise Unavailable(f"no baselines at {path} (set BASELINES_DIR)")
    return path


def _env(**extra: str) -> dict[str, str]:
    # The baselines folder is read-only: don't try to write __pycache__ there.
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **extra}


def train_seconds(*args: str) -> tuple[float, str]:
    """Run a training baseline with the project's python; its `train_s=` and its output line."""
    done = subprocess.run(
        [sys.executable, *args], cwd=_dir(), env=_env(), capture_output=True, text=True, timeout=600
    )
    found = TRAIN_S.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stdout[-300:]} {done.stderr[-500:]}")
    return float(found.group(1)), done.stdout.strip()


def make_sinc_dir(dest: Path) -> None:
    """`sinc_model.py DIR`: the model.pt + scaler.json that both serving baselines load."""
    subprocess.run(
        [sys.executable, "sinc_model.py", str(dest)],
        cwd=_dir(), env=_env(), check=True, capture_output=True, timeout=600,
    )  # fmt: skip


@dataclass(frozen=True)
class Server:
    name: str
    predict_url: str
    process: Managed


@contextlib.contextmanager
def naive_fastapi(sinc_dir: Path) -> Iterator[Server]:
    """`SINC_DIR=... uvicorn naive_fastapi:app --port P`, as its README runs it (access log on)."""
    port = 8081 if port_is_free(8081) else free_port()
    argv = [sys.executable, "-m", "uvicorn", "naive_fastapi:app", "--port", str(port)]
    env = _env(SINC_DIR=str(sinc_dir))
    log = LOG_DIR / "naive-fastapi.log"
    with running("naive FastAPI", argv, cwd=_dir(), env=env, log_path=log) as process:
        wait_http(process, f"http://127.0.0.1:{port}/docs", timeout=120)
        yield Server("naive FastAPI", f"http://127.0.0.1:{port}/predict", process)


@contextlib.contextmanager
def mlserver(sinc_dir: Path) -> Iterator[Server]:
    """`SINC_DIR=... mlserver start mlserver_runtime` from its own venv; Unavailable if it can't."""
    busy = [port for port in MLSERVER_PORTS if not port_is_free(port)]
    if busy:
        raise Unavailable(f"port(s) {busy} in use; MLServer's settings.json fixes 8082-8084")
    argv = [str(mlserver_executable()), "start", "mlserver_runtime"]
    env = _env(SINC_DIR=str(sinc_dir))
    log = LOG_DIR / "mlserver.log"
    with running("MLServer", argv, cwd=_dir(), env=env, log_path=log) as process:
        try:
            wait_http(process, "http://127.0.0.1:8082/v2/models/sinc/ready", timeout=180)
        except (RuntimeError, TimeoutError) as exc:
            raise Unavailable(f"MLServer did not start: {str(exc)[-300:]}") from exc
        yield Server("MLServer", "http://127.0.0.1:8082/v2/models/sinc/infer", process)
