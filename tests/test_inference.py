from __future__ import annotations

import numpy as np
import pytest
import torch

from service.inference import softmax, torch_forward
from service.training.network import ACTIVATIONS, NetworkConfig, build_network
from service.training.numpy_network import NumpyNetwork


@pytest.mark.parametrize("activation", sorted(set(ACTIVATIONS) - {"gelu"}))
def test_numpy_forward_equals_torch_forward(activation: str) -> None:
    config = NetworkConfig(3, (20, 9), 2, activation, "tanh")
    torch.manual_seed(0)
    network = build_network(config).eval()
    x = np.random.default_rng(0).normal(scale=3.0, size=(257, 3))
    expected = torch_forward(network)(x)
    actual = NumpyNetwork(config, network.state_dict())(x)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_only_gelu_falls_back_to_torch() -> None:
    unsupported = [
        a for a in ACTIVATIONS if not NumpyNetwork.supports(NetworkConfig(1, (1,), 1, a, None))
    ]
    assert unsupported == ["gelu"]


def test_batched_rows_equal_rows_one_by_one() -> None:
    config = NetworkConfig(2, (80,), 1, "tanh", "tanh")
    torch.manual_seed(1)
    forward = NumpyNetwork(config, build_network(config).state_dict())
    x = np.random.default_rng(1).uniform(-2, 2, size=(64, 2))
    one_by_one = np.concatenate([forward(row[None, :]) for row in x])
    np.testing.assert_array_equal(forward(x), one_by_one)


def test_softmax_rows_sum_to_one_even_for_huge_logits() -> None:
    probabilities = softmax(np.array([[1000.0, 0.0, -1000.0], [1.0, 1.0, 1.0]]))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_allclose(probabilities[1], 1 / 3)
    assert np.all(np.isfinite(probabilities))


def test_rows_of_a_large_network_agree_across_batch_sizes_within_rounding() -> None:
    config = NetworkConfig(2, (256, 256), 1, "relu", None)
    torch.manual_seed(2)
    forward = NumpyNetwork(config, build_network(config).state_dict())
    x = np.random.default_rng(2).uniform(-2, 2, size=(64, 2))
    one_by_one = np.concatenate([forward(row[None, :]) for row in x])
    np.testing.assert_allclose(forward(x), one_by_one, rtol=1e-5, atol=1e-6)
