"""Micro-batched predictions equal one-by-one predictions, and one bad request spoils nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
import torch

from service.api.micro_batch import MicroBatcher
from service.errors import InvalidInput
from service.inference import Prediction, Predictor, predict
from service.training.data import Scaler
from service.training.network import NetworkConfig, build_network
from service.training.numpy_network import NumpyNetwork


def predictor(classes: list[str] | None = None) -> Predictor:
    config = NetworkConfig(
        2, (16,), len(classes) if classes else 1, "tanh", None if classes else "tanh"
    )
    torch.manual_seed(0)
    return Predictor(
        model_id="m",
        owner="",
        task="classification" if classes else "regression",
        n_features=2,
        n_outputs=config.n_outputs,
        n_parameters=config.n_parameters,
        forward=NumpyNetwork(config, build_network(config).state_dict()),
        input_scaler=Scaler(mean=np.array([0.5, -0.5]), scale=np.array([2.0, 3.0])),
        target_scaler=None if classes else Scaler(mean=np.array([10.0]), scale=np.array([4.0])),
        classes=classes,
    )


def requests(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=(int(rng.integers(1, 4)), 2)) for _ in range(n)]


async def concurrently(
    batcher: MicroBatcher, model: Predictor, inputs: list[np.ndarray]
) -> list[Prediction | BaseException]:
    return await asyncio.gather(
        *(batcher.predict(model, rows) for rows in inputs), return_exceptions=True
    )


@pytest.mark.parametrize("classes", [None, ["a", "b", "c"]])
def test_concurrent_requests_get_exactly_their_own_rows(classes: list[str] | None) -> None:
    model, inputs = predictor(classes), requests(50)
    results = asyncio.run(concurrently(MicroBatcher(), model, inputs))
    for rows, result in zip(inputs, results, strict=True):
        assert isinstance(result, Prediction)
        alone = predict(model, rows)
        if classes:
            assert result.labels == alone.labels
            np.testing.assert_array_equal(result.probabilities, alone.probabilities)
        else:
            np.testing.assert_array_equal(result.values, alone.values)


def counting(model: Predictor, **changes: Any) -> tuple[Predictor, list[int]]:
    """The model (with `changes`), recording the rows of each forward pass it makes."""
    calls: list[int] = []
    forward = model.forward

    def counted(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return forward(x)

    return Predictor(**{**model.__dict__, "forward": counted, **changes}), calls


def test_concurrent_requests_share_forward_passes() -> None:
    counted, calls = counting(predictor())
    asyncio.run(concurrently(MicroBatcher(), counted, requests(40)))
    assert len(calls) == 1  # all 40 arrived in one turn of the loop


def test_a_lone_request_is_answered_without_waiting_for_company() -> None:
    # On a loop whose clock never moves no timer ever fires, so a batcher that held a lone
    # request back for company (any delay at all) would leave it unanswered.
    loop = asyncio.new_event_loop()
    frozen = loop.time()
    loop.time = lambda: frozen  # type: ignore[method-assign]

    async def one() -> Prediction | None:
        task = asyncio.ensure_future(MicroBatcher().predict(predictor(), np.zeros((1, 2))))
        for _ in range(10):  # the flush and the wake-up take a turn of the loop each
            await asyncio.sleep(0)
            if task.done():
                return task.result()
        task.cancel()
        return None

    try:
        answer = loop.run_until_complete(one())
    finally:
        loop.close()
    assert isinstance(answer, Prediction)


def test_a_bad_request_fails_alone() -> None:
    model = predictor()
    inputs = [*requests(5), np.zeros((1, 3)), *requests(5)]
    results = asyncio.run(concurrently(MicroBatcher(), model, inputs))
    assert isinstance(results[5], InvalidInput)
    assert all(isinstance(r, Prediction) for i, r in enumerate(results) if i != 5)


def test_a_full_batch_is_flushed_at_once() -> None:
    model, inputs = predictor(), [np.zeros((3, 2))] * 10
    results = asyncio.run(concurrently(MicroBatcher(max_rows=6), model, inputs))
    assert all(
        isinstance(r, Prediction) and r.values is not None and len(r.values) == 3 for r in results
    )
