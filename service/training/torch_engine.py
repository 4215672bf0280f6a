"""Autograd training on any torch device: the general engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn as nn

from service.training.engine import (
    ADAM_BETAS,
    ADAM_EPS,
    HUBER_DELTA,
    EngineState,
    EpochLoss,
    StopCheck,
    TrainingConfig,
)
from service.vocabulary import Loss, Optimizer

LOSSES: dict[Loss, Callable[[], nn.Module]] = {
    "mse": nn.MSELoss,
    "mae": nn.L1Loss,
    "huber": lambda: nn.HuberLoss(delta=HUBER_DELTA),
    "cross_entropy": nn.CrossEntropyLoss,
}

Parameters = Iterator[nn.Parameter]
# torch.optim's optimizers with the settings both engines share (engine.py's constants).
OPTIMIZERS: dict[Optimizer, Callable[[Parameters, TrainingConfig], torch.optim.Optimizer]] = {
    "adam": lambda params, c: torch.optim.Adam(
        params, lr=c.learning_rate, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=c.weight_decay
    ),
    "adamw": lambda params, c: torch.optim.AdamW(
        params, lr=c.learning_rate, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=c.weight_decay
    ),
    "sgd": lambda params, c: torch.optim.SGD(
        params, lr=c.learning_rate, momentum=c.momentum, weight_decay=c.weight_decay
    ),
}


def make_optimizer(network: nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.optimizer!r}")
    return OPTIMIZERS[config.optimizer](network.parameters(), config)


class TorchEngine:
    name = "torch"

    def __init__(self, network: nn.Module, config: TrainingConfig) -> None:
        self.network = network
        self.optimizer = make_optimizer(network, config)
        self.loss_fn = LOSSES[config.loss]()

    def train_epoch(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, should_stop: StopCheck | None
    ) -> EpochLoss:
        self.network.train()
        # Accumulated on the device: no host sync per step.
        loss_sum = torch.zeros((), device=x.device)
        n_batches = 0
        for start in range(0, x.shape[0], batch_size):
            if n_batches and should_stop is not None and should_stop():
                return EpochLoss(loss_sum.item() / n_batches, n_batches, complete=False)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(
                self.network(x[start : start + batch_size]), y[start : start + batch_size]
            )
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach()
            n_batches += 1
        return EpochLoss(loss_sum.item() / n_batches, n_batches, complete=True)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.network.eval()
        return float(self.loss_fn(self.network(x), y).item())

    def weights(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().clone() for name, t in self.network.state_dict().items()}

    def state(self) -> EngineState:
        slots: dict[str, dict[str, torch.Tensor]] = {}
        for name, param in self.network.named_parameters():
            entries = self.optimizer.state.get(param, {})
            slots[name] = {
                key: _as_tensor(value).detach().cpu().clone()
                for key, value in entries.items()
                if value is not None
            }
        weights = {name: t.cpu() for name, t in self.weights().items()}
        return EngineState(weights=weights, optimizer=slots)

    def load_state(self, state: EngineState) -> None:
        self.network.load_state_dict(state.weights)  # copies onto the network's device
        for name, param in self.network.named_parameters():
            entries = state.optimizer.get(name)
            if entries:
                self.optimizer.state[param] = {
                    key: _slot_on(param, key, value) for key, value in entries.items()
                }


def _as_tensor(value: object) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.tensor(value)


def _slot_on(param: torch.Tensor, key: str, value: torch.Tensor) -> torch.Tensor:
    """A stored slot as torch.optim keeps it for `param`."""
    if key == "step":
        # Plain (not fused, not capturable) Adam counts steps in a float32 scalar on the CPU.
        return value.detach().to(device="cpu", dtype=torch.float32).clone()
    return value.detach().to(device=param.device, dtype=param.dtype).clone()
