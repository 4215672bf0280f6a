"""The feed-forward network a job describes, and the torch module built from it."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch.nn as nn

from service.vocabulary import Activation, as_activation

ACTIVATIONS: dict[Activation, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}


@dataclass(frozen=True)
class NetworkConfig:
    n_inputs: int
    hidden_layers: tuple[int, ...]
    n_outputs: int
    activation: Activation
    output_activation: Activation | None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hidden_layers": list(self.hidden_layers)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        return cls(
            n_inputs=int(data["n_inputs"]),
            hidden_layers=tuple(int(w) for w in data["hidden_layers"]),
            n_outputs=int(data["n_outputs"]),
            activation=as_activation(data["activation"]),
            output_activation=(
                None
                if data.get("output_activation") is None
                else as_activation(data["output_activation"])
            ),
        )

    @property
    def n_parameters(self) -> int:
        widths = [self.n_inputs, *self.hidden_layers, self.n_outputs]
        return sum((a + 1) * b for a, b in itertools.pairwise(widths))


def build_network(config: NetworkConfig) -> nn.Sequential:
    """Linear layers with the hidden activation between them, then the output activation."""
    layers: list[nn.Module] = []
    width = config.n_inputs
    for hidden in config.hidden_layers:
        layers += [nn.Linear(width, hidden), ACTIVATIONS[config.activation]()]
        width = hidden
    layers.append(nn.Linear(width, config.n_outputs))
    if config.output_activation is not None:
        layers.append(ACTIVATIONS[config.output_activation]())
    return nn.Sequential(*layers)
