"""The numpy engine is the autograd engine, faster: same batches, same updates, float32 rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.training.data import TrainingTensors
from service.training.engine import TrainingConfig
from service.training.network import NetworkConfig, build_network
from service.training.numpy_network import ACTIVATIONS as NUMPY_ACTIVATIONS
from service.training.trainer import EngineChoice, TrainingResult, train
from service.vocabulary import (
    ACTIVATIONS,
    OPTIMIZERS,
    REGRESSION_LOSSES,
    Activation,
    Loss,
    Optimizer,
)
from tests.support import cpu_tensors, sinc_data


def regression_data(n_outputs: int = 1) -> TrainingTensors:
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(300, 3))
    y = np.stack(
        [np.sin(x[:, 0]) * x[:, 1] + 0.3 * x[:, 2] * k for k in range(1, n_outputs + 1)], axis=1
    )
    return cpu_tensors(x, y, scale_targets=True, validation_fraction=0.2)


def classification_data() -> TrainingTensors:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 2))
    y = (np.arctan2(x[:, 1], x[:, 0]) > 0).astype(np.int64) + (x[:, 0] > 1).astype(np.int64)
    return cpu_tensors(x, y, classification=True, validation_fraction=0.2)


def both(
    data: TrainingTensors, architecture: NetworkConfig, config: TrainingConfig
) -> tuple[TrainingResult, TrainingResult]:
    results = []
    for engine in ("torch", "numpy"):
        torch.manual_seed(0)
        network = build_network(architecture)
        chosen: EngineChoice = engine  # type: ignore[assignment]
        results.append(train(network, architecture, data, config, engine=chosen))
    return results[0], results[1]


def assert_same_training(autograd: TrainingResult, manual: TrainingResult) -> None:
    np.testing.assert_allclose(
        [e.train_loss for e in manual.history],
        [e.train_loss for e in autograd.history],
        rtol=2e-4,
        atol=1e-7,
    )
    np.testing.assert_allclose(
        [e.val_loss for e in manual.history],
        [e.val_loss for e in autograd.history],
        rtol=2e-4,
        atol=1e-7,
    )
    assert manual.state.keys() == autograd.state.keys()
    for name, tensor in autograd.state.items():
        np.testing.assert_allclose(
            manual.state[name].numpy(), tensor.numpy(), rtol=1e-3, atol=1e-4, err_msg=name
        )


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_matches_autograd_or_is_left_to_it(activation: Activation) -> None:
    architecture = NetworkConfig(3, (12, 7), 1, activation, activation)
    config = TrainingConfig(epochs=8, batch_size=32, learning_rate=0.005)
    if activation in NUMPY_ACTIVATIONS:
        assert_same_training(*both(regression_data(), architecture, config))
    else:  # a pinned numpy engine hands the job to autograd rather than fail it
        torch.manual_seed(0)
        network = build_network(architecture)
        assert train(network, architecture, regression_data(), config, engine="numpy").engine == (
            "torch"
        )


@pytest.mark.parametrize("loss", REGRESSION_LOSSES)
@pytest.mark.parametrize(
    "optimizer,decay", [(name, decay) for name in OPTIMIZERS for decay in (0.0, 0.01)]
)
def test_every_regression_loss_and_optimizer_matches_autograd(
    loss: Loss, optimizer: Optimizer, decay: float
) -> None:
    architecture = NetworkConfig(3, (10,), 2, "tanh", None)
    config = TrainingConfig(
        optimizer=optimizer,
        loss=loss,
        weight_decay=decay,
        epochs=8,
        batch_size=40,
        learning_rate=0.01,
        momentum=0.8,
    )
    assert_same_training(*both(regression_data(n_outputs=2), architecture, config))


def test_cross_entropy_matches_autograd() -> None:
    architecture = NetworkConfig(2, (16,), 3, "relu", None)
    config = TrainingConfig(loss="cross_entropy", epochs=8, batch_size=32)
    assert_same_training(*both(classification_data(), architecture, config))


def test_the_notebook_job_matches_autograd_over_all_400_epochs() -> None:
    x, y = sinc_data()
    data = cpu_tensors(x, y)
    autograd, manual = both(data, NetworkConfig(2, (80,), 1, "tanh", "tanh"), TrainingConfig())
    # Rounding differences compound over 5,200 steps; the curves still agree closely.
    np.testing.assert_allclose(
        [e.train_loss for e in manual.history], [e.train_loss for e in autograd.history], rtol=0.05
    )
    assert manual.history[-1].train_loss <= 0.005
