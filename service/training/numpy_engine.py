"""Hand-written forward and backward passes in numpy, for small networks on the CPU.

A training step of the notebook's 2 -> 80 -> 1 network is a few dozen tiny array operations.
Autograd's bookkeeping and torch's per-operation dispatch cost more than the arithmetic there,
so plain numpy on preallocated buffers trains such jobs several times faster. It starts from
the same initial weights and sees the same batches as the autograd engine, and its loss history
matches that engine's within float32 rounding (tests/training/test_engines.py proves it).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from service.training.engine import ADAM_BETAS, ADAM_EPS, HUBER_DELTA, StopCheck, TrainingConfig
from service.training.network import NetworkConfig
from service.training.numpy_network import ACTIVATIONS, Array

# Below this many weights, per-operation overhead dominates and numpy beats autograd.
MAX_PARAMETERS = 200_000


def supports(network: NetworkConfig, device: torch.device) -> bool:
    used = {network.activation, network.output_activation or "identity"}
    return (
        device.type == "cpu"
        and used <= ACTIVATIONS.keys()
        and network.n_parameters <= MAX_PARAMETERS
    )


def loss_and_gradient(name: str, output: Array, target: Array) -> tuple[float, Array]:
    """The mean loss and its gradient with respect to the output, as torch's losses define them."""
    if name == "cross_entropy":
        shifted = output - output.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        rows = np.arange(len(target))
        loss = float(np.mean(np.log(total[:, 0]) - shifted[rows, target]))
        grad = exp / total
        grad[rows, target] -= 1.0
        grad /= len(target)
        return loss, grad
    diff = output - target
    n = diff.size
    if name == "mse":
        return float(np.mean(diff * diff)), diff * (2.0 / n)
    if name == "mae":
        return float(np.mean(np.abs(diff))), np.sign(diff) * (1.0 / n)
    if name == "huber":
        abs_diff = np.abs(diff)
        quadratic = abs_diff < HUBER_DELTA
        per_row = np.where(
            quadratic, 0.5 * diff * diff, HUBER_DELTA * (abs_diff - 0.5 * HUBER_DELTA)
        )
        return float(np.mean(per_row)), np.clip(diff, -HUBER_DELTA, HUBER_DELTA) * (1.0 / n)
    raise ValueError(f"unknown loss {name!r}")


class NumpyEngine:
    def __init__(
        self, network: NetworkConfig, initial: dict[str, torch.Tensor], config: TrainingConfig
    ) -> None:
        self.config = config
        widths = [network.n_inputs, *network.hidden_layers, network.n_outputs]
        shapes = [(a, b) for a, b in itertools.pairwise(widths)]
        n_values = sum(a * b + b for a, b in shapes)
        # Parameters and gradients live in flat buffers, so the optimizer is a few whole-buffer
        # operations; each layer's W (in x out) and b are views into them.
        self.params = np.zeros(n_values, dtype=np.float32)
        self.grads = np.zeros_like(self.params)
        self.weights_in: list[Array] = []
        self.biases: list[Array] = []
        self.weight_grads: list[Array] = []
        self.bias_grads: list[Array] = []
        offset = 0
        for fan_in, fan_out in shapes:
            for buffer, out in ((self.params, self.weights_in), (self.grads, self.weight_grads)):
                out.append(buffer[offset : offset + fan_in * fan_out].reshape(fan_in, fan_out))
            offset += fan_in * fan_out
            self.biases.append(self.params[offset : offset + fan_out])
            self.bias_grads.append(self.grads[offset : offset + fan_out])
            offset += fan_out
        # nn.Sequential numbering: Linear layers sit at 0, 2, 4, ... (an activation after each).
        self.keys = [str(2 * i) for i in range(len(shapes))]
        for key, w, b in zip(self.keys, self.weights_in, self.biases, strict=True):
            w[:] = initial[f"{key}.weight"].detach().cpu().numpy().T
            b[:] = initial[f"{key}.bias"].detach().cpu().numpy()
        self.hidden = ACTIVATIONS[network.activation]
        self.output = ACTIVATIONS[network.output_activation or "identity"]
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
    ) -> float | None:
        xs, ys = x.numpy(), y.numpy()
        total, n_batches = 0.0, 0
        # Divergence shows up as inf/NaN, which the loop reports; numpy need not warn about it.
        with np.errstate(all="ignore"):
            for start in range(0, xs.shape[0], batch_size):
                if should_stop is not None and should_stop():
                    return None
                xb, yb = xs[start : start + batch_size], ys[start : start + batch_size]
                pre, post = self._forward(xb)
                loss, grad_out = loss_and_gradient(self.config.loss, post[-1], yb)
                self._backward(xb, pre, post, grad_out)
                self._optimize()
                total += loss
                n_batches += 1
        return total / n_batches

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> float:
        with np.errstate(all="ignore"):
            _, post = self._forward(x.numpy())
            return loss_and_gradient(self.config.loss, post[-1], y.numpy())[0]

    def weights(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for key, w, b in zip(self.keys, self.weights_in, self.biases, strict=True):
            state[f"{key}.weight"] = torch.from_numpy(w.T.copy())
            state[f"{key}.bias"] = torch.from_numpy(b.copy())
        return state

    def state(self) -> dict[str, torch.Tensor]:
        return {
            **{f"weights.{k}": v for k, v in self.weights().items()},
            "numpy.first_moment": torch.from_numpy(self.first_moment.copy()),
            "numpy.second_moment": torch.from_numpy(self.second_moment.copy()),
            "numpy.step": torch.tensor(self.step, dtype=torch.int64),
        }

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for key, w, b in zip(self.keys, self.weights_in, self.biases, strict=True):
            w[:] = state[f"weights.{key}.weight"].numpy().T
            b[:] = state[f"weights.{key}.bias"].numpy()
        self.first_moment[:] = state["numpy.first_moment"].numpy()
        self.second_moment[:] = state["numpy.second_moment"].numpy()
        self.step = int(state["numpy.step"].item())
