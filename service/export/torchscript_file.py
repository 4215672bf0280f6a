"""Export as TorchScript: one module that scales, runs the network and unscales (or softmaxes)."""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import torch
import torch.nn as nn

from service.export import ModelParts
from service.training.data import Scaler
from service.training.network import build_network


class ScaledNetwork(nn.Module):
    """Raw inputs in, raw outputs out: the scalers are buffers, saved with the module."""

    input_mean: torch.Tensor
    input_scale: torch.Tensor
    output_mean: torch.Tensor
    output_scale: torch.Tensor

    def __init__(self, parts: ModelParts) -> None:
        super().__init__()
        self.network = build_network(parts.config)
        self.network.load_state_dict(
            {
                name: torch.from_numpy(array)
                for i, (weight, bias) in enumerate(parts.layers)
                for name, array in ((f"{2 * i}.weight", weight), (f"{2 * i}.bias", bias))
            }
        )
        self.register_buffer("input_mean", _buffer(parts.input_scaler, "mean", parts, 0.0))
        self.register_buffer("input_scale", _buffer(parts.input_scaler, "scale", parts, 1.0))
        self.register_buffer("output_mean", _output(parts.target_scaler, "mean", 0.0))
        self.register_buffer("output_scale", _output(parts.target_scaler, "scale", 1.0))
        self.classifier = parts.classes is not None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.network((inputs - self.input_mean) / self.input_scale)
        if self.classifier:
            return torch.softmax(output, dim=1)
        return output * self.output_scale + self.output_mean


def _buffer(scaler: Scaler | None, field: str, parts: ModelParts, identity: float) -> torch.Tensor:
    if scaler is None:
        return torch.full((parts.config.n_inputs,), identity, dtype=torch.float32)
    return torch.from_numpy(getattr(scaler, field).astype("float32"))


def _output(scaler: Scaler | None, field: str, identity: float) -> torch.Tensor:
    if scaler is None:
        return torch.tensor(identity, dtype=torch.float32)
    return torch.from_numpy(getattr(scaler, field).astype("float32"))


def torchscript_bytes(parts: ModelParts, metadata: dict[str, Any]) -> bytes:
    module = ScaledNetwork(parts).eval()
    example = torch.zeros(2, parts.config.n_inputs)
    buffer = io.BytesIO()
    # torch marks TorchScript deprecated in favour of torch.export, but torch.jit.load is still
    # what most users of a .pt file call (and what tests/test_export.py loads it with).
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(module, example)  # type: ignore[no-untyped-call]
        torch.jit.save(traced, buffer, _extra_files={"metadata.json": json.dumps(metadata)})
    return buffer.getvalue()
