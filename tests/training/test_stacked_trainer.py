"""A stack of trials trains each trial as train() would alone: losses, early stopping, epochs,
divergence, cancel, pause and checkpoints, on either engine."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from service.loss_history import EpochResult
from service.training.checkpoint import Checkpoint
from service.training.data import TrainingTensors
from service.training.engine import TrainingConfig
from service.training.network import NetworkConfig, build_network
from service.training.stacked_trainer import Trial, train_stack
from service.training.trainer import EngineChoice, TrainingDiverged, TrainingResult, train
from tests.support import cpu_tensors, sinc_data

NETWORK = NetworkConfig(2, (12,), 1, "tanh", None)
ENGINES: tuple[EngineChoice, ...] = ("numpy", "torch")


def data(seed: int, validation_fraction: float = 0.25) -> TrainingTensors:
    x, y = sinc_data(12)  # 144 rows: batches of 32 leave a partial one
    return cpu_tensors(x, y, validation_fraction=validation_fraction, seed=seed)


def initial(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_network(NETWORK).state_dict()


def alone(config: TrainingConfig, engine: EngineChoice) -> TrainingResult:
    torch.manual_seed(config.seed)
    network = build_network(NETWORK)
    return train(network, NETWORK, data(config.seed), config, engine=engine)


def trials_of(configs: list[TrainingConfig]) -> list[Trial]:
    shared: dict[int, TrainingTensors] = {}  # one prepared split per seed, as the worker does
    return [
        Trial(
            config=c,
            data=shared.setdefault(c.seed, data(c.seed)),
            initial=initial(c.seed),
        )
        for c in configs
    ]


def losses(result: TrainingResult) -> tuple[list[float], list[float | None]]:
    return [e.train_loss for e in result.history], [e.val_loss for e in result.history]


def assert_same_run(stacked: TrainingResult, single: TrainingResult) -> None:
    assert [e.epoch for e in stacked.history] == [e.epoch for e in single.history]
    np.testing.assert_allclose(losses(stacked)[0], losses(single)[0], rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(losses(stacked)[1], losses(single)[1], rtol=2e-4, atol=1e-7)
    assert stacked.stop_reason == single.stop_reason
    assert stacked.best_epoch == single.best_epoch
    for name, tensor in single.state.items():
        np.testing.assert_allclose(stacked.state[name], tensor, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_each_trial_trains_as_it_would_alone(engine: EngineChoice) -> None:
    base = TrainingConfig(batch_size=32, epochs=14)
    configs = [
        replace(base, learning_rate=0.003, seed=0),
        replace(base, learning_rate=0.03, seed=0, weight_decay=1e-3),
        replace(base, learning_rate=0.01, seed=1, epochs=9),  # its own epoch count
        replace(base, learning_rate=0.2, seed=2, early_stopping_patience=2),  # stops early
    ]
    outcomes = train_stack(NETWORK, trials_of(configs), engine=engine)
    for config, outcome in zip(configs, outcomes, strict=True):
        assert isinstance(outcome, TrainingResult)
        assert outcome.engine == engine
        assert_same_run(outcome, alone(config, engine))
    assert outcomes[3].stop_reason == "early_stopped"  # type: ignore[union-attr]


def test_a_diverging_trial_ends_alone_and_the_others_do_not_notice() -> None:
    base = TrainingConfig(batch_size=32, epochs=6, optimizer="sgd", momentum=0.0)
    configs = [replace(base, learning_rate=0.1), replace(base, learning_rate=1e30)]
    calm, wild = train_stack(NETWORK, trials_of(configs))
    assert isinstance(wild, TrainingDiverged)
    assert isinstance(calm, TrainingResult)
    assert_same_run(calm, alone(configs[0], "numpy"))


def test_a_cancelled_trial_stops_and_the_others_go_on() -> None:
    configs = [TrainingConfig(batch_size=32, epochs=8, seed=s) for s in (0, 1)]
    trials = trials_of(configs)
    seen: list[EpochResult] = []
    trials[0].on_epoch = seen.append
    trials[0].should_stop = lambda: len(seen) >= 3
    cancelled, finished = train_stack(NETWORK, trials)
    assert isinstance(cancelled, TrainingResult) and isinstance(finished, TrainingResult)
    assert cancelled.stop_reason == "cancelled" and len(cancelled.history) == 3
    assert_same_run(finished, alone(configs[1], "numpy"))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_stack_resumed_from_its_checkpoints_continues_exactly(engine: EngineChoice) -> None:
    configs = [
        TrainingConfig(
            batch_size=32, epochs=10, learning_rate=lr, seed=s, early_stopping_patience=50
        )
        for lr, s in ((0.01, 0), (0.05, 1))
    ]
    trials = trials_of(configs)
    saved: list[list[Checkpoint]] = [[], []]
    for trial, store in zip(trials, saved, strict=True):
        trial.checkpoint_due = lambda epoch: epoch == 4
        trial.on_checkpoint = store.append
    whole = train_stack(NETWORK, trials, engine=engine)
    assert [[c.epoch for c in store] for store in saved] == [[4], [4]]

    resumed = [
        replace(t, resume=store[0], checkpoint_due=None)
        for t, store in zip(trials, saved, strict=True)
    ]
    continued = train_stack(NETWORK, resumed, engine=engine)
    for full, rest in zip(whole, continued, strict=True):
        assert isinstance(full, TrainingResult) and isinstance(rest, TrainingResult)
        assert [e.epoch for e in rest.history] == list(range(5, 11))
        np.testing.assert_allclose(losses(rest)[0], losses(full)[0][4:], rtol=1e-6, atol=1e-9)
        assert rest.best_epoch == full.best_epoch

    # A trial's stacked checkpoint resumes alone, on train() itself, to the same end.
    torch.manual_seed(0)
    single = train(
        build_network(NETWORK), NETWORK, data(0), configs[0], resume=saved[0][0], engine=engine
    )
    first = whole[0]
    assert isinstance(first, TrainingResult)
    np.testing.assert_allclose(losses(single)[0], losses(first)[0][4:], rtol=2e-4, atol=1e-7)


def test_a_shutdown_hands_every_trial_back_with_a_checkpoint() -> None:
    configs = [TrainingConfig(batch_size=32, epochs=10, seed=s) for s in (0, 1, 2)]
    trials = trials_of(configs)
    epochs: list[EpochResult] = []
    trials[0].on_epoch = epochs.append
    outcomes = train_stack(NETWORK, trials, should_pause=lambda: len(epochs) >= 3)
    for outcome in outcomes:
        assert isinstance(outcome, TrainingResult)
        assert outcome.stop_reason == "paused" and len(outcome.history) == 3
        assert outcome.checkpoint is not None and outcome.checkpoint.epoch == 3


def test_trials_resumed_after_different_epochs_cannot_share_a_stack() -> None:
    configs = [TrainingConfig(batch_size=32, epochs=4, seed=s) for s in (0, 1)]
    trials = trials_of(configs)
    saved: list[Checkpoint] = []
    trials[0].checkpoint_due = lambda epoch: epoch == 2
    trials[0].on_checkpoint = saved.append
    train_stack(NETWORK, trials[:1])
    with pytest.raises(ValueError, match="continue after one epoch"):
        train_stack(NETWORK, [replace(trials[0], resume=saved[0]), trials[1]])
