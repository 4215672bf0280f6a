"""A stacked torch trial trains as that trial would alone on TorchEngine, within float32 rounding:
same batches, same updates, and a checkpoint layout either continues."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
import torch

from service.training.data import epoch_order
from service.training.engine import EngineState, TrainingConfig
from service.training.network import NetworkConfig, build_network
from service.training.numpy_engine import NumpyEngine
from service.training.stacked_torch import StackedTorchEngine
from service.training.torch_engine import TorchEngine
from service.vocabulary import ACTIVATIONS, Activation

CPU = torch.device("cpu")
TWO_HIDDEN = NetworkConfig(3, (12, 7), 1, "tanh", None)
ROWS, BATCH = 250, 32  # 7 full batches and a partial one of 26 rows
RTOL, ATOL = 2e-4, 1e-7


def regression(n_outputs: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(ROWS, 3)).astype(np.float32)
    y = np.stack([np.sin(x[:, 0]) * x[:, 1] + k * x[:, 2] for k in range(n_outputs)], axis=1)
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))


def classes() -> tuple[torch.Tensor, torch.Tensor]:
    x, _ = regression()
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return x, y


def initial(architecture: NetworkConfig, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in build_network(architecture).state_dict().items()}


def single(
    architecture: NetworkConfig, weights: dict[str, torch.Tensor], config: TrainingConfig
) -> TorchEngine:
    network = build_network(architecture)
    network.load_state_dict(weights)
    return TorchEngine(network, config)


def order(seed: int, epoch: int) -> torch.Tensor:
    return torch.from_numpy(epoch_order(seed, epoch, ROWS))


def stacked_epoch(
    stack: StackedTorchEngine,
    x: torch.Tensor,
    y: torch.Tensor,
    seeds: Sequence[int],
    epoch: int,
) -> np.ndarray:
    orders = [order(s, epoch) for s in seeds]
    xs = torch.stack([x[o] for o in orders])
    ys = torch.stack([y[o] for o in orders])
    return stack.train_epoch(xs, ys, BATCH, None).means


def compare(
    architecture: NetworkConfig,
    configs: Sequence[TrainingConfig],
    data: tuple[torch.Tensor, torch.Tensor],
    epochs: int = 4,
) -> None:
    """Each trial of a stack against TorchEngine alone: epoch losses and evaluate()."""
    x, y = data
    seeds = list(range(len(configs)))
    inits = [initial(architecture, s) for s in seeds]
    stack = StackedTorchEngine(architecture, inits, configs, CPU)
    alone = [single(architecture, w, c) for w, c in zip(inits, configs, strict=True)]
    for epoch in range(1, epochs + 1):
        means = stacked_epoch(stack, x, y, seeds, epoch)
        expected = [
            e.train_epoch(x[order(s, epoch)], y[order(s, epoch)], BATCH, None).mean
            for e, s in zip(alone, seeds, strict=True)
        ]
        np.testing.assert_allclose(means, expected, rtol=RTOL, atol=ATOL)
    every = len(configs)
    evaluated = stack.evaluate(x.expand(every, *x.shape), y.expand(every, *y.shape))
    np.testing.assert_allclose(evaluated, np.array([e.evaluate(x, y) for e in alone]), rtol=RTOL)
    for trial, engine in enumerate(alone):
        for name, tensor in engine.weights().items():
            np.testing.assert_allclose(
                stack.weights(trial)[name].numpy(), tensor.numpy(), rtol=1e-3, atol=1e-5
            )


@pytest.mark.parametrize(
    "configs",
    [
        [TrainingConfig(learning_rate=lr, batch_size=BATCH) for lr in (0.01, 0.003, 0.03)],
        [
            TrainingConfig(optimizer="adamw", learning_rate=0.01, weight_decay=wd)
            for wd in (0.0, 0.1, 0.01)
        ],
        [
            TrainingConfig(optimizer="adam", learning_rate=0.01, weight_decay=wd)
            for wd in (0.05, 0.0)
        ],
        [
            TrainingConfig(optimizer="sgd", learning_rate=lr, momentum=m, weight_decay=wd)
            for lr, m, wd in ((0.05, 0.9, 0.0), (0.02, 0.0, 0.01), (0.1, 0.5, 0.001))
        ],
    ],
    ids=["adam-lrs", "adamw-decay", "adam-decay", "sgd-momentum"],
)
def test_each_trial_trains_as_it_would_alone(configs: list[TrainingConfig]) -> None:
    compare(TWO_HIDDEN, configs, regression())


@pytest.mark.parametrize("loss", ["mae", "huber"])
def test_regression_losses(loss: str) -> None:
    configs = [TrainingConfig(loss=loss, learning_rate=lr) for lr in (0.01, 0.02)]  # type: ignore[arg-type]
    compare(NetworkConfig(3, (10,), 2, "relu", None), configs, regression(n_outputs=2), epochs=3)


def test_cross_entropy() -> None:
    configs = [TrainingConfig(loss="cross_entropy", learning_rate=lr) for lr in (0.01, 0.03)]
    compare(NetworkConfig(3, (12, 7), 3, "tanh", None), configs, classes())


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation(activation: Activation) -> None:
    architecture = NetworkConfig(3, (9, 5), 1, activation, activation)
    configs = [TrainingConfig(learning_rate=lr) for lr in (0.005, 0.01)]
    compare(architecture, configs, regression(), epochs=2)


def trained_stack(configs: Sequence[TrainingConfig], epochs: int = 2) -> StackedTorchEngine:
    x, y = regression()
    stack = StackedTorchEngine(
        TWO_HIDDEN, [initial(TWO_HIDDEN, s) for s in range(len(configs))], configs, CPU
    )
    for epoch in range(1, epochs + 1):
        stacked_epoch(stack, x, y, range(len(configs)), epoch)
    return stack


def assert_same_state(a: EngineState, b: EngineState) -> None:
    assert a.weights.keys() == b.weights.keys() and a.optimizer.keys() == b.optimizer.keys()
    for name, tensor in a.weights.items():
        torch.testing.assert_close(b.weights[name], tensor, rtol=1e-3, atol=1e-5)
    for name, slots in a.optimizer.items():
        assert slots.keys() == b.optimizer[name].keys(), name
        for key, value in slots.items():
            other = b.optimizer[name][key]
            assert other.device.type == "cpu" and other.dtype == value.dtype == torch.float32
            assert other.shape == value.shape, (name, key)
            torch.testing.assert_close(other, value, rtol=1e-3, atol=1e-5)


STATE_CONFIGS = [
    TrainingConfig(learning_rate=0.01),
    TrainingConfig(optimizer="adamw", weight_decay=0.01),
    TrainingConfig(optimizer="sgd", momentum=0.9, learning_rate=0.05),
    TrainingConfig(optimizer="sgd", momentum=0.0, learning_rate=0.05),
]


@pytest.mark.parametrize("config", STATE_CONFIGS, ids=["adam", "adamw", "sgd-momentum", "sgd"])
def test_state_round_trips_with_the_single_engines(config: TrainingConfig) -> None:
    x, y = regression()
    configs = [replace_lr(config, 0.5), config]  # the trial of interest is not trial 0
    stack = trained_stack(configs)
    alone = single(TWO_HIDDEN, initial(TWO_HIDDEN, 1), config)
    for epoch in (1, 2):
        alone.train_epoch(x[order(1, epoch)], y[order(1, epoch)], BATCH, None)
    assert_same_state(alone.state(), stack.state(1))
    epoch3 = x[order(1, 3)], y[order(1, 3)]
    reference = single(TWO_HIDDEN, initial(TWO_HIDDEN, 7), config)
    reference.load_state(alone.state())
    expected = reference.train_epoch(*epoch3, BATCH, None).mean
    # Stack -> alone: a trial checkpointed in a stack continues on either single engine.
    for engine in (
        single(TWO_HIDDEN, initial(TWO_HIDDEN, 7), config),
        NumpyEngine(TWO_HIDDEN, initial(TWO_HIDDEN, 7), config),
    ):
        engine.load_state(stack.state(1))
        got = engine.train_epoch(*epoch3, BATCH, None).mean
        np.testing.assert_allclose(got, expected, rtol=RTOL, err_msg=engine.name)
    # Alone -> stack: trial 0 (with its own learning rate) takes over the single engine's run;
    # trial 1 continues its own.
    stack.load_state(0, alone.state())
    means = stacked_epoch(stack, x, y, [1, 1], 3)
    fast = single(TWO_HIDDEN, initial(TWO_HIDDEN, 7), configs[0])
    fast.load_state(alone.state())
    expected_fast = fast.train_epoch(*epoch3, BATCH, None).mean
    np.testing.assert_allclose(means, [expected_fast, expected], rtol=RTOL)


def replace_lr(config: TrainingConfig, lr: float) -> TrainingConfig:
    return replace(config, learning_rate=lr)


def test_a_fresh_stack_has_no_optimizer_slots() -> None:
    stack = StackedTorchEngine(TWO_HIDDEN, [initial(TWO_HIDDEN, 0)], [TrainingConfig()], CPU)
    state = stack.state(0)
    assert all(slots == {} for slots in state.optimizer.values())
    assert state.weights.keys() == set(build_network(TWO_HIDDEN).state_dict())


def test_keep_drops_and_reorders_trials() -> None:
    x, y = regression()
    configs = [TrainingConfig(learning_rate=lr) for lr in (0.01, 0.003, 0.03)]
    stack = trained_stack(configs, epochs=1)
    before = [stack.state(t) for t in range(3)]
    stack.keep([2, 0])
    assert stack.n_trials == 2
    assert_same_state(before[2], stack.state(0))
    assert_same_state(before[0], stack.state(1))
    means = stacked_epoch(stack, x, y, [2, 0], 2)
    for slot, trial in enumerate((2, 0)):
        alone = single(TWO_HIDDEN, initial(TWO_HIDDEN, 9), configs[trial])
        alone.load_state(before[trial])
        expected = alone.train_epoch(x[order(trial, 2)], y[order(trial, 2)], BATCH, None).mean
        np.testing.assert_allclose(means[slot], expected, rtol=RTOL)


def test_one_diverging_trial_leaves_the_others_alone() -> None:
    x, y = regression()
    sane = TrainingConfig(optimizer="sgd", learning_rate=0.05, momentum=0.9)
    wild = TrainingConfig(optimizer="sgd", learning_rate=1e6, momentum=0.9)
    inits = [initial(TWO_HIDDEN, 0), initial(TWO_HIDDEN, 1)]
    with_wild = StackedTorchEngine(TWO_HIDDEN, inits, [sane, wild], CPU)
    without = StackedTorchEngine(TWO_HIDDEN, inits[:1], [sane], CPU)
    for epoch in (1, 2, 3):
        both = stacked_epoch(with_wild, x, y, [0, 1], epoch)
        alone = stacked_epoch(without, x, y, [0], epoch)
        assert both[0] == alone[0]
    assert not np.isfinite(both[1])
    for name, tensor in without.weights(0).items():
        assert torch.equal(with_wild.weights(0)[name], tensor)


def test_should_stop_is_asked_before_every_batch_but_the_first() -> None:
    x, y = regression()
    stack = StackedTorchEngine(TWO_HIDDEN, [initial(TWO_HIDDEN, 0)], [TrainingConfig()], CPU)
    asked: list[int] = []

    def stop_after_three() -> bool:
        asked.append(1)
        return len(asked) >= 3

    result = stack.train_epoch(x[None], y[None], BATCH, stop_after_three)
    assert (result.batches, result.complete, len(asked)) == (3, False, 3)
    always = stack.train_epoch(x[None], y[None], BATCH, lambda: True)
    assert (always.batches, always.complete) == (1, False)
    whole = stack.train_epoch(x[None], y[None], BATCH, lambda: False)
    assert (whole.batches, whole.complete) == (8, True)
    # Adam counted exactly the steps that ran.
    assert stack.state(0).optimizer["0.weight"]["step"].item() == 3 + 1 + 8


def test_stack_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match="loss"):
        StackedTorchEngine(
            TWO_HIDDEN,
            [initial(TWO_HIDDEN, 0)] * 2,
            [TrainingConfig(), TrainingConfig(loss="mae")],
            CPU,
        )
