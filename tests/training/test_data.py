from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from service.training.data import Scaler, prepare, split_indices
from tests.support import sinc_data


def test_scaler_matches_scikit_learn_standard_scaler() -> None:
    x, _ = sinc_data()
    ours = Scaler.fit(x)
    theirs = StandardScaler().fit(x)
    np.testing.assert_allclose(ours.mean, theirs.mean_, atol=1e-12)
    np.testing.assert_allclose(ours.scale, theirs.scale_, rtol=1e-12)
    np.testing.assert_allclose(ours.transform(x), theirs.transform(x), atol=1e-12)


def test_constant_column_is_left_unscaled() -> None:
    x = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    scaler = Scaler.fit(x)
    assert scaler.scale[1] == 1.0
    assert np.all(np.isfinite(scaler.transform(x)))


def test_scaler_round_trips_through_json() -> None:
    scaler = Scaler.fit(np.array([[1.0, -4.0], [3.0, 8.0]]))
    restored = Scaler.from_json(scaler.to_json())
    assert restored is not None
    values = np.array([[2.0, 0.5]])
    np.testing.assert_array_equal(
        restored.inverse_transform(restored.transform(values)),
        scaler.inverse_transform(scaler.transform(values)),
    )
    assert Scaler.from_json({"kind": "none"}) is None


def test_split_is_seeded_disjoint_and_complete() -> None:
    train_a, val_a = split_indices(100, 0.2, seed=7)
    train_b, val_b = split_indices(100, 0.2, seed=7)
    np.testing.assert_array_equal(train_a, train_b)
    np.testing.assert_array_equal(val_a, val_b)
    assert len(val_a) == 20 and len(train_a) == 80
    assert set(train_a).isdisjoint(val_a)
    assert set(train_a) | set(val_a) == set(range(100))
    assert not np.array_equal(split_indices(100, 0.2, seed=8)[1], val_a)


def test_input_scaler_is_fit_on_the_training_rows_only() -> None:
    x = np.arange(20, dtype=np.float64).reshape(10, 2)
    y = np.zeros((10, 1))
    prepared = prepare(
        x,
        y,
        classification=False,
        scale_inputs=True,
        scale_targets=False,
        validation_fraction=0.3,
        seed=1,
        device=torch.device("cpu"),
    )
    train_rows, _ = split_indices(10, 0.3, seed=1)
    assert prepared.input_scaler is not None
    np.testing.assert_allclose(prepared.input_scaler.mean, x[train_rows].mean(axis=0))
    np.testing.assert_allclose(prepared.input_min, x[train_rows].min(axis=0))
    assert prepared.tensors.x_val is not None and prepared.tensors.x_val.shape == (3, 2)


@pytest.mark.parametrize("scale_targets", [True, False])
def test_target_scaling_is_optional(scale_targets: bool) -> None:
    x, y = sinc_data(10)
    prepared = prepare(
        x,
        y * 100,
        classification=False,
        scale_inputs=False,
        scale_targets=scale_targets,
        validation_fraction=0.0,
        seed=0,
        device=torch.device("cpu"),
    )
    assert (prepared.target_scaler is not None) == scale_targets
    spread = prepared.tensors.y_train.std(correction=0).item()
    assert spread == pytest.approx(1.0, rel=1e-3) if scale_targets else spread > 10
