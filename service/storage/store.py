"""Stored bytes <-> tensors and arrays. safetensors only: reading never runs code.

This module deals in tensors, arrays and JSON; it builds no network (that is inference's job),
and it does not care where the bytes are kept (the database, or a blob store:
service/storage/blobs.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

# Defined beside the blob stores, whose missing files are corrupt blobs too; re-exported here,
# where the decoders that raise it live.
from service.storage.blobs import CorruptBlob as CorruptBlob


def encode_weights(state: dict[str, torch.Tensor]) -> bytes:
    return save_tensors({name: t.detach().cpu().contiguous() for name, t in state.items()})


def decode_weights(blob: bytes) -> dict[str, torch.Tensor]:
    try:
        return load_tensors(blob)
    except (SafetensorError, ValueError, OSError) as exc:
        raise CorruptBlob(f"stored weights are not valid safetensors: {exc}") from exc


@dataclass(frozen=True)
class Dataset:
    """Training data as stored with its job. Classification targets are class indices; the
    feature names, when the data came with them, name the columns of x."""

    x: np.ndarray
    y: np.ndarray
    classes: list[Any] | None = None
    feature_names: list[str] | None = None


def encode_dataset(dataset: Dataset) -> bytes:
    metadata = {
        key: json.dumps(value)
        for key, value in (("classes", dataset.classes), ("feature_names", dataset.feature_names))
        if value is not None
    }
    return save_arrays({"x": dataset.x, "y": dataset.y}, metadata=metadata or None)


def decode_dataset(blob: bytes) -> Dataset:
    arrays, metadata = decode_arrays(blob, "stored training data")
    classes = json.loads(metadata["classes"]) if "classes" in metadata else None
    names = json.loads(metadata["feature_names"]) if "feature_names" in metadata else None
    return Dataset(x=arrays["x"], y=arrays["y"], classes=classes, feature_names=names)


def decode_arrays(blob: bytes, what: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays and string metadata of safetensors bytes; CorruptBlob naming `what` when
    they are not valid."""
    try:
        return load_arrays(blob), _read_metadata(blob)
    except (SafetensorError, ValueError, OSError) as exc:
        raise CorruptBlob(f"{what} is not valid safetensors: {exc}") from exc


def _read_metadata(blob: bytes) -> dict[str, str]:
    # The safetensors header: an 8-byte little-endian length, then JSON.
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    metadata: dict[str, str] = header.get("__metadata__") or {}
    return metadata


def encode_checkpoint(tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> bytes:
    return save_tensors(
        {name: t.detach().cpu().contiguous() for name, t in tensors.items()},
        metadata={"checkpoint": json.dumps(metadata)},
    )


def decode_checkpoint(blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        tensors = load_tensors(blob)
        metadata = json.loads(_read_metadata(blob)["checkpoint"])
    except (SafetensorError, ValueError, OSError, KeyError) as exc:
        raise CorruptBlob(f"stored checkpoint is not valid: {exc}") from exc
    return tensors, metadata
