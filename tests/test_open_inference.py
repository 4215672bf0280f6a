"""The Open Inference Protocol's wire format: JSON and binary tensors, in and out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.api.open_inference import (
    InferRequest,
    OutputTensor,
    encode_infer_response,
    parse_infer_request,
)
from service.errors import BadRequest


def binary_request(header: dict[str, object], *tensors: bytes) -> tuple[bytes, str]:
    head = json.dumps(header).encode()
    return head + b"".join(tensors), str(len(head))


def test_binary_inputs_are_read_in_order_little_endian() -> None:
    a = np.arange(6, dtype="<f4").reshape(3, 2)
    b = np.array([[7, 8]], dtype="<i8")
    body, length = binary_request(
        {
            "inputs": [
                {
                    "name": "a",
                    "shape": [3, 2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": a.nbytes},
                },
                {
                    "name": "b",
                    "shape": [1, 2],
                    "datatype": "INT64",
                    "parameters": {"binary_data_size": b.nbytes},
                },
            ]
        },
        a.tobytes(),
        b.tobytes(),
    )
    request = parse_infer_request(body, length)
    np.testing.assert_array_equal(request.inputs[0].values, a)
    np.testing.assert_array_equal(request.inputs[1].values, b)


@pytest.mark.parametrize(
    ("size", "extra", "words"),
    [
        (20, b"", "takes 24 bytes"),
        (24, b"\0" * 4, "no input's binary_data_size accounts for"),
    ],
)
def test_binary_sizes_must_add_up(size: int, extra: bytes, words: str) -> None:
    tensor = np.zeros((3, 2), dtype="<f4").tobytes()
    body, length = binary_request(
        {
            "inputs": [
                {
                    "name": "a",
                    "shape": [3, 2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": size},
                }
            ]
        },
        tensor,
        extra,
    )
    with pytest.raises(BadRequest, match=words):
        parse_infer_request(body, length)


@pytest.mark.parametrize(
    ("length", "words"),
    [("abc", "number of bytes"), ("99999", "body has"), ("3", "not valid JSON")],
)
def test_a_bad_header_length_is_a_400(length: str, words: str) -> None:
    with pytest.raises(BadRequest, match=words):
        parse_infer_request(b'{"inputs": []}', length)


def test_binary_outputs_follow_the_output_then_the_request_parameter() -> None:
    request = InferRequest(
        id="r1", inputs=[], outputs={"labels": False, "probabilities": None}, binary_by_default=True
    )
    assert not request.wants_binary("labels") and request.wants_binary("probabilities")
    outputs = [
        OutputTensor("labels", "BYTES", ["red", "grün"], [2]),
        OutputTensor("probabilities", "FP32", np.array([[0.25, 0.75]], dtype=np.float32), [1, 2]),
    ]
    body, length = encode_infer_response(request, "m", "1", outputs)
    assert length is not None
    header = json.loads(body[:length])
    assert header["id"] == "r1" and header["outputs"][0]["data"] == ["red", "grün"]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 8}
    np.testing.assert_array_equal(np.frombuffer(body[length:], dtype="<f4"), [0.25, 0.75])


def test_bytes_outputs_are_length_prefixed_in_binary() -> None:
    request = InferRequest(id=None, inputs=[], outputs=None, binary_by_default=True)
    body, length = encode_infer_response(
        request, "m", "1", [OutputTensor("labels", "BYTES", ["ab", "c"], [2])]
    )
    assert length is not None and json.loads(body[:length])["id"]  # one is made up
    assert body[length:] == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"


def test_a_json_only_answer_has_no_header_length() -> None:
    request = InferRequest(id=None, inputs=[], outputs=None)
    body, length = encode_infer_response(
        request,
        "m",
        "1",
        [OutputTensor("predictions", "FP32", np.ones((2, 1), np.float32), [2, 1])],
    )
    assert length is None and json.loads(body)["outputs"][0]["data"] == [1.0, 1.0]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "JSON object"),
        ({"inputs": "x"}, "non-empty list"),
        ({"inputs": [{"name": 1}]}, "'name' must be a string"),
        ({"inputs": [{"name": "a", "datatype": "FP32", "shape": [-1]}]}, "non-negative"),
        ({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1]}]}, "send 'data'"),
        (
            {"inputs": [{"name": "a", "datatype": "FP32", "shape": [2], "data": [[1], [2, 3]]}]},
            "rectangular",
        ),
        ({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": ["1"]}]}, "finite"),
        (
            {"inputs": [{"name": "a", "datatype": "BOOL", "shape": [1], "data": [1]}]},
            "not a number",
        ),
        (
            {"inputs": [{"name": "a", "datatype": {}, "shape": [1], "data": [1]}]},
            "not a number",
        ),
        (
            {"id": 3, "inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}]},
            "'id'",
        ),
        (
            {
                "outputs": [{}],
                "inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}],
            },
            "outputs[0]",
        ),
    ],
)
def test_malformed_requests_are_400s_that_say_why(body: object, words: str) -> None:
    with pytest.raises(BadRequest, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_infer_request(json.dumps(body).encode(), None)
