"""Stacked trials in torch, with hand-written gradients and optimizer updates as tensor ops.

Why by hand rather than autograd and torch.optim: torch.optim takes one learning rate per
parameter group, while a stack's trials each have their own; and a training step here must be
capturable into a CUDA graph (cuda_graphs.py), which rules out host syncs and Python branches on
values that change per step. So every per-trial setting is a [trials, 1] tensor, Adam's step
count lives on the device, and the whole step is a fixed sequence of kernels. The backward pass
calls the same aten backward kernels autograd calls, so a stack of one follows TorchEngine within
float32 rounding (tests/training/test_stacked_torch.py).

Layout: every parameter of a trial sits in one flat row of `params` [trials, n_parameters]
(each weight kept as in x out, so a batch multiplies it from the left); gradients and optimizer
moments are the same shape, so the optimizer is a handful of whole-buffer operations.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from service.training.cuda_graphs import EpochRunner
from service.training.engine import (
    ADAM_BETAS,
    ADAM_EPS,
    HUBER_DELTA,
    EngineState,
    EpochLoss,
    StopCheck,
    TrainingConfig,
)
from service.training.network import ACTIVATIONS, NetworkConfig
from service.training.stacked_engine import StackedEpochLoss, check_stackable
from service.vocabulary import Activation, Loss

Tensor = torch.Tensor
aten = torch.ops.aten

# The gradient with respect to an activation's input, from the gradient with respect to its
# output: (grad, pre-activation, activation) -> grad. The aten kernels autograd itself uses,
# with nn's defaults (network.py builds each activation with its defaults).
ACTIVATION_GRADIENTS: dict[Activation, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "tanh": lambda g, z, a: aten.tanh_backward(g, a),
    "sigmoid": lambda g, z, a: aten.sigmoid_backward(g, a),
    "relu": lambda g, z, a: aten.threshold_backward(g, a, 0),
    "gelu": lambda g, z, a: aten.gelu_backward(g, z, approximate="none"),
    "silu": lambda g, z, a: aten.silu_backward(g, z),
    "leaky_relu": lambda g, z, a: aten.leaky_relu_backward(g, z, 0.01, False),
    "elu": lambda g, z, a: aten.elu_backward(g, 1.0, 1.0, 1.0, False, z),
    "softplus": lambda g, z, a: aten.softplus_backward(g, z, 1.0, 20.0),
    "identity": lambda g, z, a: g,
}

# evaluate() runs the rows in chunks of about this many activations, so a large validation set
# times many trials does not need its whole activations at once.
EVALUATE_CHUNK_ELEMENTS = 1 << 24

# A loss: (output, target, with_grad) -> (each trial's mean loss [trials], d loss / d output).
LossFunction = Callable[[Tensor, Tensor, bool], tuple[Tensor, Tensor | None]]


def _mse(out: Tensor, target: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
    diff = out - target
    loss = diff.square().mean(dim=(1, 2))
    return loss, diff.mul_(2.0 / diff[0].numel()) if with_grad else None


def _mae(out: Tensor, target: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
    diff = out - target
    loss = diff.abs().mean(dim=(1, 2))
    return loss, diff.sign_().mul_(1.0 / diff[0].numel()) if with_grad else None


def _huber(out: Tensor, target: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
    diff = out - target
    abs_diff = diff.abs()
    per_element = torch.where(
        abs_diff < HUBER_DELTA,
        0.5 * diff * diff,
        HUBER_DELTA * (abs_diff - 0.5 * HUBER_DELTA),
    )
    loss = per_element.mean(dim=(1, 2))
    if not with_grad:
        return loss, None
    return loss, diff.clamp_(-HUBER_DELTA, HUBER_DELTA).mul_(1.0 / diff[0].numel())


def _cross_entropy(out: Tensor, target: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
    log_p = torch.log_softmax(out, dim=2)
    picked = target.unsqueeze(2)
    loss = -log_p.gather(2, picked).mean(dim=(1, 2))
    if not with_grad:
        return loss, None
    grad = log_p.exp_()
    grad.scatter_add_(2, picked, torch.full_like(picked, -1.0, dtype=grad.dtype))
    return loss, grad.mul_(1.0 / target.shape[1])


LOSSES: dict[Loss, LossFunction] = {
    "mse": _mse,
    "mae": _mae,
    "huber": _huber,
    "cross_entropy": _cross_entropy,
}


@dataclass(frozen=True)
class FlatSlot:
    """Where one torch parameter lives in a trial's flat row. Torch's layout of a weight is
    out x in; here it is in x out (fan_in is None for a bias, kept as 1 x out)."""

    name: str  # nn.Sequential's state-dict name, e.g. "0.weight"
    start: int
    fan_in: int | None
    fan_out: int

    @property
    def stop(self) -> int:
        return self.start + (self.fan_in or 1) * self.fan_out

    def view(self, flat: Tensor) -> Tensor:
        """[trials, in, out] or [trials, 1, out]: a view into `flat` [trials, n_parameters]."""
        return flat[:, self.start : self.stop].view(flat.shape[0], self.fan_in or 1, self.fan_out)

    def read(self, flat: Tensor, trial: int) -> Tensor:
        """One trial's values, on the CPU, in torch's layout."""
        values = self.view(flat)[trial]
        values = values.T if self.fan_in is not None else values[0]
        return values.detach().to("cpu", torch.float32).contiguous().clone()

    def write(self, flat: Tensor, trial: int, value: Tensor) -> None:
        values = value.detach().to(flat.device, torch.float32)
        target = self.view(flat)[trial]
        target.copy_(values.T if self.fan_in is not None else values.view(1, -1))


def flat_layout(network: NetworkConfig) -> list[FlatSlot]:
    """Each Linear layer's weight then bias; nn.Sequential numbers them 0, 2, 4, ..."""
    widths = [network.n_inputs, *network.hidden_layers, network.n_outputs]
    slots: list[FlatSlot] = []
    offset = 0
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        weight = FlatSlot(f"{2 * i}.weight", offset, fan_in, fan_out)
        bias = FlatSlot(f"{2 * i}.bias", weight.stop, None, fan_out)
        slots += [weight, bias]
        offset = bias.stop
    return slots


