from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
import torch

from service.training.data import TrainingTensors
from service.training.network import NetworkConfig, build_network
from service.training.trainer import (
    EngineChoice,
    EpochResult,
    TrainingConfig,
    TrainingDiverged,
    TrainingResult,
    train,
)
from tests.support import cpu_tensors, sinc_data

ENGINES: list[EngineChoice] = ["torch", "numpy"]


def sinc_tensors(validation_fraction: float = 0.0, seed: int = 0) -> TrainingTensors:
    x, y = sinc_data(20)
    return cpu_tensors(x, y, validation_fraction=validation_fraction, seed=seed)


def smooth_tensors() -> TrainingTensors:
    """An easy target, for tests that only need the loss to fall."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(256, 2))
    y = (0.5 * np.tanh(x[:, 0]) + 0.2 * x[:, 1]).reshape(-1, 1)
    return cpu_tensors(x, y)


def run(
    data: TrainingTensors,
    config: TrainingConfig,
    *,
    engine: EngineChoice = "auto",
    architecture: NetworkConfig | None = None,
    **kwargs: object,
) -> TrainingResult:
    architecture = architecture or NetworkConfig(2, (16,), 1, "tanh", "tanh")
    torch.manual_seed(config.seed)
    network = build_network(architecture)
    return train(network, architecture, data, config, engine=engine, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", ENGINES)
def test_same_seed_gives_the_same_loss_history_bit_for_bit(engine: EngineChoice) -> None:
    config = TrainingConfig(epochs=15, batch_size=32, seed=3)
    first = run(sinc_tensors(), config, engine=engine)
    second = run(sinc_tensors(), config, engine=engine)
    assert [e.train_loss for e in first.history] == [e.train_loss for e in second.history]
    for name, tensor in first.state.items():
        assert torch.equal(tensor, second.state[name])


def test_another_seed_gives_another_history() -> None:
    a = run(sinc_tensors(), TrainingConfig(epochs=5, batch_size=32, seed=0))
    b = run(sinc_tensors(), TrainingConfig(epochs=5, batch_size=32, seed=1))
    assert [e.train_loss for e in a.history] != [e.train_loss for e in b.history]


@pytest.mark.parametrize("engine", ENGINES)
def test_loss_falls_and_each_epoch_is_reported_in_order(engine: EngineChoice) -> None:
    seen: list[EpochResult] = []
    result = run(
        smooth_tensors(),
        TrainingConfig(epochs=60, batch_size=50),
        engine=engine,
        on_epoch=seen.append,
    )
    assert [e.epoch for e in seen] == list(range(1, 61))
    assert seen == result.history
    assert seen[-1].train_loss < seen[0].train_loss / 2
    assert all(b.seconds >= a.seconds for a, b in itertools.pairwise(seen))
    assert result.stop_reason == "completed"


@pytest.mark.parametrize("engine", ENGINES)
def test_early_stopping_keeps_the_weights_of_the_best_epoch(engine: EngineChoice) -> None:
    data = sinc_tensors(validation_fraction=0.3)
    result = run(
        data,
        TrainingConfig(epochs=400, batch_size=16, learning_rate=0.05, early_stopping_patience=3),
        engine=engine,
    )
    assert result.stop_reason == "early_stopped"
    best = min(result.history, key=lambda e: e.val_loss or np.inf)
    assert result.best_epoch == best.epoch
    assert len(result.history) == best.epoch + 3
    network = build_network(NetworkConfig(2, (16,), 1, "tanh", "tanh"))
    network.load_state_dict(result.state)
    assert data.x_val is not None and data.y_val is not None
    with torch.no_grad():
        val_loss = torch.nn.functional.mse_loss(network(data.x_val), data.y_val).item()
    assert val_loss == pytest.approx(best.val_loss, rel=1e-5)


def test_validation_loss_is_reported_when_there_is_a_split() -> None:
    result = run(sinc_tensors(validation_fraction=0.2), TrainingConfig(epochs=3, batch_size=64))
    assert all(e.val_loss is not None and e.val_loss > 0 for e in result.history)


@pytest.mark.parametrize("engine", ENGINES)
def test_should_stop_interrupts_between_batches(engine: EngineChoice) -> None:
    stop = threading.Event()
    seen: list[EpochResult] = []

    def on_epoch(epoch: EpochResult) -> None:
        seen.append(epoch)
        if epoch.epoch == 2:
            stop.set()

    result = run(
        sinc_tensors(),
        TrainingConfig(epochs=50, batch_size=32),
        engine=engine,
        on_epoch=on_epoch,
        should_stop=stop.is_set,
    )
    assert result.stop_reason == "cancelled"
    assert [e.epoch for e in seen] == [1, 2]


@pytest.mark.parametrize("engine", ENGINES)
def test_should_stop_ends_a_run_whose_epochs_are_one_batch(engine: EngineChoice) -> None:
    """No batch boundary inside such an epoch: the cancel is seen before the next one."""
    stop = threading.Event()
    seen: list[int] = []

    def on_epoch(epoch: EpochResult) -> None:
        seen.append(epoch.epoch)
        if epoch.epoch == 3:
            stop.set()

    result = run(
        sinc_tensors(),
        TrainingConfig(epochs=500, batch_size=10_000),
        engine=engine,
        on_epoch=on_epoch,
        should_stop=stop.is_set,
    )
    assert result.stop_reason == "cancelled"
    assert seen == [1, 2, 3]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_diverging_loss_raises_with_the_epoch(engine: EngineChoice) -> None:
    with pytest.raises(TrainingDiverged, match=r"at epoch \d+"):
        run(
            sinc_tensors(),
            TrainingConfig(
                optimizer="sgd", learning_rate=1e30, momentum=0.0, epochs=5, batch_size=400
            ),
            architecture=NetworkConfig(2, (16,), 1, "tanh", None),
            engine=engine,
        )


@pytest.mark.parametrize("engine", ENGINES)
def test_classification_learns_a_separable_problem(engine: EngineChoice) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    data = cpu_tensors(x, y, classification=True)
    architecture = NetworkConfig(2, (8,), 2, "relu", None)
    result = run(
        data,
        TrainingConfig(loss="cross_entropy", epochs=40, batch_size=32),
        architecture=architecture,
        engine=engine,
    )
    network = build_network(architecture)
    network.load_state_dict(result.state)
    with torch.no_grad():
        accuracy = (network(data.x_train).argmax(1) == data.y_train).float().mean().item()
    assert accuracy > 0.95


def test_auto_picks_numpy_for_small_cpu_networks_and_torch_otherwise() -> None:
    small = run(sinc_tensors(), TrainingConfig(epochs=1))
    assert small.engine == "numpy"
    gelu = run(
        sinc_tensors(),
        TrainingConfig(epochs=1),
        architecture=NetworkConfig(2, (16,), 1, "gelu", None),
    )
    assert gelu.engine == "torch"
    wide = run(
        sinc_tensors(),
        TrainingConfig(epochs=1, batch_size=400),
        architecture=NetworkConfig(2, (512, 512), 1, "tanh", None),
    )
    assert wide.engine == "torch"


def test_a_pinned_numpy_engine_trains_any_size_but_falls_back_where_it_cannot() -> None:
    wide = run(
        sinc_tensors(),
        TrainingConfig(epochs=1, batch_size=400),
        architecture=NetworkConfig(2, (512, 512), 1, "tanh", None),
        engine="numpy",
    )
    assert wide.engine == "numpy"
    gelu = run(
        sinc_tensors(),
        TrainingConfig(epochs=1),
        architecture=NetworkConfig(2, (16,), 1, "gelu", None),
        engine="numpy",
    )
    assert gelu.engine == "torch"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_paused_and_resumed_run_equals_an_uninterrupted_one(engine: EngineChoice) -> None:
    """Through the stored form too: checkpoint -> safetensors bytes -> checkpoint."""
    from service.storage.store import decode_checkpoint, encode_checkpoint
    from service.training.checkpoint import Checkpoint

    data = sinc_tensors(validation_fraction=0.25)
    config = TrainingConfig(epochs=30, batch_size=32, early_stopping_patience=50, seed=5)
    whole = run(data, config, engine=engine)

    epochs_seen: list[int] = []

    def pause_after_epoch_12() -> bool:
        return bool(epochs_seen) and epochs_seen[-1] == 12

    first = run(
        data,
        config,
        engine=engine,
        should_pause=pause_after_epoch_12,
        on_epoch=lambda e: epochs_seen.append(e.epoch),
    )
    assert first.stop_reason == "paused" and first.checkpoint is not None
    assert first.checkpoint.epoch == 12
    stored = Checkpoint.from_tensors(
        *decode_checkpoint(encode_checkpoint(*first.checkpoint.to_tensors()))
    )
    second = run(data, config, engine=engine, resume=stored)
    resumed = first.history + second.history
    assert [e.epoch for e in resumed] == list(range(1, 31))
    assert [(e.train_loss, e.val_loss) for e in resumed] == [
        (e.train_loss, e.val_loss) for e in whole.history
    ]
    assert second.best_epoch == whole.best_epoch
    for name, tensor in whole.state.items():
        assert torch.equal(tensor, second.state[name])
    assert resumed[-1].seconds >= first.checkpoint.seconds


def test_checkpoints_are_offered_when_due_but_not_after_the_last_epoch() -> None:
    offered: list[int] = []
    run(
        sinc_tensors(),
        TrainingConfig(epochs=6, batch_size=64),
        checkpoint_due=lambda epoch: epoch % 2 == 0,
        on_checkpoint=lambda checkpoint: offered.append(checkpoint.epoch),
    )
    assert offered == [2, 4]


def test_max_runtime_stops_training_once_the_limit_is_reached() -> None:
    started = time.perf_counter()
    result = run(
        sinc_tensors(), TrainingConfig(epochs=100_000, batch_size=64, max_runtime_seconds=0.3)
    )
    elapsed = time.perf_counter() - started
    assert result.stop_reason == "max_runtime"
    assert len(result.history) < 100_000
    # Not before the limit, and at the first epoch that reached it: every earlier one ended
    # under it. How long past it is the machine's speed, so it is not asserted.
    assert elapsed >= 0.3
    assert all(epoch.seconds < 0.3 for epoch in result.history[:-1])
