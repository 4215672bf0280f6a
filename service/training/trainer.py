"""The training loop: pure (no database, no HTTP), reporting each epoch through a callback."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn

from service.training.data import TrainingTensors

LOSSES: dict[str, Callable[[], nn.Module]] = {
    "mse": nn.MSELoss,
    "mae": nn.L1Loss,
    "huber": nn.HuberLoss,
    "cross_entropy": nn.CrossEntropyLoss,
}

StopReason = Literal["completed", "early_stopped", "cancelled"]


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


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based, as users count epochs
    train_loss: float  # mean of the epoch's batch losses, as the notebook records it
    val_loss: float | None
    seconds: float  # since training started


@dataclass
class TrainingResult:
    state: dict[str, torch.Tensor]
    history: list[EpochResult] = field(default_factory=list)
    best_epoch: int | None = None
    stop_reason: StopReason = "completed"


class TrainingDiverged(Exception):
    """The loss became NaN or infinite: more epochs would not bring it back."""

    def __init__(self, epoch: int, which: str) -> None:
        super().__init__(
            f"training diverged: the {which} loss became NaN or infinite at epoch {epoch}; "
            "try a smaller learning_rate or scaled targets"
        )
        self.epoch = epoch


def make_optimizer(network: nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    params = network.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def train(
    network: nn.Module,
    data: TrainingTensors,
    config: TrainingConfig,
    *,
    on_epoch: Callable[[EpochResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainingResult:
    """Fit `network` in place; return its final (or best, with early stopping) weights.

    The network must already sit on the device of `data`. Given the same initial weights,
    data, config and seed, a CPU run gives the same loss history bit for bit.
    """
    device = data.x_train.device
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    optimizer = make_optimizer(network, config)
    loss_fn = LOSSES[config.loss]()
    n_rows = data.x_train.shape[0]
    batch_size = min(config.batch_size, n_rows)
    n_batches = math.ceil(n_rows / batch_size)

    result = TrainingResult(state={})
    best_val = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    epochs_since_best = 0
    started = time.perf_counter()

    for epoch in range(1, config.epochs + 1):
        network.train()
        # One gather per epoch; batches are then views, not per-sample copies.
        order = torch.randperm(n_rows, generator=generator, device=device)
        x_epoch, y_epoch = data.x_train[order], data.y_train[order]
        # Accumulated on the device: no host sync per step.
        loss_sum = torch.zeros((), device=device)
        for start in range(0, n_rows, batch_size):
            if should_stop is not None and should_stop():
                result.stop_reason = "cancelled"
                result.state = _copy_state(network)
                return result
            x_batch = x_epoch[start : start + batch_size]
            y_batch = y_epoch[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(network(x_batch), y_batch)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()

        train_loss = loss_sum.item() / n_batches
        if not math.isfinite(train_loss):
            raise TrainingDiverged(epoch, "training")
        val_loss = evaluate(network, data.x_val, data.y_val, loss_fn)
        if val_loss is not None and not math.isfinite(val_loss):
            raise TrainingDiverged(epoch, "validation")
        record = EpochResult(epoch, train_loss, val_loss, time.perf_counter() - started)
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(record)

        if val_loss is not None and config.early_stopping_patience is not None:
            if val_loss < best_val:
                best_val, result.best_epoch, epochs_since_best = val_loss, epoch, 0
                best_state = _copy_state(network)
            else:
                epochs_since_best += 1
                if epochs_since_best >= config.early_stopping_patience:
                    result.stop_reason = "early_stopped"
                    break

    result.state = best_state if best_state is not None else _copy_state(network)
    return result


@torch.no_grad()
def evaluate(
    network: nn.Module, x: torch.Tensor | None, y: torch.Tensor | None, loss_fn: nn.Module
) -> float | None:
    if x is None or y is None:
        return None
    network.eval()
    value = float(loss_fn(network(x), y).item())
    network.train()
    return value


def _copy_state(network: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in network.state_dict().items()}
