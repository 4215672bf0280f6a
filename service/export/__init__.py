"""A stored model as a file other runtimes load, with its scaling baked in: raw inputs in, raw
outputs out (for a classifier, class probabilities; the class labels are in the metadata).

Each format carries the same metadata (`ExportMetadata`) inside the file: ONNX in its
`metadata_props`, TorchScript as the extra file `metadata.json`, safetensors in its header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from service import __version__
from service.errors import ModelUnusable
from service.storage.models import Model
from service.storage.store import CorruptBlob, decode_weights
from service.training.data import Scaler
from service.training.network import NetworkConfig

ExportFormat = Literal["onnx", "torchscript", "safetensors"]
INPUT_NAME = "inputs"
FORMAT_VERSION = 1  # of the metadata below: raised when its meaning changes
SCALING: dict[ExportFormat, str] = {
    "onnx": "baked into the graph: raw inputs in, raw outputs out",
    "torchscript": "baked into the module: raw inputs in, raw outputs out",
    # Tensors have no graph: the scalers travel as tensors beside the layers.
    "safetensors": (
        "in the file: scaled = (x - input.mean) / input.scale; out = network(scaled); "
        "regression: out * output.scale + output.mean (when present); classification: "
        "softmax(out)"
    ),
}


@dataclass(frozen=True)
class ExportedModel:
    content: bytes
    filename: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ModelParts:
    """What every format writes: the network's float32 layers and the scalers around it."""

    model_id: str
    config: NetworkConfig
    layers: list[tuple[np.ndarray, np.ndarray]]  # (weight [out, in], bias [out]) per Linear
    input_scaler: Scaler | None
    target_scaler: Scaler | None
    classes: list[Any] | None
    feature_names: list[str] | None

    @property
    def output_name(self) -> str:
        return "probabilities" if self.classes is not None else "predictions"


def model_parts(model: Model, weights: bytes) -> ModelParts:
    config = NetworkConfig.from_dict(model.architecture)
    try:
        state = decode_weights(weights)
        # nn.Sequential numbering: Linear layers sit at 0, 2, 4, ... (an activation after each).
        layers = [
            (
                state[f"{2 * i}.weight"].numpy().astype(np.float32),
                state[f"{2 * i}.bias"].numpy().astype(np.float32),
            )
            for i in range(len(config.hidden_layers) + 1)
        ]
    except (CorruptBlob, KeyError) as exc:
        raise ModelUnusable(
            f"the stored weights of model {model.id} cannot be read: {exc}"
        ) from exc
    return ModelParts(
        model_id=model.id,
        config=config,
        layers=layers,
        input_scaler=Scaler.from_json(model.scalers.get("inputs")),
        target_scaler=Scaler.from_json(model.scalers.get("targets")),
        classes=model.classes,
        feature_names=model.feature_names,
    )


def export_metadata(parts: ModelParts, fmt: ExportFormat) -> dict[str, Any]:
    """What a user of the file needs besides the file: its interface, in words and numbers."""
    n_outputs = len(parts.classes) if parts.classes is not None else parts.config.n_outputs
    return {
        "format_version": FORMAT_VERSION,
        "format": fmt,
        "model_id": parts.model_id,
        "task": "classification" if parts.classes is not None else "regression",
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": [-1, parts.config.n_inputs],
            "feature_names": parts.feature_names,
        },
        "output": {"name": parts.output_name, "dtype": "float32", "shape": [-1, n_outputs]},
        "classes": parts.classes,
        "scaling": SCALING[fmt],
        "architecture": parts.config.to_dict(),
        "service_version": __version__,
    }


def export_model(model: Model, weights: bytes, fmt: ExportFormat) -> ExportedModel:
    """The model as a file in `fmt` (blocking: run it off the event loop)."""
    parts = model_parts(model, weights)
    metadata = export_metadata(parts, fmt)
    # Imported on first use: the onnx package takes a while to import, and most API processes
    # never export.
    if fmt == "onnx":
        from service.export.onnx_file import onnx_bytes

        return ExportedModel(onnx_bytes(parts, metadata), f"{model.id}.onnx", metadata)
    if fmt == "torchscript":
        from service.export.torchscript_file import torchscript_bytes

        return ExportedModel(torchscript_bytes(parts, metadata), f"{model.id}.pt", metadata)
    from service.export.safetensors_file import safetensors_bytes

    return ExportedModel(safetensors_bytes(parts, metadata), f"{model.id}.safetensors", metadata)
