"""What a training engine does for the loop, and the settings it trains with.

The loop (trainer.py) owns epochs, shuffling, callbacks and early stopping; an engine owns the
arithmetic of one epoch. Two engines exist: autograd on any torch device, and hand-written
gradients in numpy for small networks on the CPU, where per-operation overhead dominates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class TrainingConfig:
    optimizer: str = "adam"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 200
    epochs: int = 400
    loss: str = "mse"
    early_stopping_patience: int | None = None
    seed: int = 0
    max_runtime_seconds: float | None = None  # checked after each epoch


# torch.optim's defaults, which both engines use.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
HUBER_DELTA = 1.0


class Engine(Protocol):
    def train_epoch(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, should_stop: StopCheck | None
    ) -> float | None:
        """One pass over rows already shuffled; the mean batch loss, or None if stopped."""
        ...

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """The loss over all rows, without training."""
        ...

    def weights(self) -> dict[str, torch.Tensor]:
        """A copy of the network's state dict (the keys of torch's nn.Sequential)."""
        ...

    def state(self) -> dict[str, torch.Tensor]:
        """Weights and optimizer state: everything needed to continue bit for bit."""
        ...

    def load_state(self, state: dict[str, torch.Tensor]) -> None: ...
