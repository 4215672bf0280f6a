"""Each name a job may use has an implementation in every engine, or an engine that declines
it (and leaves the job to autograd); the API offers exactly these names."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from service.training import numpy_engine, torch_engine
from service.training.engine import OPTIMIZER_SLOTS, TrainingConfig
from service.training.network import ACTIVATIONS as TORCH_ACTIVATIONS
from service.training.network import NetworkConfig
from service.training.numpy_network import ACTIVATIONS as NUMPY_ACTIVATIONS
from service.vocabulary import ACTIVATIONS, LOSSES, OPTIMIZERS, Activation, Loss, Optimizer

CPU = torch.device("cpu")


def test_autograd_implements_every_name() -> None:
    assert set(TORCH_ACTIVATIONS) == set(ACTIVATIONS)
    assert set(torch_engine.LOSSES) == set(LOSSES)
    assert set(torch_engine.OPTIMIZERS) == set(OPTIMIZERS)
    assert set(OPTIMIZER_SLOTS) == set(OPTIMIZERS)  # and the checkpoint layout knows its state


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_the_numpy_engine_implements_or_declines_each_activation(activation: Activation) -> None:
    network = NetworkConfig(2, (4,), 1, activation, None)
    assert numpy_engine.can_train(network, CPU, TrainingConfig()) == (
        activation in NUMPY_ACTIVATIONS
    )


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_the_numpy_engine_implements_or_declines_each_optimizer(optimizer: Optimizer) -> None:
    network = NetworkConfig(2, (4,), 1, "tanh", None)
    assert numpy_engine.can_train(network, CPU, TrainingConfig(optimizer=optimizer)) == (
        optimizer in numpy_engine.OPTIMIZERS
    )


@pytest.mark.parametrize("loss", LOSSES)
def test_the_numpy_engine_implements_or_declines_each_loss(loss: Loss) -> None:
    network = NetworkConfig(2, (4,), 1, "tanh", None)
    assert numpy_engine.can_train(network, CPU, TrainingConfig(loss=loss)) == (
        loss in numpy_engine.LOSSES
    )


def test_the_numpy_engine_declines_a_name_it_does_not_know() -> None:
    network = NetworkConfig(2, (4,), 1, "tanh", None)
    unknown = TrainingConfig(optimizer="lion")  # type: ignore[arg-type]
    assert not numpy_engine.can_train(network, CPU, unknown)


def test_the_api_offers_exactly_these_names(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    network = schemas["NetworkSpec"]["properties"]
    training = schemas["TrainingSpec"]["properties"]
    assert network["activation"]["enum"] == list(ACTIVATIONS)
    assert training["optimizer"]["enum"] == list(OPTIMIZERS)
    assert next(s for s in training["loss"]["anyOf"] if "enum" in s)["enum"] == list(LOSSES)
