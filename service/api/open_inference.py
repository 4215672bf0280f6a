"""The Open Inference Protocol v2 (KServe, Triton, MLServer) on the wire: tensors as JSON, and
the binary tensor data extension that `tritonclient.http` uses by default.

A request is JSON, or JSON followed by raw tensor bytes: the `Inference-Header-Content-Length`
header says where the JSON ends, and each input whose parameters carry `binary_data_size` takes
that many bytes, in input order. Answers follow the same rule: an output is sent as bytes when
its requested parameters say `binary_data: true`, or, failing that, when the request's
parameters say `binary_data_output: true` (what tritonclient sends when it names no outputs).

This module knows the protocol, not the models: it turns bytes into named arrays and named
arrays into bytes. Every problem with a request is a BadRequest (400), as the protocol says.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.api.json_io import numbers_array
from service.errors import BadRequest

HEADER_LENGTH = "inference-header-content-length"
# The numeric tensor types a model input may come in; each read little-endian from bytes.
NUMERIC_DATATYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(kind).newbyteorder("<")
    for name, kind in {
        "UINT8": np.uint8,
        "UINT16": np.uint16,
        "UINT32": np.uint32,
        "UINT64": np.uint64,
        "INT8": np.int8,
        "INT16": np.int16,
        "INT32": np.int32,
        "INT64": np.int64,
        "FP16": np.float16,
        "FP32": np.float32,
        "FP64": np.float64,
    }.items()
}
# BYTES elements travel as a 4-byte little-endian length, then the bytes.
BYTES_LENGTH = np.dtype("<u4")


@dataclass(frozen=True)
class InputTensor:
    name: str
    datatype: str
    values: np.ndarray  # shaped as the request's `shape` says


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: list[InputTensor]
    # The outputs asked for by name, each with whether it should come as bytes; None: all.
    outputs: dict[str, bool | None] | None
    binary_by_default: bool = False

    def wants_binary(self, output: str) -> bool:
        asked = (self.outputs or {}).get(output)
        return self.binary_by_default if asked is None else asked


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str  # FP32, INT64 or BYTES
    values: np.ndarray | list[str]  # a numeric array, or BYTES elements as strings
    shape: list[int] = field(default_factory=list)


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """The request's inputs as arrays; BadRequest naming what is wrong otherwise."""
    document, binary = _split_body(body, header_length)
    if not isinstance(document, dict):
        raise BadRequest("the inference request must be a JSON object")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("the inference request needs 'inputs': a non-empty list of tensors")
    offset = 0
    inputs = []
    for index, raw in enumerate(raw_inputs):
        tensor, offset = _read_input(raw, index, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise BadRequest(
            f"the body holds {len(binary) - offset} bytes of tensor data that no input's "
            "binary_data_size accounts for"
        )
    parameters = _parameters(document.get("parameters"), "the request")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    return InferRequest(
        id=request_id,
        inputs=inputs,
        outputs=_requested_outputs(document.get("outputs")),
        binary_by_default=_flag(parameters, "binary_data_output", "the request"),
    )


def _split_body(body: bytes, header_length: str | None) -> tuple[Any, bytes]:
    """(the JSON document, the tensor bytes after it)."""
    if header_length is None:
        json_part, binary = body, b""
    else:
        if not header_length.strip().isdigit():
            raise BadRequest("Inference-Header-Content-Length must be a number of bytes")
        length = int(header_length)
        if length > len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length is {length} but the body has {len(body)} bytes"
            )
        json_part, binary = body[:length], body[length:]
    try:
        return orjson.loads(json_part), binary
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the inference request is not valid JSON ({exc})") from exc


def _read_input(raw: Any, index: int, binary: bytes, offset: int) -> tuple[InputTensor, int]:
    where = f"inputs[{index}]"
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object with name, shape, datatype and data")
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str):
        raise BadRequest(f"{where}: 'name' must be a string")
    where = f"input '{name}'"
    if not isinstance(datatype, str) or datatype not in NUMERIC_DATATYPES:
        raise BadRequest(
            f"{where}: datatype {datatype!r} is not a number type; "
            f"send one of {', '.join(NUMERIC_DATATYPES)}"
        )
    if (
        not isinstance(shape, list)
        or not shape
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise BadRequest(f"{where}: 'shape' must be a non-empty list of non-negative integers")
    dtype = NUMERIC_DATATYPES[datatype]
    size = math.prod(shape)
    parameters = _parameters(raw.get("parameters"), where)
    if "binary_data_size" in parameters:
        n_bytes = parameters["binary_data_size"]
        if type(n_bytes) is not int or n_bytes < 0:
            raise BadRequest(f"{where}: binary_data_size must be a non-negative integer")
        if n_bytes != size * dtype.itemsize:
            raise BadRequest(
                f"{where}: shape {shape} of {datatype} takes {size * dtype.itemsize} bytes, "
                f"but binary_data_size is {n_bytes}"
            )
        if offset + n_bytes > len(binary):
            raise BadRequest(f"{where}: the body ends before its {n_bytes} bytes of tensor data")
        tensor = np.frombuffer(binary, dtype=dtype, count=size, offset=offset).reshape(shape)
        return InputTensor(name, datatype, tensor), offset + n_bytes
    if "data" not in raw:
        raise BadRequest(f"{where}: send 'data', or its bytes with a binary_data_size parameter")
    values = numbers_array(raw["data"], f"{where}: 'data'").ravel().astype(dtype, copy=False)
    if values.size != size:
        raise BadRequest(
            f"{where}: shape {shape} holds {size} values, but 'data' has {values.size}"
        )
    return InputTensor(name, datatype, values.reshape(shape)), offset


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    return raw


def _flag(parameters: dict[str, Any], name: str, where: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}: parameter {name} must be true or false")
    return value


def _requested_outputs(raw: Any) -> dict[str, bool | None] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadRequest("'outputs' must be a list of objects with a name")
    outputs: dict[str, bool | None] = {}
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f"outputs[{index}] must be an object with a name")
        parameters = _parameters(item.get("parameters"), f"output '{item['name']}'")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise BadRequest(f"output '{item['name']}': binary_data must be true or false")
        outputs[item["name"]] = binary
    return outputs


def encode_infer_response(
    request: InferRequest, model_name: str, model_version: str, outputs: Sequence[OutputTensor]
) -> tuple[bytes, int | None]:
    """The response body, and the length of its JSON part when tensor bytes follow it."""
    described = []
    chunks: list[bytes] = []
    for output in outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        if request.wants_binary(output.name):
            raw = _tensor_bytes(output)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = (
                output.values if isinstance(output.values, list) else output.values.ravel()
            )
        described.append(entry)
    header = orjson.dumps(
        {
            "model_name": model_name,
            "model_version": model_version,
            "id": request.id if request.id is not None else str(uuid.uuid4()),
            "outputs": described,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _tensor_bytes(output: OutputTensor) -> bytes:
    if isinstance(output.values, list):
        parts = []
        for element in output.values:
            encoded = element.encode()
            parts += [np.array(len(encoded), dtype=BYTES_LENGTH).tobytes(), encoded]
        return b"".join(parts)
    dtype = NUMERIC_DATATYPES[output.datatype]
    return np.ascontiguousarray(output.values, dtype=dtype).tobytes()
