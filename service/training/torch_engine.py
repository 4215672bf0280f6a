"""Autograd training on any torch device: the general engine."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from service.training.engine import ADAM_BETAS, ADAM_EPS, HUBER_DELTA, StopCheck, TrainingConfig

LOSSES: dict[str, Callable[[], nn.Module]] = {
    "mse": nn.MSELoss,
    "mae": nn.L1Loss,
    "huber": lambda: nn.HuberLoss(delta=HUBER_DELTA),
    "cross_entropy": nn.CrossEntropyLoss,
}


def make_optimizer(network: nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    params = network.parameters()
    lr, decay = config.learning_rate, config.weight_decay
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


class TorchEngine:
    def __init__(self, network: nn.Module, config: TrainingConfig) -> None:
        self.network = network
        self.optimizer = make_optimizer(network, config)
        self.loss_fn = LOSSES[config.loss]()

    def train_epoch(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, should_stop: StopCheck | None
    ) -> float | None:
        self.network.train()
        # Accumulated on the device: no host sync per step.
        loss_sum = torch.zeros((), device=x.device)
        n_batches = 0
        for start in range(0, x.shape[0], batch_size):
            if should_stop is not None and should_stop():
                return None
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(
                self.network(x[start : start + batch_size]), y[start : start + batch_size]
            )
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach()
            n_batches += 1
        return loss_sum.item() / n_batches

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.network.eval()
        return float(self.loss_fn(self.network(x), y).item())

    def weights(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().clone() for name, t in self.network.state_dict().items()}

    def state(self) -> dict[str, torch.Tensor]:
        state = {f"weights.{name}": t for name, t in self.weights().items()}
        for index, param in enumerate(self.network.parameters()):
            for key, value in self.optimizer.state.get(param, {}).items():
                tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
                state[f"optimizer.{index}.{key}"] = tensor.detach().clone()
        return state

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        weights = {
            k.removeprefix("weights."): v for k, v in state.items() if k.startswith("weights.")
        }
        self.network.load_state_dict(weights)
        device = next(self.network.parameters()).device
        for index, param in enumerate(self.network.parameters()):
            prefix = f"optimizer.{index}."
            entries = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            if entries:
                self.optimizer.state[param] = {
                    # torch keeps Adam's step on the CPU unless capturable/fused.
                    key: value.clone() if key == "step" else value.to(device).clone()
                    for key, value in entries.items()
                }
