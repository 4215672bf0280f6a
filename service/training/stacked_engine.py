"""Several trials of one network shape trained together, as one stacked model.

A sweep's trials that share a shape (layers, activations, optimizer, loss, batch size, row
count) train in one pass: every weight gains a leading trial dimension, each matmul becomes a
batched one, and the optimizer updates all trials at once with each trial's own learning rate,
momentum and weight decay. For the small networks this service trains, one trial leaves the
machine idle (per-step overhead dominates), so T stacked trials cost far less than T runs.

Each trial sees its own batches (its seed's shuffle, its seed's train/validation split): the
loop (stacked_trainer.py) gathers them into `x[t]`, `y[t]`. A trial's history equals that trial
trained alone within float32 rounding. Trials are independent slices of every array, so one
trial's NaN never reaches another; the loop drops a finished or diverged trial with `keep()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from service.training.engine import EngineState, StopCheck, TrainingConfig

# What may differ between the trials of one stack; every other TrainingConfig field that an
# engine reads (optimizer, loss, batch_size) is the same for all of them.
PER_TRIAL_FIELDS = ("learning_rate", "momentum", "weight_decay")
SHARED_FIELDS = ("optimizer", "loss", "batch_size")


def check_stackable(configs: Sequence[TrainingConfig]) -> None:
    """Raise ValueError unless `configs` can train as one stack."""
    if not configs:
        raise ValueError("a stack needs at least one trial")
    for field_name in SHARED_FIELDS:
        values = {getattr(c, field_name) for c in configs}
        if len(values) > 1:
            raise ValueError(f"the trials of a stack share one {field_name}; got {sorted(values)}")


@dataclass(frozen=True)
class StackedEpochLoss:
    """What one pass over every trial's rows did: each trial's mean batch loss (NaN or inf
    where that trial diverged), the number of batches, and whether they all ran."""

    means: np.ndarray  # float64, one per trial in the stack's current order
    batches: int
    complete: bool


class StackedEngine(Protocol):
    name: str  # "numpy" or "torch"

    @property
    def n_trials(self) -> int:
        """How many trials the stack holds now (keep() shrinks it)."""
        ...

    def train_epoch(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, should_stop: StopCheck | None
    ) -> StackedEpochLoss:
        """One pass over rows already shuffled per trial: `x` is [trials, rows, features],
        `y` [trials, rows, outputs] (float32) or [trials, rows] (int64 class indices).
        `should_stop` is asked before every batch but the first."""
        ...

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """Each trial's loss over all its rows, without training (float64, one per trial)."""
        ...

    def weights(self, trial: int) -> dict[str, torch.Tensor]:
        """A copy of one trial's state dict, on the CPU, under nn.Sequential's names."""
        ...

    def state(self, trial: int) -> EngineState:
        """One trial's weights and optimizer state, as the single-trial engines write it, so a
        trial checkpointed in a stack resumes alone, and the other way round."""
        ...

    def load_state(self, trial: int, state: EngineState) -> None:
        """Continue trial `trial` from `state` (shapes already checked)."""
        ...

    def keep(self, trials: Sequence[int]) -> None:
        """Drop every trial not in `trials`; those kept are renumbered 0.. in the given order."""
        ...
