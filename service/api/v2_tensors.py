"""A model's tensors under the Open Inference Protocol: its signature (input `inputs`, outputs
by task), its rows read from a request, its prediction written as output tensors.

The v2 route and the predict fast path both answer through `infer_answer`, so the two send the
same bytes for the same request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.api.open_inference import InferRequest, OutputTensor, encode_infer_response
from service.errors import BadRequest
from service.inference import Prediction, Predictor

MODEL_VERSION = "1"
INPUT_NAME = "inputs"


@dataclass(frozen=True)
class InferAnswer:
    payload: bytes
    header_length: int | None  # of the JSON part, when tensor bytes follow it

    @property
    def headers(self) -> dict[str, str]:
        if self.header_length is None:
            return {"content-type": "application/json"}
        return {
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(self.header_length),
        }


def infer_answer(
    request: InferRequest, predictor: Predictor, prediction: Prediction, wanted: set[str]
) -> InferAnswer:
    """The response to `request`: the outputs it asked for (`wanted`, from select_outputs,
    which callers run before the prediction so an unknown output costs no work)."""
    tensors = [t for t in output_tensors(prediction, predictor) if t.name in wanted]
    payload, header_length = encode_infer_response(
        request, predictor.model_id, MODEL_VERSION, tensors
    )
    return InferAnswer(payload, header_length)


def output_signature(predictor: Predictor) -> list[tuple[str, str, list[int]]]:
    """(name, datatype, shape) of each output: regression one, classification two."""
    if predictor.classes is None:
        return [("predictions", "FP32", [-1, predictor.n_outputs])]
    return [
        ("labels", label_datatype(predictor.classes), [-1]),
        ("probabilities", "FP32", [-1, len(predictor.classes)]),
    ]


def label_datatype(classes: list[Any]) -> str:
    return "INT64" if all(type(label) is int for label in classes) else "BYTES"


def model_inputs(request: InferRequest, predictor: Predictor) -> np.ndarray:
    """The one input tensor as float64 rows, or a 400 that says what the model takes."""
    expected = f"one input '{INPUT_NAME}' of shape [rows, {predictor.n_features}]"
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT_NAME:
        names = ", ".join(repr(tensor.name) for tensor in request.inputs)
        raise BadRequest(f"model {predictor.model_id} takes {expected}; got {names}")
    values = request.inputs[0].values
    if values.ndim != 2 or values.shape[1] != predictor.n_features or values.shape[0] == 0:
        raise BadRequest(
            f"model {predictor.model_id} takes {expected}; got shape {list(values.shape)}"
        )
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise BadRequest(f"input '{INPUT_NAME}' holds NaN or infinite values")
    return values.astype(np.float64)


def select_outputs(request: InferRequest, predictor: Predictor) -> set[str]:
    names = {name for name, _, _ in output_signature(predictor)}
    if request.outputs is None:
        return names
    unknown = sorted(set(request.outputs) - names)
    if unknown:
        raise BadRequest(
            f"model {predictor.model_id} has no output {unknown[0]!r}; "
            f"its outputs are {', '.join(sorted(names))}"
        )
    return set(request.outputs)


def output_tensors(prediction: Prediction, predictor: Predictor) -> list[OutputTensor]:
    if prediction.values is not None:
        values = prediction.values.astype(np.float32)
        return [OutputTensor("predictions", "FP32", values, list(values.shape))]
    assert prediction.labels is not None and prediction.probabilities is not None
    datatype = label_datatype(predictor.classes or [])
    labels: np.ndarray | list[str] = (
        np.asarray(prediction.labels, dtype=np.int64)
        if datatype == "INT64"
        else [str(label) for label in prediction.labels]
    )
    probabilities = prediction.probabilities.astype(np.float32)
    return [
        OutputTensor("labels", datatype, labels, [len(prediction.labels)]),
        OutputTensor("probabilities", "FP32", probabilities, list(probabilities.shape)),
    ]
