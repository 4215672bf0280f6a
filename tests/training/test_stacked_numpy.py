"""A stack of trials on the numpy engine trains each trial as NumpyEngine trains it alone."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

from service.training.engine import OPTIMIZER_SLOTS, EngineState, TrainingConfig
from service.training.network import NetworkConfig, build_network
from service.training.numpy_engine import NumpyEngine
from service.training.stacked_numpy import StackedNumpyEngine

ROWS = 150
BATCH = 32  # 150 rows: four full batches and one of 22
EPOCHS = 3
TANH = NetworkConfig(2, (16,), 1, "tanh", "tanh")


@dataclass(frozen=True)
class TrialRows:
    """Every trial's rows: x [trials, rows, in], y [trials, rows, out] or [trials, rows]."""

    x: torch.Tensor
    y: torch.Tensor


def initial_weights(network: NetworkConfig, n_trials: int) -> list[dict[str, torch.Tensor]]:
    weights = []
    for seed in range(n_trials):  # each trial its own initial weights
        torch.manual_seed(seed)
        weights.append(build_network(network).state_dict())
    return weights


def data(network: NetworkConfig, n_trials: int, classification: bool = False) -> TrialRows:
    """Each trial's own rows (not only its own order)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_trials, ROWS, network.n_inputs)).astype(np.float32)
    if classification:
        y = (x[:, :, 0] > x[:, :, 1]).astype(np.int64) + (x[:, :, 0] > 1).astype(np.int64)
        return TrialRows(torch.from_numpy(x), torch.from_numpy(y))
    targets = [np.sin(x.sum(axis=2) * k) * 0.8 for k in range(1, network.n_outputs + 1)]
    return TrialRows(torch.from_numpy(x), torch.from_numpy(np.stack(targets, axis=2)))


def epochs(rows: TrialRows, n_epochs: int = EPOCHS, seed: int = 1) -> list[TrialRows]:
    """Every epoch's shuffle, a different one for each trial."""
    rng = np.random.default_rng(seed)
    shuffled = []
    for _ in range(n_epochs):
        order = [torch.from_numpy(rng.permutation(ROWS)) for _ in range(rows.x.shape[0])]
        shuffled.append(
            TrialRows(
                torch.stack([rows.x[t][o] for t, o in enumerate(order)]),
                torch.stack([rows.y[t][o] for t, o in enumerate(order)]),
            )
        )
    return shuffled


def train_alone(engine: NumpyEngine, trial: int, batches: Sequence[TrialRows]) -> list[float]:
    return [engine.train_epoch(e.x[trial], e.y[trial], BATCH, None).mean for e in batches]


def train_stacked(engine: StackedNumpyEngine, batches: Sequence[TrialRows]) -> np.ndarray:
    """[epochs, trials] of mean train losses."""
    return np.array([engine.train_epoch(e.x, e.y, BATCH, None).means for e in batches])


def assert_close(
    stacked: np.ndarray | Sequence[float] | float, alone: np.ndarray | Sequence[float] | float
) -> None:
    np.testing.assert_allclose(stacked, alone, rtol=2e-4, atol=1e-7)


