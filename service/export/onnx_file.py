"""Export as ONNX: the graph written node by node (Gemm and the activation's operators), so the
file needs no tracing, loads in any ONNX runtime and names its input and output plainly.

Opset 17 and IR version 8: recent enough for every operator used here, old enough for the
onnxruntime versions still in wide use.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service import PRODUCT_NAME, __version__
from service.export import INPUT_NAME, ModelParts
from service.vocabulary import Activation

OPSET = 17
IR_VERSION = 8
LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default
SOFTPLUS_THRESHOLD = 20.0  # torch.nn.Softplus's default: linear above it


class GraphBuilder:
    """Nodes and constants, each output named once."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, hint: str, value: np.ndarray | float) -> str:
        name = self.name(hint)
        self.constants.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        output = output or self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output


def _gelu(graph: GraphBuilder, x: str) -> str:
    # torch's exact GELU, 0.5 x (1 + erf(x / sqrt 2)): the Gelu operator needs opset 20.
    scaled = graph.node("Mul", [x, graph.constant("inv_sqrt2", np.array(1 / math.sqrt(2)))])
    erf_plus_one = graph.node("Add", [graph.node("Erf", [scaled]), graph.constant("one", 1.0)])
    return graph.node("Mul", [graph.node("Mul", [x, erf_plus_one]), graph.constant("half", 0.5)])


def _softplus(graph: GraphBuilder, x: str) -> str:
    # As torch computes it: x itself above the threshold, where exp(x) would overflow float32.
    above = graph.node("Greater", [x, graph.constant("threshold", SOFTPLUS_THRESHOLD)])
    return graph.node("Where", [above, x, graph.node("Softplus", [x])])


def _silu(graph: GraphBuilder, x: str) -> str:
    return graph.node("Mul", [x, graph.node("Sigmoid", [x])])


ACTIVATIONS: dict[Activation, Callable[[GraphBuilder, str], str]] = {
    "tanh": lambda graph, x: graph.node("Tanh", [x]),
    "relu": lambda graph, x: graph.node("Relu", [x]),
    "sigmoid": lambda graph, x: graph.node("Sigmoid", [x]),
    "gelu": _gelu,
    "silu": _silu,
    "leaky_relu": lambda graph, x: graph.node("LeakyRelu", [x], alpha=LEAKY_SLOPE),
    "elu": lambda graph, x: graph.node("Elu", [x], alpha=1.0),
    "softplus": _softplus,
    "identity": lambda graph, x: x,
}


def onnx_bytes(parts: ModelParts, metadata: dict[str, Any]) -> bytes:
    graph = GraphBuilder()
    x = INPUT_NAME
    if parts.input_scaler is not None:
        x = graph.node("Sub", [x, graph.constant("input_mean", parts.input_scaler.mean)])
        x = graph.node("Div", [x, graph.constant("input_scale", parts.input_scaler.scale)])
    last = len(parts.layers) - 1
    for i, (weight, bias) in enumerate(parts.layers):
        w, b = graph.constant(f"layer{i}_weight", weight), graph.constant(f"layer{i}_bias", bias)
        x = graph.node("Gemm", [x, w, b], transB=1)
        activation = parts.config.activation if i < last else parts.config.output_activation
        x = ACTIVATIONS[activation or "identity"](graph, x)
    if parts.classes is not None:
        x = graph.node("Softmax", [x], axis=1)
    elif parts.target_scaler is not None:
        x = graph.node("Mul", [x, graph.constant("output_scale", parts.target_scaler.scale)])
        x = graph.node("Add", [x, graph.constant("output_mean", parts.target_scaler.mean)])
    graph.node("Identity", [x], parts.output_name)
    width = len(parts.classes) if parts.classes is not None else parts.config.n_outputs
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            f"model_{parts.model_id}",
            [_tensor_info(INPUT_NAME, parts.config.n_inputs)],
            [_tensor_info(parts.output_name, width)],
            initializer=graph.constants,
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCT_NAME,
        producer_version=__version__,
        doc_string="Raw inputs in, raw outputs out: the training scalers are part of the graph.",
    )
    helper.set_model_props(model, {"metadata": json.dumps(metadata)})
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _tensor_info(name: str, width: int) -> onnx.ValueInfoProto:
    """A float32 [batch, width] tensor; the batch dimension is named, so any size goes."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])
