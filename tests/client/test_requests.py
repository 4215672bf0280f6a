"""What the client sends, checked before anything crosses the network, and when it resends.

The resend tests answer through httpx's MockTransport: the conditions they need (an answer
lost, a database briefly unreachable) cannot be produced on demand by a real service."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from service.client import Client, Job, LossHistory, NotFound, TransportError, Unavailable
from service.client import _operations as ops
from service.client._arrays import PREDICT_CHUNK_BYTES, chunks

X = [[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]


def body(x: Any = X, y: Any = (1.0, 2.0, 3.0), **settings: Any) -> dict[str, Any]:
    return ops.job_body(x, y, **settings)


def test_settings_left_out_are_left_to_the_service() -> None:
    assert body() == {"task": "regression", "data": {"x": X, "y": [1.0, 2.0, 3.0]}}
    chosen = body(hidden_layers=(8, 4), epochs=5, target_scaling="standard", device="cpu")
    assert chosen["model"] == {"hidden_layers": [8, 4]}
    assert chosen["training"] == {"epochs": 5}
    assert chosen["preprocessing"] == {"targets": "standard"}
    assert chosen["resources"] == {"device": "cpu"}


def test_data_goes_as_the_service_takes_it() -> None:
    several = body(y=np.array([[1.0, 0.5], [2.0, 0.5], [3.0, 0.5]]), feature_names=("a", "b"))
    assert several["data"]["y"] == [[1.0, 0.5], [2.0, 0.5], [3.0, 0.5]]
    assert several["data"]["feature_names"] == ["a", "b"]
    labels = body(task="classification", y=np.array(["cat", "dog", "cat"]))
    assert labels["data"]["y"] == ["cat", "dog", "cat"]
    numbered = body(task="classification", y=np.array([3, 1, 3], dtype=np.int32))
    assert numbered["data"]["y"] == [3, 1, 3] and type(numbered["data"]["y"][0]) is int
    stored = body(x=None, y=None, dataset_id="d1")
    assert stored == {"task": "regression", "dataset_id": "d1"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"x": [1.0, 2.0, 3.0]}, "must be 2-D"),
        ({"x": [[1.0, float("nan")], [1.0, 2.0], [0.0, 0.0]]}, "NaN or infinity"),
        ({"y": [1.0, 2.0]}, "x has 3 rows but y has 2"),
        ({"y": [1.0, float("inf"), 2.0]}, "NaN or infinity"),
        ({"x": [["a", "b"]] * 3}, "must hold numbers only"),
        ({"task": "classification", "y": [0.5, 1.5, 0.5]}, "ints or strings"),
        ({"task": "classification", "y": [True, False, True]}, "ints or strings"),
        ({"dataset_id": "d1"}, "not both"),
        ({"x": None}, "needs training data"),
    ],
)
def test_data_the_service_would_refuse_is_refused_here(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        body(**settings)


def test_predict_splits_many_rows_into_requests_of_bounded_size() -> None:
    rows = np.zeros((100_000, 4))
    parts = list(chunks(rows))
    assert sum(len(part) for part in parts) == 100_000 and len(parts) > 1
    assert all(len(str(part.tolist())) < 1.5 * PREDICT_CHUNK_BYTES for part in parts)


def test_a_long_loss_history_is_put_together_from_its_pages() -> None:
    first = {
        "id": "m",
        "status": "running",
        "epochs": [1, 2],
        "train_loss": [0.5, 0.4],
        "val_loss": None,
        "seconds": [0.1, 0.2],
        "next_from_epoch": 3,
    }
    second = {
        "id": "m",
        "status": "succeeded",
        "epochs": [3],
        "train_loss": [0.3],
        "val_loss": [0.35],
        "seconds": [0.3],
        "next_from_epoch": None,
    }
    history = LossHistory.from_pages([first, second])
    assert history.epochs == (1, 2, 3) and history.train_loss == (0.5, 0.4, 0.3)
    assert history.val_loss == (None, None, 0.35) and history.status == "succeeded"
    assert len(history) == 3


JOB = {"id": "j1", "status": "queued", "epoch": 0, "epochs": 5}


def serving(*answers: httpx.Response | Exception) -> tuple[Client, list[httpx.Request]]:
    """A client whose requests get these answers in turn; the requests it sent."""
    sent: list[httpx.Request] = []
    pending = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        outcome = pending.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    client = Client("http://service", retries=2, transport=httpx.MockTransport(handle))
    return client, sent


def unavailable() -> httpx.Response:
    return httpx.Response(
        503, json={"error": "unavailable", "detail": "busy"}, headers={"Retry-After": "0"}
    )


def test_a_read_is_retried_through_a_brief_outage() -> None:
    client, sent = serving(
        httpx.ConnectError("refused"), unavailable(), httpx.Response(200, json=JOB)
    )
    assert client.get_job("j1") == Job.from_json(JOB)
    assert len(sent) == 3


def test_a_submit_is_resent_with_the_same_idempotency_key() -> None:
    client, sent = serving(httpx.ReadTimeout("lost"), httpx.Response(202, json=JOB))
    assert client.submit(X, [1.0, 2.0, 3.0]).id == "j1"
    keys = {request.headers["Idempotency-Key"] for request in sent}
    assert len(sent) == 2 and len(keys) == 1


def test_a_request_that_is_not_safe_to_repeat_is_sent_once() -> None:
    client, sent = serving(unavailable())
    with pytest.raises(Unavailable):
        client.cancel("j1")
    client, sent_twice = serving(httpx.ReadTimeout("lost"))
    with pytest.raises(TransportError, match="no answer from the service"):
        client.cancel("j1")
    assert len(sent) == 1 and len(sent_twice) == 1


def test_retries_give_up_and_client_errors_are_never_retried() -> None:
    client, sent = serving(unavailable(), unavailable(), unavailable())
    with pytest.raises(Unavailable):
        client.get_job("j1")
    assert len(sent) == 3
    client, sent = serving(httpx.Response(404, json={"error": "not_found", "detail": "no"}))
    with pytest.raises(NotFound):
        client.get_job("j1")
    assert len(sent) == 1


def test_ids_are_sent_as_one_path_segment() -> None:
    client, sent = serving(httpx.Response(200, json=JOB))
    client.get_job("../models")
    assert sent[0].url.raw_path == b"/jobs/..%2Fmodels"
