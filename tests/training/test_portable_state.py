"""One training state for every engine: the same batches, one checkpoint layout, hand-overs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from service.storage.store import decode_checkpoint, encode_checkpoint
from service.training.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    UnusableCheckpoint,
    parameter_shapes,
)
from service.training.data import TrainingTensors, epoch_order
from service.training.engine import TrainingConfig
from service.training.network import NetworkConfig, build_network
from service.training.trainer import EngineChoice, EpochResult, TrainingResult, train
from tests.support import cpu_tensors, sinc_data
from tests.training.engine_spy import spy_on_engines

ARCHITECTURE = NetworkConfig(2, (16, 8), 1, "tanh", "tanh")
ENGINES: list[EngineChoice] = ["numpy", "torch"]
OPTIMIZERS: list[dict[str, Any]] = [
    {"optimizer": "adam"},
    {"optimizer": "adamw", "weight_decay": 0.01},
    {"optimizer": "sgd", "momentum": 0.9, "learning_rate": 0.05},
    {"optimizer": "sgd", "momentum": 0.0, "learning_rate": 0.05},
]


def data(validation_fraction: float = 0.25) -> TrainingTensors:
    x, y = sinc_data(20)
    return cpu_tensors(x, y, validation_fraction=validation_fraction, seed=5)


def run(
    engine: EngineChoice, config: TrainingConfig, tensors: TrainingTensors, **kwargs: Any
) -> TrainingResult:
    torch.manual_seed(config.seed)
    network = build_network(ARCHITECTURE)
    return train(network, ARCHITECTURE, tensors, config, engine=engine, **kwargs)


def paused_after(
    epoch: int, engine: EngineChoice, config: TrainingConfig, tensors: TrainingTensors
) -> TrainingResult:
    seen: list[int] = []
    result = run(
        engine,
        config,
        tensors,
        should_pause=lambda: bool(seen) and seen[-1] == epoch,
        on_epoch=lambda e: seen.append(e.epoch),
    )
    assert result.stop_reason == "paused" and result.checkpoint is not None
    return result


def stored(checkpoint: Checkpoint) -> Checkpoint:
    """Through the bytes the database keeps, as a worker on another machine would read it."""
    return Checkpoint.from_tensors(*decode_checkpoint(encode_checkpoint(*checkpoint.to_tensors())))


def losses(history: list[EpochResult]) -> list[float]:
    return [e.train_loss for e in history]


def test_an_epoch_s_order_depends_on_seed_and_epoch_alone() -> None:
    first = epoch_order(7, 3, 1000)
    assert np.array_equal(first, epoch_order(7, 3, 1000))
    assert sorted(first.tolist()) == list(range(1000))
    assert not np.array_equal(first, epoch_order(7, 4, 1000))
    assert not np.array_equal(first, epoch_order(8, 3, 1000))


def test_both_engines_train_on_the_same_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop hands each engine the same rows in the same order, epoch after epoch."""
    spied = spy_on_engines(monkeypatch)
    config = TrainingConfig(epochs=4, batch_size=32, seed=11)
    for engine in ENGINES:
        run(engine, config, data())
    seen = {name: [e.rows for e in spied if e.engine == name] for name in ENGINES}
    assert len(seen["numpy"]) == len(seen["torch"]) == 4
    for numpy_rows, torch_rows in zip(seen["numpy"], seen["torch"], strict=True):
        assert torch.equal(numpy_rows, torch_rows)
    assert not torch.equal(seen["numpy"][0], seen["numpy"][1])  # each epoch reshuffles


