"""The trained network's quality on its own training and validation rows, for its model's
metrics: one forward pass in float32 over (a sample of) each split, in raw target units, scored
by service/training/metrics.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from service.training.data import PreparedData
from service.training.metrics import (
    MAX_CONFUSION_CLASSES,
    classification_quality,
    regression_quality,
)
from service.training.network import NetworkConfig, build_network

# Above this many rows a split is scored on an evenly spaced sample of them: the measures are
# as telling, and the pass stays a small share of even one training epoch.
MAX_EVALUATED_ROWS = 100_000
# Activations one chunk of rows may hold, so a wide network on many rows needs little memory.
CHUNK_ACTIVATIONS = 16_000_000


def evaluation_rows(n_rows: int, limit: int) -> np.ndarray:
    """The rows a split is scored on: all of them, or `limit` evenly spaced ones, the same
    for the same number of rows."""
    if n_rows <= limit:
        return np.arange(n_rows)
    rows: np.ndarray = np.round(np.linspace(0, n_rows - 1, num=limit)).astype(np.int64)
    return rows


def model_quality(
    config: NetworkConfig,
    state: dict[str, torch.Tensor],
    prepared: PreparedData,
    classes: list[Any] | None,
) -> dict[str, Any]:
    """The metrics of the network with weights `state` on the rows it was trained and
    validated on: `train_*` and `val_*` measures (None without a validation split), and how
    many rows of each split they were computed on (`train_rows_evaluated` of `train_rows`)."""
    tensors = prepared.tensors
    network = build_network(config)
    network.load_state_dict(state)
    network.to(tensors.x_train.device).eval()
    widest = max(config.n_inputs, config.n_outputs, *config.hidden_layers)
    chunk_rows = max(1, CHUNK_ACTIVATIONS // widest)
    quality: dict[str, Any] = {}
    splits = (("train", tensors.x_train, tensors.y_train), ("val", tensors.x_val, tensors.y_val))
    for split, x, y in splits:
        n_rows = 0 if x is None else len(x)
        rows = evaluation_rows(n_rows, MAX_EVALUATED_ROWS)
        quality[f"{split}_rows"] = n_rows
        quality[f"{split}_rows_evaluated"] = len(rows)
        outputs: torch.Tensor | None = None
        targets: np.ndarray | None = None
        if x is not None and y is not None and len(rows) > 0:
            if len(rows) < n_rows:
                index = torch.as_tensor(rows, device=x.device)
                x, y = x[index], y[index]
            outputs = _forward(network, x, chunk_rows)
            targets = y.cpu().numpy()
        if classes is not None:
            probabilities = None if outputs is None else torch.softmax(outputs.double(), dim=1)
            quality |= classification_quality(
                split, targets, None if probabilities is None else probabilities.cpu().numpy()
            )
        else:
            quality |= regression_quality(
                split, _raw(prepared, targets), _raw(prepared, _numpy(outputs))
            )
    if classes is not None:
        quality["confusion_matrix_labels"] = (
            classes if len(classes) <= MAX_CONFUSION_CLASSES else None
        )
    return quality


def _forward(network: torch.nn.Module, x: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    with torch.no_grad():
        chunks = [network(x[start : start + chunk_rows]) for start in range(0, len(x), chunk_rows)]
    return torch.cat(chunks)


def _numpy(values: torch.Tensor | None) -> np.ndarray | None:
    return None if values is None else values.cpu().numpy()


def _raw(prepared: PreparedData, values: np.ndarray | None) -> np.ndarray | None:
    """Values in the targets' own units: the target scaling undone."""
    if values is None:
        return None
    values = values.astype(np.float64).reshape(len(values), -1)
    scaler = prepared.target_scaler
    return values if scaler is None else scaler.inverse_transform(values)
