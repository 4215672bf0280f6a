"""The standard protocols and exports against a running service, with the real clients:
tritonclient (Open Inference Protocol v2, binary and JSON), httpx for MLflow's /invocations,
onnxruntime and torch.jit.load for exported files. Every answer must equal the native /predict.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import tritonclient.http as triton
from safetensors.numpy import load as load_arrays
from tritonclient.utils import InferenceServerException

from tests.support import ServiceProcess, submit_job, wait_for_job

pytestmark = pytest.mark.e2e

FEATURES = ["radius", "angle"]


def regression_job() -> dict[str, Any]:
    """Two named inputs, standard-scaled targets far from zero: both scalers matter."""
    rng = np.random.default_rng(3)
    x = rng.uniform([0.0, -3.0], [5.0, 3.0], size=(300, 2))
    y = 100.0 + 20.0 * np.sin(x[:, 0]) * np.cos(x[:, 1])
    return {
        "data": {"x": x.tolist(), "y": y.tolist(), "feature_names": FEATURES},
        "model": {"hidden_layers": [24], "activation": "tanh", "output_activation": None},
        "training": {"epochs": 30, "batch_size": 50},
        "preprocessing": {"inputs": "standard", "targets": "standard"},
    }


def classification_job() -> dict[str, Any]:
    rng = np.random.default_rng(4)
    centres = {"red": (-3.0, 0.0), "green": (3.0, 0.0), "blue": (0.0, 4.0)}
    labels = [list(centres)[i % 3] for i in range(150)]
    x = np.array([centres[label] for label in labels]) + rng.normal(scale=0.7, size=(150, 2))
    return {
        "task": "classification",
        "data": {"x": x.tolist(), "y": labels},
        "model": {"hidden_layers": [16], "activation": "relu"},
        "training": {"epochs": 30, "batch_size": 50},
    }


@pytest.fixture(scope="module")
def models(api: httpx.Client, service: ServiceProcess) -> dict[str, str]:
    """A trained regressor (with feature names) and classifier, submitted together."""
    ids = {
        "regression": submit_job(api, regression_job()),
        "classification": submit_job(api, classification_job()),
    }
    for job_id in ids.values():
        job = wait_for_job(api, job_id)
        assert job["status"] == "succeeded", (job, service.log_tail())
    return ids


@pytest.fixture(scope="module")
def triton_client(service: ServiceProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(service.url.removeprefix("http://"))
    yield client
    client.close()


def raw_inputs(n: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform([0.0, -3.0], [5.0, 3.0], size=(n, 2))


def native(api: httpx.Client, model_id: str, x: np.ndarray) -> dict[str, Any]:
    response = api.post(f"/models/{model_id}/predict", json={"inputs": x.tolist()})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def triton_infer(
    client: triton.InferenceServerClient,
    model_id: str,
    x: np.ndarray,
    binary: bool,
    outputs: list[str] | None,
    **kwargs: Any,
) -> triton.InferResult:
    tensor = triton.InferInput("inputs", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x.astype(np.float32), binary_data=binary)
    requested = (
        [triton.InferRequestedOutput(name, binary_data=binary) for name in outputs]
        if outputs is not None
        else None
    )
    return client.infer(model_id, [tensor], outputs=requested, **kwargs)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_regression_equals_native_predict(
    api: httpx.Client,
    triton_client: triton.InferenceServerClient,
    models: dict[str, str],
    binary: bool,
) -> None:
    model_id = models["regression"]
    x = raw_inputs()
    # Triton inputs are float32: the native route gets the same float32 values.
    x32 = x.astype(np.float32).astype(np.float64)
    expected = np.asarray(native(api, model_id, x32)["predictions"])
    result = triton_infer(triton_client, model_id, x, binary, ["predictions"])
    predictions = result.as_numpy("predictions")
    assert predictions.dtype == np.float32 and predictions.shape == (64, 1)
    np.testing.assert_allclose(predictions, expected, rtol=1e-6)
    answer = result.get_response()
    assert answer["model_name"] == model_id and answer["model_version"] == "1"
    assert ("data" in answer["outputs"][0]) is not binary


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_classification_equals_native_predict(
    api: httpx.Client,
    triton_client: triton.InferenceServerClient,
    models: dict[str, str],
    binary: bool,
) -> None:
    model_id = models["classification"]
    x = np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0], [0.5, 0.5]], dtype=np.float32)
    expected = native(api, model_id, x.astype(np.float64))
    result = triton_infer(triton_client, model_id, x, binary, ["labels", "probabilities"])
    # BYTES come back as bytes from binary answers and as str from JSON ones (as from Triton).
    labels = [
        label.decode() if isinstance(label, bytes) else label for label in result.as_numpy("labels")
    ]
    assert labels == expected["predictions"]
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), expected["probabilities"], rtol=1e-6, atol=1e-7
    )


def test_tritonclient_defaults_binary_answers_and_accepts_versions(
    api: httpx.Client, triton_client: triton.InferenceServerClient, models: dict[str, str]
) -> None:
    """No outputs named: tritonclient asks for every output as bytes (binary_data_output)."""
    model_id = models["regression"]
    x = raw_inputs(5, seed=1)
    result = triton_infer(triton_client, model_id, x, True, None, model_version="1")
    assert "parameters" in result.get_response()["outputs"][0]
    expected = native(api, model_id, x.astype(np.float32).astype(np.float64))["predictions"]
    np.testing.assert_allclose(result.as_numpy("predictions"), expected, rtol=1e-6)
    with pytest.raises(InferenceServerException) as unknown_version:
        triton_infer(triton_client, model_id, x, True, None, model_version="2")
    assert unknown_version.value.status() == "404"
    assert "no version 2" in unknown_version.value.message()


def test_tritonclient_health_metadata_and_readiness(
    api: httpx.Client, triton_client: triton.InferenceServerClient, models: dict[str, str]
) -> None:
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    server = triton_client.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"]
    model_id = models["classification"]
    assert triton_client.is_model_ready(model_id)
    assert triton_client.is_model_ready(model_id, model_version="1")
    assert not triton_client.is_model_ready(model_id, model_version="7")
    assert not triton_client.is_model_ready("no-such-model")
    metadata = triton_client.get_model_metadata(model_id)
    assert metadata["inputs"] == [{"name": "inputs", "datatype": "FP32", "shape": [-1, 2]}]
    assert metadata["outputs"] == [
        {"name": "labels", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert metadata["versions"] == ["1"]


def test_a_model_still_training_is_not_ready(
    api: httpx.Client, triton_client: triton.InferenceServerClient, models: dict[str, str]
) -> None:
    slow = regression_job()
    slow["training"]["epochs"] = 100_000
    job_id = submit_job(api, slow)
    try:
        assert not triton_client.is_model_ready(job_id)
        response = api.get(f"/v2/models/{job_id}/ready")
        assert response.status_code == 400
        assert "not ready" in response.json()["error"]
    finally:
        api.post(f"/jobs/{job_id}/cancel")


def test_v2_json_takes_nested_data_and_other_number_types(
    api: httpx.Client, models: dict[str, str]
) -> None:
    model_id = models["regression"]
    x = raw_inputs(3, seed=2).round(3)
    expected = native(api, model_id, x)["predictions"]
    for datatype, data in (("FP64", x.tolist()), ("FP64", x.ravel().tolist())):
        body = {"inputs": [{"name": "inputs", "shape": [3, 2], "datatype": datatype, "data": data}]}
        response = api.post(f"/v2/models/{model_id}/versions/1/infer", json=body)
        assert response.status_code == 200, response.text
        output = response.json()["outputs"][0]
        assert output["name"] == "predictions" and output["shape"] == [3, 1]
        np.testing.assert_allclose(np.reshape(output["data"], (3, 1)), expected, rtol=1e-6)
    integers = {
        "inputs": [{"name": "inputs", "shape": [1, 2], "datatype": "INT32", "data": [2, 1]}]
    }
    response = api.post(f"/v2/models/{model_id}/infer", json=integers)
    assert response.status_code == 200, response.text
    expected_int = native(api, model_id, np.array([[2.0, 1.0]]))["predictions"]
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected_int[0], rtol=1e-6)


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"name": "x"}, 400, "takes one input 'inputs'"),
        ({"shape": [1, 3], "data": [1, 2, 3]}, 400, "got shape [1, 3]"),
        ({"shape": [2, 2]}, 400, "holds 4 values"),
        ({"data": [True, 1.0]}, 400, "finite number"),
        ({"datatype": "BYTES"}, 400, "not a number type"),
    ],
)
def test_v2_errors_take_the_protocol_s_shape(
    api: httpx.Client, models: dict[str, str], change: dict[str, Any], status: int, words: str
) -> None:
    tensor = {"name": "inputs", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0], **change}
    response = api.post(f"/v2/models/{models['regression']}/infer", json={"inputs": [tensor]})
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_v2_unknown_model_is_404(api: httpx.Client) -> None:
    tensor = {"name": "inputs", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}
    response = api.post("/v2/models/nope/infer", json={"inputs": [tensor]})
    assert response.status_code == 404 and "nope" in response.json()["error"]
    metadata = api.get("/v2/models/nope")
    assert metadata.status_code == 404 and "nope" in metadata.json()["error"]


def mlflow_bodies(x: np.ndarray) -> list[tuple[str, dict[str, Any] | str]]:
    """The same rows in every form `mlflow models serve` takes; named forms list the
    columns in reverse, so only matching by name gets them right."""
    reversed_names = FEATURES[::-1]
    named = [dict(zip(reversed_names, row[::-1], strict=True)) for row in x.tolist()]
    csv = "angle,radius\n" + "".join(f"{b!r},{a!r}\n" for a, b in x.tolist())
    return [
        (
            "dataframe_split",
            {"dataframe_split": {"columns": reversed_names, "data": x[:, ::-1].tolist()}},
        ),
        ("dataframe_records", {"dataframe_records": named}),
        ("instances", {"instances": x.tolist()}),
        ("instances-named", {"instances": named}),
        ("inputs", {"inputs": x.tolist()}),
        ("inputs-columns", {"inputs": {"angle": x[:, 1].tolist(), "radius": x[:, 0].tolist()}}),
        ("csv", csv),
    ]


def test_mlflow_invocations_take_every_form_and_match_columns_by_name(
    api: httpx.Client, models: dict[str, str]
) -> None:
    model_id = models["regression"]
    x = raw_inputs(6, seed=5)
    expected = np.asarray(native(api, model_id, x)["predictions"])[:, 0]
    for form, body in mlflow_bodies(x):
        if isinstance(body, str):
            response = api.post(
                f"/models/{model_id}/invocations",
                content=body,
                headers={"Content-Type": "text/csv"},
            )
        else:
            response = api.post(f"/models/{model_id}/invocations", json=body)
        assert response.status_code == 200, (form, response.text)
        np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-12)


def test_mlflow_errors_name_the_missing_column(api: httpx.Client, models: dict[str, str]) -> None:
    response = api.post(
        f"/models/{models['regression']}/invocations",
        json={"dataframe_records": [{"radius": 1.0, "height": 2.0}]},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error_code"] == "BAD_REQUEST" and "missing: angle" in body["message"]
    assert body["detail"] == body["message"]
    assert api.get(f"/models/{models['regression']}/ping").status_code == 200


def test_mlflow_classifier_answers_labels_by_position(
    api: httpx.Client, models: dict[str, str]
) -> None:
    model_id = models["classification"]
    x = [[-3.0, 0.0], [3.0, 0.0]]
    expected = native(api, model_id, np.asarray(x))["predictions"]
    response = api.post(
        f"/models/{model_id}/invocations",
        json={"dataframe_split": {"columns": ["a", "b"], "data": x}},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": expected}


def export(api: httpx.Client, model_id: str, fmt: str) -> bytes:
    response = api.get(f"/models/{model_id}/export", params={"format": fmt})
    assert response.status_code == 200, response.text
    assert fmt in response.headers["content-disposition"] or fmt == "torchscript"
    return response.content


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_onnx_export_runs_in_onnxruntime_like_predict(
    api: httpx.Client, models: dict[str, str], task: str
) -> None:
    model_id = models[task]
    content = export(api, model_id, "onnx")
    metadata = json.loads(
        {p.key: p.value for p in onnx.load_from_string(content).metadata_props}["metadata"]
    )
    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    x = raw_inputs(200, seed=7).astype(np.float32)
    (output,) = session.run(None, {"inputs": x})
    expected = native(api, model_id, x.astype(np.float64))
    if task == "regression":
        assert metadata["output"]["name"] == "predictions"
        assert metadata["input"]["feature_names"] == FEATURES
        np.testing.assert_allclose(output, expected["predictions"], rtol=1e-5)
    else:
        np.testing.assert_allclose(output, expected["probabilities"], rtol=1e-5, atol=1e-6)
        labels = [metadata["classes"][i] for i in output.argmax(axis=1)]
        assert labels == expected["predictions"]


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_torchscript_export_loads_with_torch_jit_like_predict(
    api: httpx.Client, models: dict[str, str], task: str
) -> None:
    model_id = models[task]
    extra = {"metadata.json": ""}
    with warnings.catch_warnings():  # torch marks TorchScript deprecated; loading still works
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(
            io.BytesIO(export(api, model_id, "torchscript")), _extra_files=extra
        )
    assert json.loads(extra["metadata.json"])["model_id"] == model_id
    x = raw_inputs(200, seed=8).astype(np.float32)
    with torch.no_grad():
        output = module(torch.from_numpy(x)).numpy()
    expected = native(api, model_id, x.astype(np.float64))
    key = "predictions" if task == "regression" else "probabilities"
    np.testing.assert_allclose(output, expected[key], rtol=1e-5, atol=1e-6)


def test_safetensors_export_holds_layers_and_scalers(
    api: httpx.Client, models: dict[str, str]
) -> None:
    """Following the metadata's formula with numpy alone gives /predict's answers."""
    model_id = models["regression"]
    arrays = load_arrays(export(api, model_id, "safetensors"))
    x = raw_inputs(50, seed=9)
    a = (x - arrays["input.mean"]) / arrays["input.scale"]
    a = np.tanh(a @ arrays["0.weight"].T + arrays["0.bias"])
    output = (a @ arrays["2.weight"].T + arrays["2.bias"]) * arrays["output.scale"]
    output += arrays["output.mean"]
    np.testing.assert_allclose(output, native(api, model_id, x)["predictions"], rtol=1e-5)
