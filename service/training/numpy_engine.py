"""Hand-written forward and backward passes in numpy, for small networks on the CPU.

A training step of the notebook's 2 -> 80 -> 1 network is a few dozen tiny array operations.
Autograd's bookkeeping and torch's per-operation dispatch cost more than the arithmetic there,
so plain numpy on preallocated buffers trains such jobs several times faster. It starts from
the same initial weights and sees the same batches as the autograd engine, and its loss history
matches that engine's within float32 rounding (tests/training/test_engines.py proves it).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from service.training.engine import (
    ADAM_BETAS,
    ADAM_EPS,
    HUBER_DELTA,
    EngineState,
    EpochLoss,
    StopCheck,
    TrainingConfig,
)
from service.training.network import NetworkConfig
from service.training.numpy_network import ACTIVATIONS, Array
from service.tuning import NUMPY_MAX_PARAMETERS

# What this engine implements; for anything else, the autograd engine trains the job.
OPTIMIZERS: frozenset[str] = frozenset({"adam", "adamw", "sgd"})


def can_train(network: NetworkConfig, device: torch.device, config: TrainingConfig) -> bool:
    """Whether this engine can train `network` on `device` at all: on the CPU, with
    activations, an optimizer and a loss it implements."""
    used = {network.activation, network.output_activation or "identity"}
    return (
        device.type == "cpu"
        and used <= ACTIVATIONS.keys()
        and config.optimizer in OPTIMIZERS
        and config.loss in LOSSES
    )


def supports(network: NetworkConfig, device: torch.device, config: TrainingConfig) -> bool:
    """Whether this engine is the faster choice for `network` on `device`."""
    return can_train(network, device, config) and network.n_parameters <= NUMPY_MAX_PARAMETERS


LossGradient = Callable[[Array, Array], tuple[float, Array]]


def _cross_entropy(output: Array, target: Array) -> tuple[float, Array]:
    shifted = output - output.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(len(target))
    loss = float(np.mean(np.log(total[:, 0]) - shifted[rows, target]))
    grad = exp / total
    grad[rows, target] -= 1.0
    grad /= len(target)
    return loss, grad


def _mse(output: Array, target: Array) -> tuple[float, Array]:
    diff = output - target
    return float(np.mean(diff * diff)), diff * (2.0 / diff.size)


def _mae(output: Array, target: Array) -> tuple[float, Array]:
    diff = output - target
    return float(np.mean(np.abs(diff))), np.sign(diff) * (1.0 / diff.size)


def _huber(output: Array, target: Array) -> tuple[float, Array]:
    diff = output - target
    abs_diff = np.abs(diff)
    per_row = np.where(
        abs_diff < HUBER_DELTA, 0.5 * diff * diff, HUBER_DELTA * (abs_diff - 0.5 * HUBER_DELTA)
    )
    return float(np.mean(per_row)), np.clip(diff, -HUBER_DELTA, HUBER_DELTA) * (1.0 / diff.size)


# The mean loss and its gradient with respect to the output, as torch's losses define them.
LOSSES: dict[str, LossGradient] = {
    "mse": _mse,
    "mae": _mae,
    "huber": _huber,
    "cross_entropy": _cross_entropy,
}


def loss_and_gradient(name: str, output: Array, target: Array) -> tuple[float, Array]:
    return LOSSES[name](output, target)


@dataclass(frozen=True)
class FlatParameter:
    """Where one torch parameter lives in the flat buffers. A weight is kept transposed
    (in x out, so a batch multiplies it from the left); torch's layout is out x in."""

    name: str  # torch's state-dict name, e.g. "0.weight"
    start: int
    shape: tuple[int, ...]  # numpy's layout

    @property
    def stop(self) -> int:
        return self.start + math.prod(self.shape)

    def read(self, buffer: Array) -> torch.Tensor:
        """The parameter's values in `buffer`, as a torch tensor in torch's layout."""
        values = buffer[self.start : self.stop].reshape(self.shape)
        return torch.from_numpy((values.T if len(self.shape) == 2 else values).copy())

    def write(self, buffer: Array, tensor: torch.Tensor) -> None:
        values = tensor.detach().cpu().to(torch.float32).numpy()
        view = buffer[self.start : self.stop].reshape(self.shape)
        view[...] = values.T if len(self.shape) == 2 else values