@pytest.mark.parametrize("settings", OPTIMIZERS, ids=lambda s: "-".join(map(str, s.values())))
def test_both_engines_write_one_checkpoint_layout(settings: dict[str, Any]) -> None:
    config = TrainingConfig(epochs=10, batch_size=32, **settings)
    layouts = []
    for engine in ENGINES:
        checkpoint = paused_after(3, engine, config, data()).checkpoint
        assert checkpoint is not None and checkpoint.engine == engine
        tensors, metadata = checkpoint.to_tensors()
        assert metadata["format_version"] == FORMAT_VERSION
        layouts.append({name: (tuple(t.shape), t.dtype) for name, t in tensors.items()})
    assert layouts[0] == layouts[1]
    names = set(layouts[0])
    assert {f"weights.{name}" for name in parameter_shapes(ARCHITECTURE)} <= names
    if settings["optimizer"] in ("adam", "adamw"):
        assert {"optimizer.0.weight.step", "optimizer.0.weight.exp_avg"} <= names
        assert "optimizer.0.weight.exp_avg_sq" in names
    elif settings["momentum"]:
        assert "optimizer.4.bias.momentum_buffer" in names
    else:  # plain SGD keeps no state, in torch.optim as here
        assert not any(name.startswith("optimizer.") for name in names)


@pytest.mark.parametrize("settings", OPTIMIZERS, ids=lambda s: "-".join(map(str, s.values())))
@pytest.mark.parametrize(("first", "second"), [("numpy", "torch"), ("torch", "numpy")])
def test_a_run_checkpointed_by_one_engine_continues_on_the_other(
    first: EngineChoice, second: EngineChoice, settings: dict[str, Any]
) -> None:
    tensors = data()
    config = TrainingConfig(epochs=30, batch_size=32, seed=5, **settings)
    unbroken = run(second, config, tensors)
    paused = paused_after(12, first, config, tensors)
    assert paused.checkpoint is not None
    resumed = run(second, config, tensors, resume=stored(paused.checkpoint))
    history = paused.history + resumed.history
    assert [e.epoch for e in history] == list(range(1, 31))
    # The two engines round differently; the runs agree as closely as two unbroken ones do.
    np.testing.assert_allclose(losses(history), losses(unbroken.history), rtol=1e-3)
    for name, tensor in unbroken.state.items():
        np.testing.assert_allclose(
            resumed.state[name].numpy(), tensor.numpy(), rtol=1e-3, atol=1e-4, err_msg=name
        )


def test_early_stopping_state_crosses_engines_too() -> None:
    tensors = data()
    config = TrainingConfig(epochs=60, batch_size=16, learning_rate=0.05, early_stopping_patience=4)
    unbroken = run("torch", config, tensors)
    paused = paused_after(3, "numpy", config, tensors)
    assert paused.checkpoint is not None
    resumed = run("torch", config, tensors, resume=stored(paused.checkpoint))
    assert resumed.stop_reason == unbroken.stop_reason == "early_stopped"
    assert resumed.best_epoch == unbroken.best_epoch


def test_a_checkpoint_of_another_format_version_is_refused() -> None:
    checkpoint = paused_after(2, "numpy", TrainingConfig(epochs=5, batch_size=64), data())
    assert checkpoint.checkpoint is not None
    tensors, metadata = checkpoint.checkpoint.to_tensors()
    for version in (1, FORMAT_VERSION + 1, None):
        with pytest.raises(UnusableCheckpoint, match="format version"):
            Checkpoint.from_tensors(tensors, {**metadata, "format_version": version})


def test_a_checkpoint_that_does_not_fit_the_network_is_refused_before_training() -> None:
    config = TrainingConfig(epochs=5, batch_size=64)
    paused = paused_after(2, "numpy", config, data())
    assert paused.checkpoint is not None
    checkpoint = paused.checkpoint
    other_width = NetworkConfig(2, (17, 8), 1, "tanh", "tanh")
    with pytest.raises(UnusableCheckpoint, match=r"shape \(16, 2\)"):
        checkpoint.check_fits(other_width, "adam")
    with pytest.raises(UnusableCheckpoint, match="not sgd's"):
        checkpoint.check_fits(ARCHITECTURE, "sgd")
    missing_layer = replace(
        checkpoint,
        state=replace(
            checkpoint.state,
            weights={k: v for k, v in checkpoint.state.weights.items() if k != "4.bias"},
        ),
    )
    with pytest.raises(UnusableCheckpoint):
        run("torch", config, data(), resume=missing_layer)
