"""The names a job may give its network's activation, its optimizer and its loss.

One list of each: the API's schema (and so its OpenAPI enums) takes them from here, each
engine keys its table of implementations by them, and tests/test_vocabulary.py fails for a
name that an engine neither implements nor declines.
"""

from __future__ import annotations

from typing import Literal, get_args

Activation = Literal[
    "tanh", "relu", "gelu", "sigmoid", "silu", "leaky_relu", "elu", "softplus", "identity"
]
Optimizer = Literal["adam", "adamw", "sgd"]
Loss = Literal["mse", "mae", "huber", "cross_entropy"]

ACTIVATIONS: tuple[Activation, ...] = get_args(Activation)
OPTIMIZERS: tuple[Optimizer, ...] = get_args(Optimizer)
LOSSES: tuple[Loss, ...] = get_args(Loss)
REGRESSION_LOSSES: tuple[Loss, ...] = ("mse", "mae", "huber")
CLASSIFICATION_LOSSES: tuple[Loss, ...] = ("cross_entropy",)


def as_activation(value: object) -> Activation:
    """A stored activation name, checked: stored architectures are read back through this."""
    if value not in ACTIVATIONS:
        raise ValueError(f"unknown activation {value!r}")
    return value
