from __future__ import annotations

import pytest
import torch

from service.training.network import ACTIVATIONS, NetworkConfig, build_network


def test_the_notebook_network_has_its_shape_and_parameter_count() -> None:
    config = NetworkConfig(2, (80,), 1, "tanh", "tanh")
    network = build_network(config)
    assert sum(p.numel() for p in network.parameters()) == config.n_parameters == 321
    assert isinstance(network[-1], torch.nn.Tanh)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_builds_and_runs(activation: str) -> None:
    network = build_network(NetworkConfig(3, (5, 4), 2, activation, None))
    assert network(torch.zeros(7, 3)).shape == (7, 2)


def test_config_round_trips_through_json() -> None:
    config = NetworkConfig(4, (8, 8), 3, "relu", None)
    assert NetworkConfig.from_dict(config.to_dict()) == config
