"""Networks in numpy: activations with their derivatives, and a forward-only network.

The numpy training engine and the predictor share these, so training and serving apply
exactly the same functions. Each mirrors its torch.nn namesake (defaults included).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from service.training.network import NetworkConfig
from service.tuning import EINSUM_MAX_WEIGHTS

Array = np.ndarray
LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default
SOFTPLUS_THRESHOLD = 20.0  # torch.nn.Softplus's default: linear above it


def _sigmoid(z: Array) -> Array:
    out: Array = 1.0 / (1.0 + np.exp(-z))
    return out


# activation name -> (forward z -> a, derivative (z, a) -> da/dz); None derivative means 1.
Activation = tuple[Callable[[Array], Array], Callable[[Array, Array], Array] | None]
ACTIVATIONS: dict[str, Activation] = {
    "identity": (lambda z: z, None),
    "tanh": (np.tanh, lambda z, a: 1.0 - a * a),
    "sigmoid": (_sigmoid, lambda z, a: a * (1.0 - a)),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z, a: (z > 0).astype(z.dtype)),
    "leaky_relu": (
        lambda z: np.where(z > 0, z, LEAKY_SLOPE * z),
        lambda z, a: np.where(z > 0, 1.0, LEAKY_SLOPE).astype(z.dtype),
    ),
    "elu": (lambda z: np.where(z > 0, z, np.expm1(z)), lambda z, a: np.where(z > 0, 1.0, a + 1.0)),
    "softplus": (
        lambda z: np.where(z > SOFTPLUS_THRESHOLD, z, np.log1p(np.exp(z))),
        lambda z, a: np.where(z > SOFTPLUS_THRESHOLD, 1.0, _sigmoid(z)).astype(z.dtype),
    ),
    "silu": (lambda z: z * _sigmoid(z), lambda z, a: _silu_grad(z)),
}


def _silu_grad(z: Array) -> Array:
    s = _sigmoid(z)
    out: Array = s * (1.0 + z * (1.0 - s))
    return out


class NumpyNetwork:
    """A stored network's forward pass in numpy: a handful of operations, no dispatch overhead.

    For small layers (the common case here) a row's output is the same bit for bit whether it
    is predicted alone or inside a micro-batch; for large layers, equal within float32 rounding.
    """

    def __init__(self, config: NetworkConfig, state: dict[str, torch.Tensor]) -> None:
        n_layers = len(config.hidden_layers) + 1
        # nn.Sequential numbering: Linear layers sit at 0, 2, 4, ... (an activation after each).
        self.layers = [
            (state[f"{2 * i}.weight"].numpy().T.copy(), state[f"{2 * i}.bias"].numpy().copy())
            for i in range(n_layers)
        ]
        self.hidden = ACTIVATIONS[config.activation][0]
        self.output = ACTIVATIONS[config.output_activation or "identity"][0]

    @staticmethod
    def supports(config: NetworkConfig) -> bool:
        return {config.activation, config.output_activation or "identity"} <= ACTIVATIONS.keys()

    def __call__(self, x: Array) -> Array:
        """Scaled input rows in (any float dtype), float32 network outputs out."""
        a = x.astype(np.float32, copy=False)
        last = len(self.layers) - 1
        with np.errstate(all="ignore"):  # overflow saturates exactly as torch's does
            for i, (w, b) in enumerate(self.layers):
                z = np.einsum("ij,jk->ik", a, w) if w.size <= EINSUM_MAX_WEIGHTS else a @ w
                z += b
                a = (self.output if i == last else self.hidden)(z)
        return a
