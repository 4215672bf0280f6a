"""Dynamic micro-batching: concurrent predictions for one model share one forward pass.

No delay is ever added: a request parks its rows and schedules a flush for the event loop's
next turn (`call_soon`). On an idle server that is immediately; under load, every request
whose bytes arrived in the same turn joins the same batch. There is no `max_batch_delay` to
tune. A batch that fails as a whole (say one request's inputs overflow the model) is redone
request by request, so one bad request never fails its neighbours.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from service.inference import Prediction, Predictor, predict
from service.metrics_registry import BATCH_REQUESTS, BATCH_ROWS
from service.tuning import MAX_BATCH_ROWS, MAX_BATCH_WORK


@dataclass
class _Batch:
    predictor: Predictor
    waiting: list[tuple[np.ndarray, asyncio.Future[Prediction]]] = field(default_factory=list)
    rows: int = 0


class MicroBatcher:
    def __init__(self, max_rows: int = MAX_BATCH_ROWS, max_work: int = MAX_BATCH_WORK) -> None:
        self.max_rows = max_rows
        self.max_work = max_work
        self._pending: dict[int, _Batch] = {}

    async def predict(self, predictor: Predictor, inputs: np.ndarray) -> Prediction:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prediction] = loop.create_future()
        key = id(predictor)
        batch = self._pending.get(key)
        if batch is None:
            batch = self._pending[key] = _Batch(predictor)
            loop.call_soon(self._flush, key)
        batch.waiting.append((inputs, future))
        batch.rows += len(inputs)
        if batch.rows >= self.max_rows or batch.rows * predictor.n_parameters >= self.max_work:
            self._flush(key)  # big enough already: do not wait for the turn to end
        return await future

    def _flush(self, key: int) -> None:
        entry = self._pending.pop(key, None)
        if entry is None:
            return
        predictor, waiting = entry.predictor, entry.waiting
        BATCH_REQUESTS.observe(len(waiting))
        BATCH_ROWS.observe(entry.rows)
        if len(waiting) == 1:
            _settle(predictor, *waiting[0])
            return
        try:
            batch = predict(predictor, np.concatenate([rows for rows, _ in waiting]))
        except Exception:  # one request spoiled the batch: answer each on its own
            for rows, future in waiting:
                _settle(predictor, rows, future)
            return
        start = 0
        for rows, future in waiting:
            end = start + len(rows)
            if not future.done():
                future.set_result(batch.slice(start, end))
            start = end


def _settle(predictor: Predictor, rows: np.ndarray, future: asyncio.Future[Prediction]) -> None:
    if future.done():
        return
    try:
        future.set_result(predict(predictor, rows))
    except Exception as exc:  # delivered to the request that caused it
        future.set_exception(exc)
