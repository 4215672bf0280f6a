"""Exports hold the same function as the service's own predict, for every activation."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from service.errors import ModelUnusable
from service.export import export_model
from service.export.onnx_file import ACTIVATIONS as ONNX_ACTIVATIONS
from service.inference import build_predictor, predict
from service.storage.models import Model
from service.storage.store import encode_weights
from service.training.data import Scaler
from service.training.network import NetworkConfig, build_network
from service.vocabulary import ACTIVATIONS


def stored_model(
    config: NetworkConfig, classes: list[str] | None = None, seed: int = 0
) -> tuple[Model, bytes]:
    torch.manual_seed(seed)
    network = build_network(config)
    rng = np.random.default_rng(seed)
    inputs = Scaler(
        mean=rng.normal(size=config.n_inputs) * 10, scale=rng.uniform(0.5, 3, size=config.n_inputs)
    )
    targets = (
        None
        if classes is not None
        else Scaler(mean=np.full(config.n_outputs, 50.0), scale=np.full(config.n_outputs, 4.0))
    )
    model = Model(
        id="model-1",
        task="classification" if classes else "regression",
        architecture=config.to_dict(),
        scalers={
            "inputs": inputs.to_json(),
            "targets": targets.to_json() if targets else {"kind": "none"},
        },
        n_features=config.n_inputs,
        n_outputs=config.n_outputs,
        classes=classes,
        feature_names=None,
        metrics={},
    )
    return model, encode_weights(network.state_dict())


def onnx_outputs(model: Model, weights: bytes, x: np.ndarray) -> np.ndarray:
    content = export_model(model, weights, "onnx").content
    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"inputs": x.astype(np.float32)})
    result: np.ndarray = output
    return result


def test_every_activation_has_an_onnx_form() -> None:
    assert set(ONNX_ACTIVATIONS) == set(ACTIVATIONS)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_onnx_equals_predict_for_every_activation(activation: str) -> None:
    config = NetworkConfig(3, (16, 8), 2, activation, activation)  # type: ignore[arg-type]
    model, weights = stored_model(config)
    # Far outside the training range too: saturation and softplus's threshold must agree.
    x = np.random.default_rng(1).normal(scale=40.0, size=(300, 3))
    expected = predict(build_predictor(model, weights), x.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(
        onnx_outputs(model, weights, x), expected.values, rtol=2e-5, atol=2e-4
    )


def test_classifier_exports_probabilities_and_names_its_classes() -> None:
    config = NetworkConfig(2, (8,), 3, "relu", None)
    model, weights = stored_model(config, classes=["a", "b", "c"])
    x = np.random.default_rng(2).normal(size=(50, 2))
    expected = predict(build_predictor(model, weights), x.astype(np.float32).astype(np.float64))
    output = onnx_outputs(model, weights, x)
    np.testing.assert_allclose(output, expected.probabilities, rtol=1e-5, atol=1e-6)
    metadata = json.loads(
        {
            p.key: p.value
            for p in onnx.load_from_string(
                export_model(model, weights, "onnx").content
            ).metadata_props
        }["metadata"]
    )
    assert metadata["classes"] == ["a", "b", "c"] and metadata["output"]["shape"] == [-1, 3]


def test_torchscript_takes_any_number_of_rows() -> None:
    config = NetworkConfig(2, (8,), 1, "gelu", None)
    model, weights = stored_model(config)
    content = export_model(model, weights, "torchscript").content
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(io.BytesIO(content))
    for n in (1, 7, 1000):
        x = np.random.default_rng(n).normal(size=(n, 2))
        expected = predict(build_predictor(model, weights), x.astype(np.float32).astype(np.float64))
        with torch.no_grad():
            output = module(torch.from_numpy(x.astype(np.float32))).numpy()
        np.testing.assert_allclose(output, expected.values, rtol=1e-5, atol=1e-5)


def test_unreadable_weights_are_a_409_not_a_500() -> None:
    model, _ = stored_model(NetworkConfig(2, (4,), 1, "tanh", None))
    with pytest.raises(ModelUnusable):
        export_model(model, b"not safetensors", "onnx")
