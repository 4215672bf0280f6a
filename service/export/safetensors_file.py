"""Export as safetensors: the layers as torch's nn.Sequential names them, and the scalers."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from safetensors.numpy import save

from service.export import ModelParts


def safetensors_bytes(parts: ModelParts, metadata: dict[str, Any]) -> bytes:
    tensors: dict[str, np.ndarray] = {}
    for i, (weight, bias) in enumerate(parts.layers):
        tensors[f"{2 * i}.weight"] = weight
        tensors[f"{2 * i}.bias"] = bias
    for prefix, scaler in (("input", parts.input_scaler), ("output", parts.target_scaler)):
        if scaler is not None:  # float64, as the service applies them
            tensors[f"{prefix}.mean"] = scaler.mean.astype(np.float64)
            tensors[f"{prefix}.scale"] = scaler.scale.astype(np.float64)
    result: bytes = save(tensors, metadata={"metadata": json.dumps(metadata)})
    return result