CASES = {
    "adam": (TANH, [TrainingConfig(learning_rate=lr) for lr in (0.01, 0.003, 0.05)]),
    "adamw with decay": (
        TANH,
        [
            TrainingConfig(optimizer="adamw", learning_rate=lr, weight_decay=wd)
            for lr, wd in ((0.01, 0.01), (0.02, 0.0), (0.005, 0.1))
        ],
    ),
    "adam with decay": (
        NetworkConfig(3, (12,), 2, "relu", None),
        [TrainingConfig(learning_rate=0.01, weight_decay=wd, loss="huber") for wd in (0, 0.05)],
    ),
    "sgd with momentum": (
        NetworkConfig(2, (16,), 1, "sigmoid", None),
        [
            TrainingConfig(optimizer="sgd", learning_rate=lr, momentum=m, weight_decay=wd)
            for lr, m, wd in ((0.1, 0.9, 0.0), (0.05, 0.0, 0.01), (0.2, 0.5, 0.001))
        ],
    ),
    "sgd without momentum": (
        TANH,
        [TrainingConfig(optimizer="sgd", momentum=0.0, learning_rate=lr) for lr in (0.1, 0.3)],
    ),
    "two hidden layers": (
        NetworkConfig(2, (12, 8), 1, "tanh", None),
        [TrainingConfig(learning_rate=lr, loss="mae") for lr in (0.01, 0.02)],
    ),
    "cross entropy": (
        NetworkConfig(2, (16,), 3, "relu", None),
        [TrainingConfig(learning_rate=lr, loss="cross_entropy") for lr in (0.01, 0.03)],
    ),
    "elu, many inputs": (
        NetworkConfig(6, (10,), 1, "elu", "sigmoid"),
        [TrainingConfig(learning_rate=lr) for lr in (0.01, 0.03)],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_each_trial_trains_as_it_would_alone(case: str) -> None:
    network, configs = CASES[case]
    initial = initial_weights(network, len(configs))
    rows = data(network, len(configs), classification=configs[0].loss == "cross_entropy")
    batches = epochs(rows)
    stack = StackedNumpyEngine(network, initial, configs)
    stacked = train_stacked(stack, batches)
    evaluated = stack.evaluate(rows.x, rows.y)
    assert evaluated.dtype == np.float64 and stacked.dtype == np.float64
    for t, config in enumerate(configs):
        alone = NumpyEngine(network, initial[t], config)
        assert_close(stacked[:, t], train_alone(alone, t, batches))
        assert_close(evaluated[t], alone.evaluate(rows.x[t], rows.y[t]))
        for name, tensor in alone.weights().items():
            np.testing.assert_allclose(stack.weights(t)[name], tensor, rtol=1e-4, atol=1e-6)


def test_a_trials_state_is_the_single_engines_and_continues_alone() -> None:
    configs = CASES["adam"][1]
    initial = initial_weights(TANH, 3)
    batches = epochs(data(TANH, 3), n_epochs=6)
    stack = StackedNumpyEngine(TANH, initial, configs)
    train_stacked(stack, batches[:3])
    alone = NumpyEngine(TANH, initial[1], configs[1])
    train_alone(alone, 1, batches[:3])
    state, expected = stack.state(1), alone.state()
    assert state.weights.keys() == expected.weights.keys()
    assert state.optimizer.keys() == expected.optimizer.keys()
    for name, slots in expected.optimizer.items():
        assert set(slots) == set(OPTIMIZER_SLOTS["adam"]) == set(state.optimizer[name])
        for slot, tensor in slots.items():
            mine = state.optimizer[name][slot]
            assert (mine.shape, mine.dtype) == (tensor.shape, tensor.dtype), (name, slot)
    assert state.optimizer["0.weight"]["step"].item() == 3 * 5

    resumed = NumpyEngine(TANH, initial[0], configs[1])
    resumed.load_state(state)
    assert_close(train_alone(resumed, 1, batches[3:]), train_stacked(stack, batches[3:])[:, 1])


def test_a_single_engines_state_continues_in_a_stack_slot() -> None:
    configs = CASES["sgd with momentum"][1]
    network = CASES["sgd with momentum"][0]
    initial = initial_weights(network, 3)
    batches = epochs(data(network, 3), n_epochs=4)
    alone = NumpyEngine(network, initial[2], configs[2])
    train_alone(alone, 2, batches[:2])
    stack = StackedNumpyEngine(network, initial, configs)
    stack.load_state(2, alone.state())
    assert_close(train_stacked(stack, batches[2:])[:, 2], train_alone(alone, 2, batches[2:]))


def test_adam_counts_steps_per_trial() -> None:
    """Trials resumed from checkpoints of different ages correct their moments differently."""
    configs = CASES["adam"][1][:2]
    initial = initial_weights(TANH, 2)
    batches = epochs(data(TANH, 2), n_epochs=3)
    young, old = (
        NumpyEngine(TANH, initial[0], configs[0]),
        NumpyEngine(TANH, initial[1], configs[1]),
    )
    train_alone(young, 0, batches[:1])
    train_alone(old, 1, batches[:2])
    stack = StackedNumpyEngine(TANH, initial, configs)
    stack.load_state(0, young.state())
    stack.load_state(1, old.state())
    assert [stack.state(t).optimizer["2.bias"]["step"].item() for t in (0, 1)] == [5, 10]
    losses = train_stacked(stack, batches[2:])
    assert_close(losses[:, 0], train_alone(young, 0, batches[2:]))
    assert_close(losses[:, 1], train_alone(old, 1, batches[2:]))


def test_keep_drops_and_renumbers_trials_that_train_on_unchanged() -> None:
    configs = CASES["adamw with decay"][1]
    initial = initial_weights(TANH, 3)
    batches = epochs(data(TANH, 3), n_epochs=4)
    reference = StackedNumpyEngine(TANH, initial, configs)
    expected = train_stacked(reference, batches)
    stack = StackedNumpyEngine(TANH, initial, configs)
    train_stacked(stack, batches[:2])
    stack.keep([2, 0])
    assert stack.n_trials == 2
    kept = [TrialRows(e.x[[2, 0]], e.y[[2, 0]]) for e in batches[2:]]
    np.testing.assert_array_equal(train_stacked(stack, kept), expected[2:][:, [2, 0]])


def diverging(state: EngineState) -> EngineState:
    return replace(state, weights={k: torch.full_like(v, np.inf) for k, v in state.weights.items()})


@pytest.mark.parametrize("how", ["learning rate", "infinite weights"])
def test_a_diverging_trial_leaves_the_others_alone(how: str) -> None:
    network = NetworkConfig(2, (16,), 1, "tanh", None)  # no tanh to bound the output
    configs = CASES["sgd without momentum"][1] + [TrainingConfig(optimizer="sgd")]
    if how == "learning rate":
        configs[1] = replace(configs[1], learning_rate=1e6)
    initial = initial_weights(network, 3)
    rows = data(network, 3)
    batches = epochs(rows)
    stack = StackedNumpyEngine(network, initial, configs)
    if how == "infinite weights":
        stack.load_state(1, diverging(stack.state(1)))
    healthy = StackedNumpyEngine(network, [initial[0], initial[2]], [configs[0], configs[2]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy must not warn about the diverged trial
        losses = train_stacked(stack, batches)
        evaluated = stack.evaluate(rows.x, rows.y)
    assert not np.isfinite(losses[-1, 1]) and not np.isfinite(evaluated[1])
    two = [0, 2]
    healthy_batches = [TrialRows(e.x[two], e.y[two]) for e in batches]
    np.testing.assert_array_equal(losses[:, two], train_stacked(healthy, healthy_batches))
    np.testing.assert_array_equal(evaluated[two], healthy.evaluate(rows.x[two], rows.y[two]))


def test_should_stop_is_asked_before_every_batch_but_the_first() -> None:
    configs = CASES["adam"][1]
    initial = initial_weights(TANH, 3)
    epoch = epochs(data(TANH, 3), n_epochs=1)[0]
    asked: list[int] = []

    def stop_after_three() -> bool:
        asked.append(1)
        return len(asked) == 3  # asked before batches 2, 3 and 4: three batches ran

    stack = StackedNumpyEngine(TANH, initial, configs)
    result = stack.train_epoch(epoch.x, epoch.y, BATCH, stop_after_three)
    assert (result.batches, result.complete, len(asked)) == (3, False, 3)
    for t, config in enumerate(configs):
        alone = NumpyEngine(TANH, initial[t], config)
        batch_losses = [
            alone.train_epoch(epoch.x[t, s : s + BATCH], epoch.y[t, s : s + BATCH], BATCH, None)
            for s in range(0, 3 * BATCH, BATCH)
        ]
        assert_close(result.means[t], float(np.mean([b.mean for b in batch_losses])))

    never = StackedNumpyEngine(TANH, initial, configs)
    one_batch = never.train_epoch(epoch.x[:, :BATCH], epoch.y[:, :BATCH], BATCH, lambda: True)
    assert (one_batch.batches, one_batch.complete) == (1, True)


def test_trials_must_share_optimizer_loss_and_batch_size() -> None:
    configs = [TrainingConfig(), TrainingConfig(optimizer="sgd")]
    with pytest.raises(ValueError, match="optimizer"):
        StackedNumpyEngine(TANH, initial_weights(TANH, 2), configs)


def test_what_the_single_engine_cannot_train_is_refused() -> None:
    gelu = NetworkConfig(2, (4,), 1, "gelu", None)
    with pytest.raises(ValueError, match="cannot train"):
        StackedNumpyEngine(gelu, initial_weights(gelu, 1), [TrainingConfig()])
