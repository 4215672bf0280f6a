"""Request bodies: the notebook's sinc job (examples/sinc_job.py), tiny jobs, predict inputs."""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import sys
from typing import Any

import numpy as np

from bench.settings import REPO


@functools.cache
def _notebook_job_text() -> str:
    # examples/sinc_job.py is the single definition of "the notebook's job"; run, not copied.
    script = REPO / "examples" / "sinc_job.py"
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=120
    )
    return result.stdout


def notebook_job(epochs: int | None = None) -> dict[str, Any]:
    job: dict[str, Any] = json.loads(_notebook_job_text())
    if epochs is not None:
        job["training"]["epochs"] = epochs
    return job


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def sinc_points(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points over the notebook's [-10, 10]^2 with sinc(r) targets (any row count)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-10.0, 10.0, size=(n_rows, 2))
    r = np.sqrt((x**2).sum(axis=1))
    return x, (np.sin(r) / r).reshape(-1, 1)


def sinc_job(n_rows: int, epochs: int) -> dict[str, Any]:
    """The notebook's network and settings on `n_rows` rows (its own 50x50 grid for 2,500)."""
    job = notebook_job(epochs)
    if n_rows != len(job["data"]["x"]):
        x, y = sinc_points(n_rows, seed=n_rows)
        job = copy.deepcopy(job)
        job["data"] = {"x": x.tolist(), "y": y.tolist()}
    job["name"] = f"bench-sinc-{n_rows}"
    return job


def tiny_job(seed: int, epochs: int = 5, rows: int = 64) -> dict[str, Any]:
    """A 2 -> 16 -> 1 job that trains in milliseconds: for queue and many-model rows."""
    x, y = sinc_points(rows, seed=seed)
    return {
        "name": f"bench-tiny-{seed}",
        "data": {"x": x.tolist(), "y": y.tolist()},
        "model": {"hidden_layers": [16], "activation": "tanh", "output_activation": "tanh"},
        "training": {"epochs": epochs, "batch_size": rows, "seed": seed},
    }


def predict_rows(n_rows: int) -> list[list[float]]:
    if n_rows == 1:
        return [[1.5, -2.0]]  # the request the baselines' README uses
    x, _ = sinc_points(n_rows, seed=7)
    rows: list[list[float]] = x.tolist()
    return rows


def ours_predict_body(n_rows: int) -> bytes:
    """Also the naive FastAPI baseline's body: both take {"inputs": [[x1, x2], ...]}."""
    return encode({"inputs": predict_rows(n_rows)})


def v2_body(n_rows: int, input_name: str) -> bytes:
    """Open Inference Protocol v2: one FP64 tensor, flattened row-major."""
    rows = predict_rows(n_rows)
    flat = [v for row in rows for v in row]
    tensor = {"name": input_name, "shape": [len(rows), 2], "datatype": "FP64", "data": flat}
    return encode({"inputs": [tensor]})


def mlserver_body(n_rows: int) -> bytes:
    return v2_body(n_rows, "input-0")


def ours_v2_body(n_rows: int) -> bytes:
    """The same request to our /v2 route: only the input's name differs."""
    return v2_body(n_rows, "inputs")
