"""Long epochs cannot overrun: cancel, shutdown and the runtime limit act between batches."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from service.training import trainer as trainer_module
from service.training.data import TrainingTensors
from service.training.engine import TrainingConfig
from service.training.network import NetworkConfig, build_network
from service.training.trainer import TrainingResult, train
from tests.support import cpu_tensors
from tests.training.engine_spy import SpiedEpoch, spy_on_engines

ARCHITECTURE = NetworkConfig(2, (8,), 1, "tanh", None)


def rows(n: int) -> TrainingTensors:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(n, 2))
    return cpu_tensors(x, np.tanh(x[:, :1] * x[:, 1:]))


@pytest.fixture
def spied(monkeypatch: pytest.MonkeyPatch) -> list[SpiedEpoch]:
    """Each pass of the engine: how many batches it ran, and whether all."""
    return spy_on_engines(monkeypatch)


def run(data: TrainingTensors, config: TrainingConfig, **kwargs: Any) -> TrainingResult:
    torch.manual_seed(0)
    return train(build_network(ARCHITECTURE), ARCHITECTURE, data, config, **kwargs)


def test_the_runtime_limit_stops_inside_a_long_epoch_and_keeps_what_it_trained(
    spied: list[SpiedEpoch],
) -> None:
    data = rows(20_000)  # 20,000 batches of one row: far longer than the limit
    result = run(data, TrainingConfig(epochs=3, batch_size=1, max_runtime_seconds=0.05))
    assert result.stop_reason == "max_runtime"
    (partial,) = [epoch.loss for epoch in spied]
    assert not partial.complete and 0 < partial.batches < 20_000
    assert [e.epoch for e in result.history] == [1]  # the partial epoch is recorded
    assert result.history[0].train_loss == partial.mean
    assert result.state  # the model trained so far is kept


def test_a_shutdown_stops_a_long_epoch_at_its_next_batch_with_nothing_to_checkpoint(
    spied: list[SpiedEpoch],
) -> None:
    asked = 0

    def shutdown_after_a_few_batches() -> bool:
        nonlocal asked
        asked += 1
        return asked > 5

    result = run(
        rows(20_000),
        TrainingConfig(epochs=3, batch_size=1),
        should_pause=shutdown_after_a_few_batches,
    )
    assert result.stop_reason == "paused"
    assert result.checkpoint is None  # the next attempt resumes from the last stored one
    assert result.history == []
    (partial,) = [epoch.loss for epoch in spied]
    assert not partial.complete and partial.batches < 10


def test_a_shutdown_lets_a_short_epoch_finish_and_checkpoints_exactly_there(
    spied: list[SpiedEpoch],
) -> None:
    asked = 0

    def shutdown_in_the_second_epoch() -> bool:
        nonlocal asked
        asked += 1
        return asked > 1 + 10 + 1 + 3  # epoch 1's top and batches, epoch 2's top, 3 batches

    result = run(
        rows(320),  # 10 batches of 32: milliseconds an epoch
        TrainingConfig(epochs=5, batch_size=32),
        should_pause=shutdown_in_the_second_epoch,
    )
    assert result.stop_reason == "paused"
    assert [e.epoch for e in result.history] == [1, 2]
    assert [epoch.loss.complete for epoch in spied] == [True, True]
    assert result.checkpoint is not None and result.checkpoint.epoch == 2


@pytest.mark.parametrize(("long_after", "offered"), [(60.0, []), (0.0, [1, 2, 3])])
def test_where_a_shutdown_would_not_wait_every_epoch_is_checkpointed(
    monkeypatch: pytest.MonkeyPatch, long_after: float, offered: list[int]
) -> None:
    # Epochs count as long when they take at least `long_after` seconds: with 0, all of them.
    monkeypatch.setattr(trainer_module, "PAUSE_WAITS_FOR_EPOCHS_UNDER", long_after)
    checkpoints: list[int] = []
    run(
        rows(64),
        TrainingConfig(epochs=4, batch_size=32),
        checkpoint_due=lambda epoch: False,  # the interval never comes due
        on_checkpoint=lambda checkpoint: checkpoints.append(checkpoint.epoch),
    )
    assert checkpoints == offered  # never after the last epoch: nothing is left to resume
