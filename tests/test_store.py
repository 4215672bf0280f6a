from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from service.storage.store import (
    CorruptBlob,
    Dataset,
    decode_dataset,
    decode_weights,
    encode_dataset,
    encode_weights,
)


def test_weights_round_trip_exactly() -> None:
    state = {"0.weight": torch.randn(80, 2), "0.bias": torch.randn(80)}
    restored = decode_weights(encode_weights(state))
    assert restored.keys() == state.keys()
    for name in state:
        assert torch.equal(restored[name], state[name])


def test_dataset_round_trips_with_class_labels() -> None:
    dataset = Dataset(
        x=np.random.default_rng(0).normal(size=(5, 3)),
        y=np.array([0, 1, 1, 0, 2]),
        classes=["cat", "dog", 7],
    )
    restored = decode_dataset(encode_dataset(dataset))
    np.testing.assert_array_equal(restored.x, dataset.x)
    np.testing.assert_array_equal(restored.y, dataset.y)
    assert restored.classes == ["cat", "dog", 7]
    assert restored.x.dtype == np.float64


class Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, ("raise SystemExit('pickle payload ran')",))


@pytest.mark.parametrize("blob", [pickle.dumps(Boom()), b"", b"\x00" * 16, b"garbage" * 10])
def test_foreign_bytes_are_refused_never_unpickled(blob: bytes) -> None:
    with pytest.raises(CorruptBlob):
        decode_weights(blob)
    with pytest.raises(CorruptBlob):
        decode_dataset(blob)