class NumpyEngine:
    name = "numpy"

    def __init__(
        self, network: NetworkConfig, initial: dict[str, torch.Tensor], config: TrainingConfig
    ) -> None:
        self.config = config
        widths = [network.n_inputs, *network.hidden_layers, network.n_outputs]
        shapes = [(a, b) for a, b in itertools.pairwise(widths)]
        # Parameters and gradients live in flat buffers, so the optimizer is a few whole-buffer
        # operations; each layer's W (in x out) and b are views into them.
        self.layout: list[FlatParameter] = []
        offset = 0
        for i, (fan_in, fan_out) in enumerate(shapes):
            # nn.Sequential numbering: Linear layers sit at 0, 2, 4, ... (an activation after each).
            weight = FlatParameter(f"{2 * i}.weight", offset, (fan_in, fan_out))
            bias = FlatParameter(f"{2 * i}.bias", weight.stop, (fan_out,))
            self.layout += [weight, bias]
            offset = bias.stop
        self.params = np.zeros(offset, dtype=np.float32)
        self.grads = np.zeros_like(self.params)

        def views(buffer: Array, parameters: list[FlatParameter]) -> list[Array]:
            return [buffer[p.start : p.stop].reshape(p.shape) for p in parameters]

        self.weights_in = views(self.params, self.layout[0::2])
        self.biases = views(self.params, self.layout[1::2])
        self.weight_grads = views(self.grads, self.layout[0::2])
        self.bias_grads = views(self.grads, self.layout[1::2])
        for parameter in self.layout:
            parameter.write(self.params, initial[parameter.name])
        self.hidden = ACTIVATIONS[network.activation]
        self.output = ACTIVATIONS[network.output_activation or "identity"]
        # Adam's moments, or SGD's momentum buffer in first_moment.
        self.first_moment = np.zeros_like(self.params)
        self.second_moment = np.zeros_like(self.params)
        self.scratch = np.zeros_like(self.params)
        self.step = 0

    def _forward(self, x: Array) -> tuple[list[Array], list[Array]]:
        """Pre-activations and activations of every layer (the backward pass needs both)."""
        pre: list[Array] = []
        post: list[Array] = []
        a = x
        last = len(self.weights_in) - 1
        for i, (w, b) in enumerate(zip(self.weights_in, self.biases, strict=True)):
            z = a @ w
            z += b
            a = (self.output if i == last else self.hidden)[0](z)
            pre.append(z)
            post.append(a)
        return pre, post

    def _backward(self, x: Array, pre: list[Array], post: list[Array], grad_out: Array) -> None:
        last = len(self.weights_in) - 1
        derivative = self.output[1]
        g = grad_out if derivative is None else grad_out * derivative(pre[last], post[last])
        for i in range(last, -1, -1):
            below = x if i == 0 else post[i - 1]
            np.matmul(below.T, g, out=self.weight_grads[i])
            np.sum(g, axis=0, out=self.bias_grads[i])
            if i > 0:
                g = g @ self.weights_in[i].T
                if self.hidden[1] is not None:
                    g *= self.hidden[1](pre[i - 1], post[i - 1])

    def _optimize(self) -> None:
        """torch.optim's update rules, on the flat buffers."""
        c = self.config
        p, g, tmp = self.params, self.grads, self.scratch
        self.step += 1
        if c.optimizer == "sgd":
            if c.weight_decay:
                g += c.weight_decay * p
            if c.momentum:
                buf = self.first_moment
                if self.step == 1:
                    buf[:] = g
                else:
                    buf *= c.momentum
                    buf += g
                g = buf
            p -= c.learning_rate * g
            return
        if c.optimizer not in ("adam", "adamw"):  # can_train() keeps this from happening
            raise ValueError(f"the numpy engine has no optimizer {c.optimizer!r}")
        beta1, beta2 = ADAM_BETAS
        if c.optimizer == "adamw":
            p *= 1.0 - c.learning_rate * c.weight_decay
        elif c.weight_decay:
            g += c.weight_decay * p
        m, v = self.first_moment, self.second_moment
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - beta2
        v += tmp
        correction1 = 1.0 - beta1**self.step
        correction2 = 1.0 - beta2**self.step
        np.sqrt(v, out=tmp)
        tmp /= correction2**0.5
        tmp += ADAM_EPS
        np.divide(m, tmp, out=tmp)
        tmp *= c.learning_rate / correction1
        p -= tmp

    def train_epoch(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, should_stop: StopCheck | None
    ) -> EpochLoss:
        xs, ys = x.numpy(), y.numpy()
        total, n_batches = 0.0, 0
        # Divergence shows up as inf/NaN, which the loop reports; numpy need not warn about it.
        with np.errstate(all="ignore"):
            for start in range(0, xs.shape[0], batch_size):
                if n_batches and should_stop is not None and should_stop():
                    return EpochLoss(total / n_batches, n_batches, complete=False)
                xb, yb = xs[start : start + batch_size], ys[start : start + batch_size]
                pre, post = self._forward(xb)
                loss, grad_out = loss_and_gradient(self.config.loss, post[-1], yb)
                self._backward(xb, pre, post, grad_out)
                self._optimize()
                total += loss
                n_batches += 1
        return EpochLoss(total / n_batches, n_batches, complete=True)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> float:
        with np.errstate(all="ignore"):
            _, post = self._forward(x.numpy())
            return loss_and_gradient(self.config.loss, post[-1], y.numpy())[0]

    def weights(self) -> dict[str, torch.Tensor]:
        return {p.name: p.read(self.params) for p in self.layout}

    def state(self) -> EngineState:
        slots: dict[str, dict[str, torch.Tensor]] = {p.name: {} for p in self.layout}
        if self.step > 0:  # torch.optim creates its state at the first step, and so do we
            if self.config.optimizer == "sgd":
                if self.config.momentum:
                    for p in self.layout:
                        slots[p.name]["momentum_buffer"] = p.read(self.first_moment)
            else:
                for p in self.layout:
                    slots[p.name] = {
                        "step": torch.tensor(float(self.step), dtype=torch.float32),
                        "exp_avg": p.read(self.first_moment),
                        "exp_avg_sq": p.read(self.second_moment),
                    }
        return EngineState(weights=self.weights(), optimizer=slots)

    def load_state(self, state: EngineState) -> None:
        self.first_moment[:] = 0.0
        self.second_moment[:] = 0.0
        self.step = 0
        for p in self.layout:
            p.write(self.params, state.weights[p.name])
            slots = state.optimizer.get(p.name, {})
            if "momentum_buffer" in slots:
                p.write(self.first_moment, slots["momentum_buffer"])
                self.step = 1  # past SGD's first step: the buffer now accumulates
            if "exp_avg" in slots:
                p.write(self.first_moment, slots["exp_avg"])
                p.write(self.second_moment, slots["exp_avg_sq"])
                # torch counts steps per parameter; one optimizer steps them all together.
                self.step = round(float(slots["step"].item()))
