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

from service.vocabulary import Loss, Optimizer

StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class TrainingConfig:
    optimizer: Optimizer = "adam"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 200
    epochs: int = 400
    loss: Loss = "mse"
    early_stopping_patience: int | None = None
    seed: int = 0
    max_runtime_seconds: float | None = None  # checked between batches


# torch.optim's defaults, which both engines use.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
HUBER_DELTA = 1.0


# torch.optim's names for each optimizer's per-parameter state: the one layout every engine
# reads and writes, so a run checkpointed by one engine continues on the other.
OPTIMIZER_SLOTS: dict[str, tuple[str, ...]] = {
    "adam": ("step", "exp_avg", "exp_avg_sq"),
    "adamw": ("step", "exp_avg", "exp_avg_sq"),
    "sgd": ("momentum_buffer",),
}


@dataclass(frozen=True)
class EngineState:
    """Weights and optimizer state, on the CPU, in a layout no engine or device owns.

    `weights` uses torch's state-dict names ("0.weight", "0.bias", ...); `optimizer` maps each
    parameter name to its slots under torch.optim's names (OPTIMIZER_SLOTS). A slot is absent
    until the optimizer first writes it (SGD without momentum writes none).
    """

    weights: dict[str, torch.Tensor]
    optimizer: dict[str, dict[str, torch.Tensor]]


@dataclass(frozen=True)
class EpochLoss:
    """What an engine's pass over the rows did: the mean loss of the batches it ran, and
    whether it ran them all (False when `should_stop` ended it early)."""

    mean: float
    batches: int
    complete: bool


class Engine(Protocol):
    name: str  # "numpy" or "torch": recorded with the model and in checkpoints

    def train_epoch(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, should_stop: StopCheck | None
    ) -> EpochLoss:
        """One pass over rows already shuffled. `should_stop` is asked before every batch but
        the first, so an epoch always trains at least one batch."""
        ...

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """The loss over all rows, without training."""
        ...

    def weights(self) -> dict[str, torch.Tensor]:
        """A copy of the network's state dict (the keys of torch's nn.Sequential)."""
        ...

    def state(self) -> EngineState:
        """Weights and optimizer state: everything needed to continue bit for bit."""
        ...

    def load_state(self, state: EngineState) -> None:
        """Continue from `state`, whichever engine or device wrote it (shapes already checked)."""
        ...
