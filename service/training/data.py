"""Scaling, splitting and moving a job's data onto the training device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Scaler:
    """Standard scaling, as scikit-learn's StandardScaler does it (population std, 0 -> 1)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        mean = values.mean(axis=0)
        std = values.std(axis=0)
        # A constant column has nothing to scale; dividing by ~0 would blow it up.
        scale = np.where(
            std < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0), 1.0, std
        )
        return cls(mean=mean, scale=scale)

    def transform(self, values: np.ndarray) -> np.ndarray:
        scaled: np.ndarray = (values - self.mean) / self.scale
        return scaled

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        restored: np.ndarray = values * self.scale + self.mean
        return restored

    def to_json(self) -> dict[str, Any]:
        return {"kind": "standard", "mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Scaler | None:
        if not data or data.get("kind") != "standard":
            return None
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float64),
            scale=np.asarray(data["scale"], dtype=np.float64),
        )


def split_indices(
    n_rows: int, validation_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded shuffle split: (train rows, validation rows)."""
    n_val = round(n_rows * validation_fraction)
    if n_val == 0:
        return np.arange(n_rows), np.arange(0)
    order = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def epoch_order(seed: int, epoch: int, n_rows: int) -> np.ndarray:
    """The order in which epoch `epoch` visits the training rows.

    A pure function of (seed, epoch), drawn on the CPU: every engine and device sees the same
    batches, and a resumed run needs no generator state to carry on where the last one left off.
    """
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


@dataclass(frozen=True)
class TrainingTensors:
    """Scaled data, resident on the device the network trains on."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None


@dataclass(frozen=True)
class PreparedData:
    tensors: TrainingTensors
    input_scaler: Scaler | None
    target_scaler: Scaler | None
    input_min: np.ndarray
    input_max: np.ndarray

    def scalers_json(self) -> dict[str, Any]:
        return {
            "inputs": self.input_scaler.to_json() if self.input_scaler else {"kind": "none"},
            "targets": self.target_scaler.to_json() if self.target_scaler else {"kind": "none"},
            "input_min": self.input_min.tolist(),
            "input_max": self.input_max.tolist(),
        }


def prepare(
    x: np.ndarray,
    y: np.ndarray,
    *,
    classification: bool,
    scale_inputs: bool,
    scale_targets: bool,
    validation_fraction: float,
    seed: int,
    device: torch.device,
) -> PreparedData:
    """Split, fit the scalers on the training rows only, and move the tensors to the device."""
    train_rows, val_rows = split_indices(len(x), validation_fraction, seed)
    x_train_raw = x[train_rows]
    input_scaler = Scaler.fit(x_train_raw) if scale_inputs else None
    target_scaler = Scaler.fit(y[train_rows]) if scale_targets and not classification else None

    def inputs(rows: np.ndarray) -> torch.Tensor:
        values = x[rows]
        if input_scaler is not None:
            values = input_scaler.transform(values)
        return torch.as_tensor(values, dtype=torch.float32, device=device)

    def targets(rows: np.ndarray) -> torch.Tensor:
        if classification:
            return torch.as_tensor(y[rows], dtype=torch.long, device=device)
        values = y[rows]
        if target_scaler is not None:
            values = target_scaler.transform(values)
        return torch.as_tensor(values, dtype=torch.float32, device=device)

    has_val = len(val_rows) > 0
    tensors = TrainingTensors(
        x_train=inputs(train_rows),
        y_train=targets(train_rows),
        x_val=inputs(val_rows) if has_val else None,
        y_val=targets(val_rows) if has_val else None,
    )
    return PreparedData(
        tensors=tensors,
        input_scaler=input_scaler,
        target_scaler=target_scaler,
        input_min=x_train_raw.min(axis=0),
        input_max=x_train_raw.max(axis=0),
    )
