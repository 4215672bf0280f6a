"""A training run frozen at an epoch boundary: enough to continue it bit for bit elsewhere.

Weights, optimizer state, the shuffle generator's state, early-stopping bookkeeping and the
elapsed time. It flattens to tensors plus JSON metadata, so storage can keep it as safetensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

ENGINE = "engine."
BEST = "best."
GENERATOR = "generator_state"


@dataclass(frozen=True)
class Checkpoint:
    epoch: int  # the last completed epoch
    seconds: float  # training time so far, across attempts
    engine_state: dict[str, torch.Tensor]
    generator_state: torch.Tensor
    best_val: float = math.inf
    best_epoch: int | None = None
    epochs_since_best: int = 0
    best_weights: dict[str, torch.Tensor] | None = None

    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"{ENGINE}{k}": v for k, v in self.engine_state.items()}
        tensors[GENERATOR] = self.generator_state
        for k, v in (self.best_weights or {}).items():
            tensors[f"{BEST}{k}"] = v
        metadata = {
            "epoch": self.epoch,
            "seconds": self.seconds,
            "best_val": None if math.isinf(self.best_val) else self.best_val,
            "best_epoch": self.best_epoch,
            "epochs_since_best": self.epochs_since_best,
        }
        return tensors, metadata

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Checkpoint:
        def prefixed(prefix: str) -> dict[str, torch.Tensor]:
            return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}

        best_val = metadata.get("best_val")
        return cls(
            epoch=int(metadata["epoch"]),
            seconds=float(metadata["seconds"]),
            engine_state=prefixed(ENGINE),
            generator_state=tensors[GENERATOR],
            best_val=math.inf if best_val is None else float(best_val),
            best_epoch=metadata.get("best_epoch"),
            epochs_since_best=int(metadata.get("epochs_since_best", 0)),
            best_weights=prefixed(BEST) or None,
        )
