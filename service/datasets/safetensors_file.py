"""A safetensors file written piece by piece, so a dataset never has to sit in memory whole.

The format is an 8-byte little-endian header length, a JSON header (each tensor's dtype, shape
and byte range, and string metadata), then the tensors' bytes back to back. The safetensors
library reads what this writes; only the library's writer needs every tensor in memory at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

# The dtypes datasets are stored in, by their safetensors names. Little-endian, as the format is.
DTYPES = {np.dtype("<f8"): "F64", np.dtype("<i8"): "I64"}
# The header is padded with spaces so the data starts 8-byte aligned, as the library's own files.
ALIGNMENT = 8


@dataclass(frozen=True)
class TensorSource:
    """One tensor to write: its name, dtype and shape, and how to write its bytes to a file."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    write: Callable[[BinaryIO], None]

    @property
    def n_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def array_source(name: str, values: np.ndarray) -> TensorSource:
    """A tensor already in memory (little-endian and contiguous once written)."""
    dtype = values.dtype.newbyteorder("<")
    contiguous = np.ascontiguousarray(values, dtype=dtype)

    def write(out: BinaryIO) -> None:
        out.write(contiguous.data)

    return TensorSource(name, dtype, contiguous.shape, write)


def write_safetensors(out: BinaryIO, tensors: list[TensorSource], metadata: dict[str, str]) -> int:
    """Write the tensors to `out` in the safetensors format; the bytes written."""
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for tensor in tensors:
        end = offset + tensor.n_bytes
        header[tensor.name] = {
            "dtype": DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-(8 + len(encoded)) % ALIGNMENT)
    start = out.tell()
    out.write(len(encoded).to_bytes(8, "little"))
    out.write(encoded)
    data_start = out.tell()
    for tensor in tensors:
        tensor.write(out)
    written = out.tell() - data_start
    if written != offset:  # a writer that wrote more or less would corrupt every later tensor
        raise AssertionError(f"tensors wrote {written} bytes, their shapes say {offset}")
    return out.tell() - start
