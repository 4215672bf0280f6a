"""Print the notebook's sinc job as JSON: `python examples/sinc_job.py > sinc-job.json`.

The notebook's own settings: a 50x50 grid over [-10, 10]^2, sinc(r) targets, 2 -> 80 -> 1 with
tanh, Adam (lr 0.01), batch 200, 400 epochs, MSE, inputs standard-scaled.
"""

from __future__ import annotations

import json
import math
from typing import Any


def sinc(x1: float, x2: float) -> float:
    r = math.hypot(x1, x2)
    return math.sin(r) / r


def grid(n: int) -> list[list[float]]:
    """The notebook's meshgrid, row by row (x1 varies fastest)."""
    points = [-10.0 + 20.0 * i / (n - 1) for i in range(n)]
    return [[x1, x2] for x2 in points for x1 in points]


def sinc_job() -> dict[str, Any]:
    x = grid(50)
    return {
        "name": "sinc-demo",
        "task": "regression",
        "data": {"x": x, "y": [[sinc(x1, x2)] for x1, x2 in x]},
        "model": {"hidden_layers": [80], "activation": "tanh", "output_activation": "tanh"},
        "training": {
            "optimizer": "adam",
            "learning_rate": 0.01,
            "batch_size": 200,
            "epochs": 400,
            "loss": "mse",
            "seed": 0,
        },
        "preprocessing": {"inputs": "standard", "targets": "none"},
    }


if __name__ == "__main__":
    print(json.dumps(sinc_job()))
