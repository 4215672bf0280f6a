"""The numpy engine for a stack of trials: T copies of one small network trained in one pass.

Layout. Every per-parameter array of the single NumpyEngine (weights, gradients, Adam's two
moments, SGD's momentum buffer) gains a leading trial dimension: one float32 buffer of shape
[trials, n_parameters], whose row t is exactly the single engine's flat buffer for trial t
(same FlatParameter offsets, weights kept transposed as in x out). A layer's weight W (in x out)
and its bias b (out) sit next to each other in that row, so `[W; b]` is one (in + 1) x out
matrix: a view of the buffer that multiplies inputs carrying a trailing column of ones, giving
the first layer's pre-activation (bias included) in one batched matmul, and its gradient (bias
row included) in one pass too. The optimizer is then a few whole-buffer operations, with each
trial's learning rate, momentum and weight decay as a [trials, 1] float32 column.

Activations and their gradients live in work buffers of shape [trials, batch, width],
allocated once per batch size and written with `out=`: at 16 trials of the notebook's
2 -> 80 -> 1 network one full-size operation costs about as much as the whole optimizer step,
so the pass avoids every full-size temporary it can. The arithmetic per trial is the single
engine's (same update rules, same float32 constants), reordered only where a sum runs in a
different order: a trial's loss history equals NumpyEngine's within float32 rounding.

Trials never mix: every operation is elementwise per trial or a matmul within one trial's
slice, so a trial that diverges to inf/NaN leaves the others' arithmetic untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from service.training.engine import (
    ADAM_BETAS,
    ADAM_EPS,
    HUBER_DELTA,
    EngineState,
    StopCheck,
    TrainingConfig,
)
from service.training.network import NetworkConfig
from service.training.numpy_engine import FlatParameter, NumpyEngine, can_train
from service.training.numpy_network import ACTIVATIONS, Array
from service.training.stacked_engine import StackedEpochLoss, check_stackable

# A first layer with at most this many inputs gets its weight gradient (inputs plus the bias
# row) as one matrix-vector product per row: OpenBLAS is slow at 2 or 3 x 80 results (3 x 80:
# 68 us at 16 trials of 200 rows, against 40 us row by row); from 4 rows on, one matmul wins.
ROW_BY_ROW_MAX_INPUTS = 2

# -- activations, written into preallocated buffers --

# (z, out) -> None: out = activation(z); out may be z itself.
ForwardInto = Callable[[Array, Array], None]
# (z, a, out) -> None: out = d activation / dz, from z and a = activation(z); out is z's
# buffer (z is not needed after), which is a's too for an in-place activation.
DerivativeInto = Callable[[Array, Array, Array], None]


@dataclass(frozen=True)
class StackedActivation:
    forward: ForwardInto
    derivative: DerivativeInto | None  # None: the derivative is 1
    # Whether a may overwrite z in one buffer: the derivative is then computed from a alone,
    # in place. Otherwise z and a get a buffer each (the derivative reads z, or needs a and
    # a second buffer to write to).
    in_place: bool
    # (a, out) -> None: out = q where the derivative is 1 - q (tanh: a * a), or None.
    complement: Callable[[Array, Array], None] | None = None


def _tanh_derivative(z: Array, a: Array, out: Array) -> None:
    # 1 - a*a, rounded exactly as numpy_network's expression rounds it.
    _tanh_complement(a, out)
    np.subtract(1.0, out, out=out)


def _tanh_complement(a: Array, out: Array) -> None:
    np.multiply(a, a, out=out)


def _sigmoid_forward(z: Array, out: Array) -> None:
    # 1 / (1 + exp(-z)), the same operations as numpy_network._sigmoid.
    np.negative(z, out=out)
    np.exp(out, out=out)
    np.add(out, 1.0, out=out)
    np.divide(1.0, out, out=out)


def _sigmoid_derivative(z: Array, a: Array, out: Array) -> None:
    np.subtract(1.0, a, out=out)
    np.multiply(a, out, out=out)


def _tanh_forward(z: Array, out: Array) -> None:
    np.tanh(z, out=out)


def _identity_forward(z: Array, out: Array) -> None:
    if out is not z:
        out[...] = z


# The hot activations, in place; numpy_network.ACTIVATIONS covers the rest, allocating.
IN_PLACE: dict[str, StackedActivation] = {
    "identity": StackedActivation(_identity_forward, None, in_place=True),
    "tanh": StackedActivation(
        _tanh_forward, _tanh_derivative, in_place=True, complement=_tanh_complement
    ),
    "sigmoid": StackedActivation(_sigmoid_forward, _sigmoid_derivative, in_place=False),
}


def stacked_activation(name: str) -> StackedActivation:
    if name in IN_PLACE:
        return IN_PLACE[name]
    forward, derivative = ACTIVATIONS[name]

    def forward_into(z: Array, out: Array) -> None:
        out[...] = forward(z)

    if derivative is None:
        return StackedActivation(forward_into, None, in_place=False)
    d = derivative

    def derivative_into(z: Array, a: Array, out: Array) -> None:
        out[...] = d(z, a)

    return StackedActivation(forward_into, derivative_into, in_place=False)


# -- losses: each trial's mean over its own batch, and the gradient of that mean --

# (output [trials, rows, outputs], target) -> (loss per trial, d loss / d output)
StackedLossGradient = Callable[[Array, Array], tuple[Array, Array]]


def _per_trial_mean(values: Array) -> Array:
    means: Array = values.reshape(values.shape[0], -1).mean(axis=1, dtype=np.float64)
    return means


def _mse(output: Array, target: Array) -> tuple[Array, Array]:
    diff = output - target
    per_trial = diff[0].size
    return _per_trial_mean(diff * diff), diff * (2.0 / per_trial)


def _mae(output: Array, target: Array) -> tuple[Array, Array]:
    diff = output - target
    return _per_trial_mean(np.abs(diff)), np.sign(diff) * (1.0 / diff[0].size)


def _huber(output: Array, target: Array) -> tuple[Array, Array]:
    diff = output - target
    abs_diff = np.abs(diff)
    per_element = np.where(
        abs_diff < HUBER_DELTA, 0.5 * diff * diff, HUBER_DELTA * (abs_diff - 0.5 * HUBER_DELTA)
    )
    gradient = np.clip(diff, -HUBER_DELTA, HUBER_DELTA) * (1.0 / diff[0].size)
    return _per_trial_mean(per_element), gradient


def _cross_entropy(output: Array, target: Array) -> tuple[Array, Array]:
    # output [trials, rows, classes], target [trials, rows] of class indices
    shifted = output - output.max(axis=2, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=2, keepdims=True)
    picked = target[:, :, None]
    per_row = np.log(total[:, :, 0]) - np.take_along_axis(shifted, picked, axis=2)[:, :, 0]
    grad = exp / total
    np.put_along_axis(grad, picked, np.take_along_axis(grad, picked, axis=2) - 1.0, axis=2)
    grad /= target.shape[1]
    return _per_trial_mean(per_row), grad


LOSSES: dict[str, StackedLossGradient] = {
    "mse": _mse,
    "mae": _mae,
    "huber": _huber,
    "cross_entropy": _cross_entropy,
}


# -- the layout --


@dataclass(frozen=True)
class StackedLayer:
    """One Linear layer's place in the [trials, n_parameters] buffers: its weight (in x out)
    immediately followed by its bias, so the two read as one (in + 1) x out matrix."""

    weight: FlatParameter
    bias: FlatParameter

    @property
    def fan_in(self) -> int:
        return self.weight.shape[0]

    @property
    def fan_out(self) -> int:
        return self.weight.shape[1]

    def augmented(self, buffer: Array) -> Array:
        """[W; b] of every trial: [trials, in + 1, out], a view of `buffer`."""
        block = buffer[:, self.weight.start : self.bias.stop]
        return block.reshape(buffer.shape[0], self.fan_in + 1, self.fan_out)


def _layers(layout: list[FlatParameter]) -> list[StackedLayer]:
    layers = [StackedLayer(w, b) for w, b in zip(layout[0::2], layout[1::2], strict=True)]
    for layer in layers:  # what augmented() relies on
        assert layer.weight.stop == layer.bias.start
    return layers


@dataclass
class _Pass:
    """Work buffers for one number of rows: every layer's activations and gradients."""

    pre: list[Array]  # each layer's z [trials, rows, out] (the same array as post where it may)
    post: list[Array]  # each layer's activation
    grads: list[Array]  # the loss's gradient with respect to each hidden layer's z
    ones: Array  # [rows]: sums over rows as a matrix-vector product (faster than .sum)
    scaled_inputs: Array  # [trials, in + 1, rows]: inputs times the output's gradient