def _per_trial(values: Sequence[float], device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.tensor(list(values), dtype=dtype, device=device).view(-1, 1)


class StackedOptimizer:
    """torch.optim's Adam, AdamW and SGD over flat [trials, n_parameters] buffers, each trial
    with its own learning rate, momentum and weight decay.

    Steps run in runs of n (begin(n), update(k) for k < n, end(k_done)): begin() works out
    Adam's bias corrections for the next n steps of every trial in a few kernels, from the
    step counts on the device, so a step itself is only whole-buffer arithmetic.
    """

    def __init__(self, configs: Sequence[TrainingConfig], n_parameters: int, device: torch.device):
        self.kind = configs[0].optimizer
        if self.kind not in ("adam", "adamw", "sgd"):
            raise ValueError(f"unknown optimizer {self.kind!r}")
        shape = (len(configs), n_parameters)
        self.first = torch.zeros(shape, device=device)  # exp_avg, or SGD's momentum_buffer
        self.second = torch.zeros(shape, device=device) if self.kind != "sgd" else None
        self.steps = torch.zeros(len(configs), 1, dtype=torch.float64, device=device)
        self._set_hyperparameters(configs, device)

    def _set_hyperparameters(self, configs: Sequence[TrainingConfig], device: torch.device) -> None:
        self.configs = list(configs)
        lr = [c.learning_rate for c in configs]
        decay = [c.weight_decay for c in configs]
        self.lr64 = _per_trial(lr, device, torch.float64)
        self.neg_lr = _per_trial([-v for v in lr], device, torch.float32)
        self.weight_decay = _per_trial(decay, device, torch.float32)
        self.momentum = _per_trial([c.momentum for c in configs], device, torch.float32)
        # AdamW shrinks the weights by 1 - lr * wd, worked out in double as torch.optim does.
        shrink = [1.0 - a * b for a, b in zip(lr, decay, strict=True)]
        self.shrink = _per_trial(shrink, device, torch.float32)
        # Fixed per stack, so skipping the no-op kernels is no value-dependent branch.
        self.any_decay = any(decay)
        self.any_momentum = any(c.momentum for c in configs)

    def keep(self, index: Tensor, configs: Sequence[TrainingConfig]) -> None:
        self.first = self.first.index_select(0, index)
        self.second = None if self.second is None else self.second.index_select(0, index)
        self.steps = self.steps.index_select(0, index)
        self._set_hyperparameters(configs, self.first.device)

    def state_tensors(self) -> list[Tensor]:
        """Everything a step changes, for cuda_graphs.py to save and restore around warm-up."""
        return [t for t in (self.first, self.second, self.steps) if t is not None]

    def begin(self, n: int) -> tuple[Tensor, Tensor] | None:
        """Adam's -lr / (1 - beta1^t) and sqrt(1 - beta2^t) for each trial's next n steps,
        [n, trials, 1] each (in double, as torch.optim works them out, then float32)."""
        if self.kind == "sgd":
            return None
        beta1, beta2 = ADAM_BETAS
        ahead = torch.arange(1, n + 1, dtype=torch.float64, device=self.steps.device)
        t = self.steps.unsqueeze(0) + ahead.view(n, 1, 1)
        step_size = -self.lr64 / (1.0 - torch.pow(beta1, t))
        correction2 = torch.sqrt(1.0 - torch.pow(beta2, t))
        return step_size.to(torch.float32), correction2.to(torch.float32)

    def end(self, n: int) -> None:
        self.steps.add_(n)

    def update(
        self, params: Tensor, grads: Tensor, k: int, tables: tuple[Tensor, Tensor] | None
    ) -> None:
        """Step k of the run begin() prepared: `grads` is used as scratch."""
        if tables is None:
            self._sgd(params, grads)
            return
        if self.any_decay:
            if self.kind == "adamw":
                params.mul_(self.shrink)
            else:
                grads.addcmul_(params, self.weight_decay)
        beta1, beta2 = ADAM_BETAS
        step_size, correction2 = tables[0][k], tables[1][k]
        assert self.second is not None
        self.first.lerp_(grads, 1.0 - beta1)
        self.second.mul_(beta2).addcmul_(grads, grads, value=1.0 - beta2)
        denom = self.second.sqrt().div_(correction2).add_(ADAM_EPS)
        params.addcmul_(torch.div(self.first, denom, out=denom), step_size)

    def _sgd(self, params: Tensor, grads: Tensor) -> None:
        if self.any_decay:
            grads.addcmul_(params, self.weight_decay)
        if self.any_momentum:
            # The buffer starts at zero, so the first step makes it the gradient exactly, as
            # torch.optim's clone does; a trial without momentum multiplies it by zero.
            grads = self.first.mul_(self.momentum).add_(grads)
        params.addcmul_(grads, self.neg_lr)

    def read_slots(self, layout: Sequence[FlatSlot], trial: int) -> dict[str, dict[str, Tensor]]:
        """One trial's slots under torch.optim's names (absent until its first step)."""
        steps = float(self.steps[trial, 0].item())
        slots: dict[str, dict[str, Tensor]] = {p.name: {} for p in layout}
        if steps < 1:
            return slots
        if self.second is not None:
            second = self.second
            for p in layout:
                slots[p.name] = {
                    "step": torch.tensor(steps, dtype=torch.float32),
                    "exp_avg": p.read(self.first, trial),
                    "exp_avg_sq": p.read(second, trial),
                }
        elif self.configs[trial].momentum:
            for p in layout:
                slots[p.name] = {"momentum_buffer": p.read(self.first, trial)}
        return slots

    def write_slots(
        self, layout: Sequence[FlatSlot], trial: int, slots: dict[str, dict[str, Tensor]]
    ) -> None:
        self.first[trial].zero_()
        if self.second is not None:
            self.second[trial].zero_()
        steps = 0.0
        for p in layout:
            entries = slots.get(p.name, {})
            if "momentum_buffer" in entries:
                p.write(self.first, trial, entries["momentum_buffer"])
                steps = max(steps, 1.0)  # past SGD's first step: the buffer now accumulates
            if "exp_avg" in entries and self.second is not None:
                p.write(self.first, trial, entries["exp_avg"])
                p.write(self.second, trial, entries["exp_avg_sq"])
                steps = float(round(float(entries["step"].item())))
        self.steps[trial].fill_(steps)


class StackedTorchEngine:
    """The StackedEngine protocol (stacked_engine.py) in torch, on any device.

    With `graphs`, epochs run through cuda_graphs.EpochRunner: blocks of steps that gather
    their own batches from static buffers, captured once as CUDA graphs and replayed (on a CPU,
    or where capture fails, the same blocks run eagerly).
    """

    name = "torch"

    def __init__(
        self,
        network: NetworkConfig,
        initial: Sequence[dict[str, Tensor]],
        configs: Sequence[TrainingConfig],
        device: torch.device,
        graphs: bool = False,
    ) -> None:
        check_stackable(configs)
        if len(initial) != len(configs):
            raise ValueError("one set of initial weights per trial")
        self.network, self.device, self.configs = network, device, list(configs)
        self.layout = flat_layout(network)
        n_parameters = self.layout[-1].stop
        self.params = torch.zeros(len(configs), n_parameters, device=device)
        self.grads = torch.zeros_like(self.params)
        for trial, weights in enumerate(initial):
            for slot in self.layout:
                slot.write(self.params, trial, weights[slot.name])
        self.optimizer = StackedOptimizer(configs, n_parameters, device)
        self.loss_fn = LOSSES[configs[0].loss]
        self.hidden = ACTIVATIONS[network.activation]()
        self.hidden_grad = ACTIVATION_GRADIENTS[network.activation]
        output = network.output_activation or "identity"
        self.output, self.output_grad = ACTIVATIONS[output](), ACTIVATION_GRADIENTS[output]
        self.loss_sum = torch.zeros(len(configs), device=device)
        self.runner = EpochRunner(self, device) if graphs else None
        self._bind_views()

    def _bind_views(self) -> None:
        """Per-layer views into the flat buffers: (weight, bias, weight grad, bias grad)."""
        pairs = zip(self.layout[0::2], self.layout[1::2], strict=True)
        self.layers = [
            (w.view(self.params), b.view(self.params), w.view(self.grads), b.view(self.grads))
            for w, b in pairs
        ]

    @property
    def n_trials(self) -> int:
        return int(self.params.shape[0])

    # -- the step: the one function the eager loop, the eager blocks and the graphs all run --

    def _forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Pre-activations and activations of every layer (the backward pass needs both)."""
        pre: list[Tensor] = []
        post: list[Tensor] = []
        a = x
        last = len(self.layers) - 1
        for i, (w, b, _, _) in enumerate(self.layers):
            z = torch.baddbmm(b, a, w)
            a = (self.output if i == last else self.hidden)(z)
            pre.append(z)
            post.append(a)
        return pre, post

    def _backward(self, x: Tensor, pre: list[Tensor], post: list[Tensor], g: Tensor) -> None:
        """Writes every layer's gradient into `self.grads`."""
        last = len(self.layers) - 1
        g = self.output_grad(g, pre[last], post[last])
        for i in range(last, -1, -1):
            w, _, w_grad, b_grad = self.layers[i]
            below = x if i == 0 else post[i - 1]
            torch.bmm(below.transpose(1, 2), g, out=w_grad)
            torch.sum(g, dim=1, keepdim=True, out=b_grad)
            if i > 0:
                g = self.hidden_grad(torch.bmm(g, w.transpose(1, 2)), pre[i - 1], post[i - 1])

    def _step(self, x: Tensor, y: Tensor, k: int, tables: tuple[Tensor, Tensor] | None) -> None:
        """One batch of every trial: x [trials, rows, features]; the loss adds to loss_sum."""
        pre, post = self._forward(x)
        loss, grad = self.loss_fn(post[-1], y, True)
        assert grad is not None
        self.loss_sum.add_(loss)
        self._backward(x, pre, post, grad)
        self.optimizer.update(self.params, self.grads, k, tables)

    def run_block(self, x: Tensor, y: Tensor, index: Tensor, rows: int) -> None:
        """len(index) steps, step k on rows index[k] of the flat data (cuda_graphs.BlockStep):
        x [trials * rows_all, features], y likewise; index [steps, trials * rows]."""
        n = index.shape[0]
        tables = self.optimizer.begin(n)
        trials = self.n_trials
        for k in range(n):
            xb = x.index_select(0, index[k]).view(trials, rows, -1)
            yb = y.index_select(0, index[k])
            yb = yb.view(trials, rows, -1) if y.dim() == 2 else yb.view(trials, rows)
            self._step(xb, yb, k, tables)
        self.optimizer.end(n)

    def snapshot(self) -> list[Tensor]:
        return [t.clone() for t in self._mutable()]

    def restore(self, saved: list[Tensor]) -> None:
        for target, value in zip(self._mutable(), saved, strict=True):
            target.copy_(value)

    def _mutable(self) -> list[Tensor]:
        return [self.params, self.loss_sum, *self.optimizer.state_tensors()]

    # -- the protocol --

    def train_epoch(
        self, x: Tensor, y: Tensor, batch_size: int, should_stop: StopCheck | None
    ) -> StackedEpochLoss:
        self.loss_sum.zero_()
        if self.runner is not None:
            batches, complete = self.runner.run_epoch(x, y, None, batch_size, should_stop)
        else:
            batches, complete = self._eager_epoch(x, y, batch_size, should_stop)
        return self._epoch_loss(batches, complete)

    def train_epoch_indexed(
        self, x: Tensor, y: Tensor, order: Tensor, batch_size: int, should_stop: StopCheck | None
    ) -> StackedEpochLoss:
        """train_epoch on rows not yet shuffled: trial t visits x[t, order[t]]. With graphs the
        gather happens inside the captured blocks; without, it is done here first."""
        self.loss_sum.zero_()
        if self.runner is not None:
            batches, complete = self.runner.run_epoch(x, y, order, batch_size, should_stop)
        else:
            shuffled_x, shuffled_y = _gather(x, order), _gather(y, order)
            batches, complete = self._eager_epoch(shuffled_x, shuffled_y, batch_size, should_stop)
        return self._epoch_loss(batches, complete)

    def _eager_epoch(
        self, x: Tensor, y: Tensor, batch_size: int, should_stop: StopCheck | None
    ) -> tuple[int, bool]:
        n_rows = x.shape[1]
        tables = self.optimizer.begin(-(-n_rows // batch_size))
        n_batches = 0
        for start in range(0, n_rows, batch_size):
            if n_batches and should_stop is not None and should_stop():
                self.optimizer.end(n_batches)
                return n_batches, False
            stop = start + batch_size
            self._step(x[:, start:stop], y[:, start:stop], n_batches, tables)
            n_batches += 1
        self.optimizer.end(n_batches)
        return n_batches, True

    def _epoch_loss(self, batches: int, complete: bool) -> StackedEpochLoss:
        means = self.loss_sum.to("cpu", torch.float64).numpy() / max(batches, 1)
        return StackedEpochLoss(means=means, batches=batches, complete=complete)

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> np.ndarray:
        n_rows = x.shape[1]
        widest = max([self.network.n_outputs, *self.network.hidden_layers])
        chunk = max(1, EVALUATE_CHUNK_ELEMENTS // (self.n_trials * widest))
        if chunk >= n_rows:  # the common case: one pass, the loss as one mean like torch's
            loss, _ = self.loss_fn(self._forward(x)[1][-1], y, False)
            return loss.to("cpu", torch.float64).numpy()
        total = torch.zeros(self.n_trials, dtype=torch.float64, device=self.device)
        for start in range(0, n_rows, chunk):
            xb, yb = x[:, start : start + chunk], y[:, start : start + chunk]
            loss, _ = self.loss_fn(self._forward(xb)[1][-1], yb, False)
            total += loss.to(torch.float64) * xb.shape[1]
        result: np.ndarray = total.cpu().numpy() / n_rows
        return result

    def weights(self, trial: int) -> dict[str, Tensor]:
        return {slot.name: slot.read(self.params, trial) for slot in self.layout}

    def state(self, trial: int) -> EngineState:
        return EngineState(
            weights=self.weights(trial), optimizer=self.optimizer.read_slots(self.layout, trial)
        )

    def load_state(self, trial: int, state: EngineState) -> None:
        # In place: captured graphs keep reading these very buffers.
        for slot in self.layout:
            slot.write(self.params, trial, state.weights[slot.name])
        self.optimizer.write_slots(self.layout, trial, state.optimizer)

    def keep(self, trials: Sequence[int]) -> None:
        index = torch.tensor(list(trials), dtype=torch.long, device=self.device)
        self.configs = [self.configs[t] for t in trials]
        self.params = self.params.index_select(0, index)
        self.grads = torch.zeros_like(self.params)
        self.loss_sum = self.loss_sum.index_select(0, index)
        self.optimizer.keep(index, self.configs)
        self._bind_views()
        if self.runner is not None:
            self.runner.reset()  # the graphs read the old buffers


def _gather(values: Tensor, order: Tensor) -> Tensor:
    """values[t, order[t]] for every trial t."""
    trials = torch.arange(values.shape[0], device=values.device).unsqueeze(1)
    return values[trials, order.to(values.device)]


class OneTrialEngine:
    """A single job as a stack of one: the single-trial Engine protocol (engine.py) over
    StackedTorchEngine, which is how a single job trains with CUDA graphs. Checkpoints have
    TorchEngine's layout and name, so either continues the other's."""

    name = "torch"

    def __init__(
        self,
        network: NetworkConfig,
        initial: dict[str, Tensor],
        config: TrainingConfig,
        device: torch.device,
        graphs: bool = True,
    ) -> None:
        self.stack = StackedTorchEngine(network, [initial], [config], device, graphs=graphs)

    def train_epoch(
        self, x: Tensor, y: Tensor, batch_size: int, should_stop: StopCheck | None
    ) -> EpochLoss:
        result = self.stack.train_epoch(x.unsqueeze(0), y.unsqueeze(0), batch_size, should_stop)
        return EpochLoss(float(result.means[0]), result.batches, result.complete)

    def evaluate(self, x: Tensor, y: Tensor) -> float:
        return float(self.stack.evaluate(x.unsqueeze(0), y.unsqueeze(0))[0])

    def weights(self) -> dict[str, Tensor]:
        return self.stack.weights(0)

    def state(self) -> EngineState:
        return self.stack.state(0)

    def load_state(self, state: EngineState) -> None:
        self.stack.load_state(0, state)