# -- the engine --


class StackedNumpyEngine:
    """Several trials of one network trained together in numpy (stacked_engine.StackedEngine)."""

    name = "numpy"

    def __init__(
        self,
        network: NetworkConfig,
        initial: Sequence[dict[str, torch.Tensor]],
        configs: Sequence[TrainingConfig],
    ) -> None:
        check_stackable(configs)
        if len(initial) != len(configs):
            raise ValueError(f"{len(initial)} initial states for {len(configs)} trials")
        if not can_train(network, torch.device("cpu"), configs[0]):
            raise ValueError("the numpy engine cannot train this network, optimizer or loss")
        # The single engine's layout, borrowed so that state() matches it by construction.
        self.layout = NumpyEngine(network, initial[0], configs[0]).layout
        self.layers = _layers(self.layout)
        self.hidden = stacked_activation(network.activation)
        self.output = stacked_activation(network.output_activation or "identity")
        self.optimizer = configs[0].optimizer
        self.loss = LOSSES[configs[0].loss]
        n_trials, n_parameters = len(configs), self.layout[-1].stop
        self.params = np.zeros((n_trials, n_parameters), dtype=np.float32)
        # Adam's moments, or SGD's momentum buffer in first_moment.
        self.first_moment = np.zeros_like(self.params)
        self.second_moment = np.zeros_like(self.params)
        self.grads = np.zeros_like(self.params)
        self.scratch = np.zeros_like(self.params)
        # Optimizer steps taken, per trial: trials loaded from different checkpoints differ.
        self.step = np.zeros(n_trials, dtype=np.int64)
        self.configs = list(configs)
        for trial, state in enumerate(initial):
            for p in self.layout:
                p.write(self.params[trial], state[p.name])
        self._set_trials()

    # -- bookkeeping --

    @property
    def n_trials(self) -> int:
        return len(self.configs)

    def _set_trials(self) -> None:
        """What follows from the trials in the buffers, after __init__ and keep().

        Each trial's settings become [trials, 1] float32 columns: the float32 scalar the
        single engine multiplies by, so that each product rounds as it does there."""

        def column(values: Sequence[float] | Array) -> Array:
            return np.asarray(values, dtype=np.float64).astype(np.float32).reshape(-1, 1)

        self.learning_rate64 = np.array([c.learning_rate for c in self.configs], dtype=np.float64)
        self.learning_rate = column(self.learning_rate64)
        self.momentum = column([c.momentum for c in self.configs])
        self.weight_decay = column([c.weight_decay for c in self.configs])
        self.decoupled_decay = column(
            [1.0 - c.learning_rate * c.weight_decay for c in self.configs]
        )
        self.any_decay = any(c.weight_decay for c in self.configs)
        self.any_momentum = any(c.momentum for c in self.configs)
        # Each layer's [W; b] and its gradient, as views of the buffers keep() replaces.
        self.weights_of = [layer.augmented(self.params) for layer in self.layers]
        self.grads_of = [layer.augmented(self.grads) for layer in self.layers]
        # Work buffers depend on the number of trials; build them again on first use.
        self.passes: dict[int, _Pass] = {}
        self.input_buffers: dict[int, Array] = {}

    def _work(self, rows: int) -> _Pass:
        if rows not in self.passes:
            self.passes[rows] = self._new_pass(rows)
        return self.passes[rows]

    def _new_pass(self, rows: int) -> _Pass:
        n, first = self.n_trials, self.layers[0]

        def buffer(*shape: int) -> Array:
            return np.zeros((n, *shape), dtype=np.float32)

        pre, post = [], []
        for i, layer in enumerate(self.layers):
            activation = self.output if i == len(self.layers) - 1 else self.hidden
            z = buffer(rows, layer.fan_out)
            pre.append(z)
            post.append(buffer(rows, layer.fan_out) if not activation.in_place else z)
        return _Pass(
            pre=pre,
            post=post,
            grads=[buffer(rows, layer.fan_out) for layer in self.layers[:-1]],
            ones=np.ones(rows, dtype=np.float32),
            scaled_inputs=buffer(first.fan_in + 1, rows),
        )

    # -- forward and backward --

    def _inputs(self, xs: Array) -> Array:
        """`xs` [trials, rows, in] with a row of ones below, transposed: [trials, in + 1, rows].

        Written once per epoch; a batch is a slice of it. Transposed, one input's values over
        a batch are contiguous, as the first layer's gradient wants them (the forward pass
        reads them transposed back, which BLAS does at no cost)."""
        n_trials, rows, fan_in = xs.shape
        if rows not in self.input_buffers:
            buffer = np.empty((n_trials, fan_in + 1, rows), dtype=np.float32)
            buffer[:, fan_in, :] = 1.0
            self.input_buffers[rows] = buffer
        buffer = self.input_buffers[rows]
        buffer[:, :fan_in, :] = xs.transpose(0, 2, 1)
        return buffer

    def _forward(self, work: _Pass, inputs: Array) -> Array:
        """Every layer's activations into `work`; returns the network's output. `inputs` is
        the batch's slice of _inputs()."""
        last = len(self.layers) - 1
        below = inputs.transpose(0, 2, 1)
        for i, layer in enumerate(self.layers):
            z = work.pre[i]
            if i == 0:
                # The bias is the last row of [W; b], met by the inputs' column of ones.
                np.matmul(below, self.weights_of[0], out=z)
            else:
                weights = self.weights_of[i]
                np.matmul(below, weights[:, : layer.fan_in], out=z)
                z += weights[:, layer.fan_in : layer.fan_in + 1]
            (self.output if i == last else self.hidden).forward(z, work.post[i])
            below = work.post[i]
        return below

    def _backward(self, work: _Pass, inputs: Array, grad_out: Array) -> None:
        """Gradients of every trial's loss into self.grads; overwrites the activations."""
        last = len(self.layers) - 1
        g = self._through_activation(self.output, work, last, grad_out)
        if last == 1 and self.layers[1].fan_out == 1:
            self._backward_one_hidden_one_output(work, inputs, g)
            return
        for i in range(last, 0, -1):
            self._layer_gradient(i, work.post[i - 1], g, work.ones)
            weights = self.weights_of[i][:, : self.layers[i].fan_in]
            below = work.grads[i - 1]
            if weights.shape[2] == 1:  # an outer product: a broadcast beats matmul's path
                np.multiply(g, weights.transpose(0, 2, 1), out=below)
            else:
                np.matmul(g, weights.transpose(0, 2, 1), out=below)
            g = self._through_activation(self.hidden, work, i - 1, below)
        self._input_products(inputs, g)

    def _through_activation(
        self, activation: StackedActivation, work: _Pass, i: int, g: Array
    ) -> Array:
        """g times the activation's derivative at layer i, in place (g is a work buffer or
        the loss's own gradient); the derivative overwrites layer i's z (and a, where they
        share a buffer)."""
        if activation.derivative is None:
            return g
        derivative = work.pre[i]
        activation.derivative(work.pre[i], work.post[i], derivative)
        g *= derivative
        return g

    def _layer_gradient(self, i: int, below: Array, g: Array, ones: Array) -> None:
        """The weight and bias gradients of a layer after the first."""
        grads = self.grads_of[i]
        fan_in = self.layers[i].fan_in
        np.matmul(below.transpose(0, 2, 1), g, out=grads[:, :fan_in])
        np.matmul(ones, g, out=grads[:, fan_in])

    def _input_products(self, rows: Array, g: Array) -> None:
        """The first layer's [dW; db]: rows [trials, in + 1, batch] (the inputs and their
        ones, or those scaled) times g [trials, batch, out]."""
        grads = self.grads_of[0]
        if rows.shape[1] <= ROW_BY_ROW_MAX_INPUTS + 1:
            for k in range(rows.shape[1]):
                np.matmul(rows[:, k : k + 1], g, out=grads[:, k : k + 1])
        else:
            np.matmul(rows, g, out=grads)

    def _backward_one_hidden_one_output(self, work: _Pass, inputs: Array, g: Array) -> None:
        """The notebook's shape: one hidden layer, one output (g is [trials, rows, 1]).

        The hidden layer's gradient g[r] * w[j] * f'(z[r, j]) is never formed (two full-size
        passes): with u[k, r] = x[r, k] * g[r], its weight gradient is w[j] * (u @ f')[k, j].
        """
        self._layer_gradient(1, work.post[0], g, work.ones)
        np.multiply(inputs, g.transpose(0, 2, 1), out=work.scaled_inputs)
        grads = self.grads_of[0]
        buffer = work.pre[0]
        if self.hidden.complement is not None:
            # f' = 1 - q: u @ f' = sum(u) - u @ q, one full-size pass fewer.
            self.hidden.complement(work.post[0], buffer)
            self._input_products(work.scaled_inputs, buffer)
            np.subtract(work.scaled_inputs.sum(axis=2)[:, :, None], grads, out=grads)
        else:
            if self.hidden.derivative is None:
                buffer[...] = 1.0
            else:
                self.hidden.derivative(work.pre[0], work.post[0], buffer)
            self._input_products(work.scaled_inputs, buffer)
        grads *= self.weights_of[1][:, : self.layers[1].fan_in].transpose(0, 2, 1)

    # -- the optimizer --

    def _optimize(self) -> None:
        """torch.optim's update rules (as NumpyEngine._optimize), each trial with its own
        settings and step count."""
        self.step += 1
        if self.optimizer == "sgd":
            self._sgd()
        else:
            self._adam()

    def _sgd(self) -> None:
        p, g, tmp = self.params, self.grads, self.scratch
        if self.any_decay:
            np.multiply(p, self.weight_decay, out=tmp)
            g += tmp
        if self.any_momentum:
            buf = self.first_moment
            # torch starts the buffer as the first gradient: the same as 0 * momentum + g, for
            # the buffer is zero until then (load_state zeroes it too). A trial without
            # momentum multiplies its buffer by 0, leaving the gradient itself.
            buf *= self.momentum
            buf += g
            g = buf
        np.multiply(g, self.learning_rate, out=tmp)
        p -= tmp

    def _adam(self) -> None:
        p, g, tmp = self.params, self.grads, self.scratch
        beta1, beta2 = ADAM_BETAS
        if self.optimizer == "adamw":
            if self.any_decay:
                p *= self.decoupled_decay
        elif self.any_decay:
            np.multiply(p, self.weight_decay, out=tmp)
            g += tmp
        m, v = self.first_moment, self.second_moment
        m *= beta1
        np.multiply(g, 1.0 - beta1, out=tmp)
        m += tmp
        v *= beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - beta2
        v += tmp
        # The bias corrections in float64, rounded to float32 once, as the single engine's
        # Python floats are.
        correction1 = 1.0 - np.power(beta1, self.step)
        correction2 = 1.0 - np.power(beta2, self.step)
        np.sqrt(v, out=tmp)
        tmp /= np.power(correction2, 0.5).astype(np.float32)[:, None]
        tmp += ADAM_EPS
        np.divide(m, tmp, out=tmp)
        tmp *= (self.learning_rate64 / correction1).astype(np.float32)[:, None]
        p -= tmp

    # -- the protocol --

    def train_epoch(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, should_stop: StopCheck | None
    ) -> StackedEpochLoss:
        xs, ys = x.numpy(), y.numpy()
        rows, inputs = xs.shape[1], self._inputs(xs)
        totals = np.zeros(self.n_trials, dtype=np.float64)
        n_batches = 0
        # Divergence shows up as inf/NaN, which the loop reports per trial; no warnings.
        with np.errstate(all="ignore"):
            for start in range(0, rows, batch_size):
                if n_batches and should_stop is not None and should_stop():
                    return StackedEpochLoss(totals / n_batches, n_batches, complete=False)
                stop = min(start + batch_size, rows)
                work, batch = self._work(stop - start), inputs[:, :, start:stop]
                losses, grad_out = self.loss(self._forward(work, batch), ys[:, start:stop])
                self._backward(work, batch, grad_out)
                self._optimize()
                totals += losses
                n_batches += 1
        return StackedEpochLoss(totals / n_batches, n_batches, complete=True)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        xs = x.numpy()
        with np.errstate(all="ignore"):
            output = self._forward(self._work(xs.shape[1]), self._inputs(xs))
            losses, _ = self.loss(output, y.numpy())
        return losses

    def weights(self, trial: int) -> dict[str, torch.Tensor]:
        return {p.name: p.read(self.params[trial]) for p in self.layout}

    def state(self, trial: int) -> EngineState:
        slots: dict[str, dict[str, torch.Tensor]] = {p.name: {} for p in self.layout}
        step = int(self.step[trial])
        if step > 0:  # torch.optim creates its state at the first step, and so do we
            if self.optimizer == "sgd":
                if self.configs[trial].momentum:
                    for p in self.layout:
                        slots[p.name]["momentum_buffer"] = p.read(self.first_moment[trial])
            else:
                for p in self.layout:
                    slots[p.name] = {
                        "step": torch.tensor(float(step), dtype=torch.float32),
                        "exp_avg": p.read(self.first_moment[trial]),
                        "exp_avg_sq": p.read(self.second_moment[trial]),
                    }
        return EngineState(weights=self.weights(trial), optimizer=slots)

    def load_state(self, trial: int, state: EngineState) -> None:
        self.first_moment[trial] = 0.0
        self.second_moment[trial] = 0.0
        self.step[trial] = 0
        for p in self.layout:
            p.write(self.params[trial], state.weights[p.name])
            slots = state.optimizer.get(p.name, {})
            if "momentum_buffer" in slots:
                p.write(self.first_moment[trial], slots["momentum_buffer"])
                self.step[trial] = 1  # past SGD's first step: the buffer now accumulates
            if "exp_avg" in slots:
                p.write(self.first_moment[trial], slots["exp_avg"])
                p.write(self.second_moment[trial], slots["exp_avg_sq"])
                self.step[trial] = round(float(slots["step"].item()))

    def keep(self, trials: Sequence[int]) -> None:
        index = np.asarray(trials, dtype=np.int64)
        if len(index) == 0:
            raise ValueError("a stack keeps at least one trial")
        # Fancy indexing copies: each buffer stays contiguous, its rows renumbered 0...
        self.params = self.params[index]
        self.first_moment = self.first_moment[index]
        self.second_moment = self.second_moment[index]
        self.grads = np.zeros_like(self.params)
        self.scratch = np.zeros_like(self.params)
        self.step = self.step[index]
        self.configs = [self.configs[t] for t in trials]
        self._set_trials()
