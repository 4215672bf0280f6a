"""One client must not be able to exhaust the API for everyone, or learn what is not its own.

Each test rebuilds a finding of an attack on the running service (API keys set) against a real
`serve` process: authentication before the body, one Authorization header, the same answer for
"not yours" and "no such id", booleans that are not numbers, loss histories in pages, jobs and
predictions bounded before any work, and a client leaving mid-upload costing one log line.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.storage.migrate import upgrade
from tests.support import ServiceProcess, submit_job, wait_for_job

pytestmark = pytest.mark.e2e

ALICE, BOB = "alice-key", "bob-key"
LONG_LABEL = "x" * 150
# Small bounds, so the tests stay small; the defaults are larger (README, Configuration).
LIMITS = {
    "SERVICE_API_KEYS": f"{ALICE},{BOB}",
    "SERVICE_MAX_PREDICT_WORK": "5000",
    "SERVICE_MAX_RESPONSE_BYTES": "2048",
}
SMALL_JOB: dict[str, Any] = {
    "data": {"x": [[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 3.0]], "y": [0.0, 0.5, 0.2, 0.9]},
    "model": {"hidden_layers": [16]},  # 65 weights
    "training": {"epochs": 30, "batch_size": 2},
}
LABELLED_JOB: dict[str, Any] = {
    "task": "classification",
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": ["a", LONG_LABEL, "a", LONG_LABEL]},
    "model": {"hidden_layers": [4]},
    "training": {"epochs": 3, "batch_size": 2},
}


class Service:
    def __init__(self, process: ServiceProcess) -> None:
        self.process = process
        self.alice = httpx.Client(
            base_url=process.url, headers={"Authorization": f"Bearer {ALICE}"}, timeout=30
        )
        self.bob = httpx.Client(
            base_url=process.url, headers={"Authorization": f"Bearer {BOB}"}, timeout=30
        )
        self.model = ""
        self.labelled_model = ""

    def train_models(self) -> None:
        self.model = self.trained(SMALL_JOB)
        self.labelled_model = self.trained(LABELLED_JOB)

    def trained(self, body: dict[str, Any]) -> str:
        job_id = submit_job(self.alice, body)
        assert wait_for_job(self.alice, job_id)["status"] == "succeeded"
        return job_id

    def log(self) -> str:
        return self.process.log_tail(100_000)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("hostile")
    database_url = f"sqlite:///{folder / 'service.db'}"
    upgrade(database_url)
    process = ServiceProcess(
        database_url, "serve", log_path=folder / "serve.log", env=LIMITS
    ).start()
    service = Service(process)
    try:
        service.train_models()
        yield service
    finally:
        service.alice.close()
        service.bob.close()
        process.stop()


def raw_request(port: int, head: str, body: bytes = b"", wait: float = 5.0) -> tuple[int, bytes]:
    """Send `head` (and `body`) on a fresh socket; the status and body of the answer, read
    as soon as it comes, whether or not the request's body was ever sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as connection:
        connection.sendall(head.encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def test_a_request_without_a_key_is_refused_before_its_body_is_read(service: Service) -> None:
    for path in ("/jobs", f"/models/{service.model}/predict"):
        head = (
            f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            "Content-Length: 8000000\r\n\r\n"
        )
        started = time.monotonic()
        status, body = raw_request(service.process.port, head)  # not a byte of the 8 MB sent
        assert status == 401, body
        assert b'"unauthorized"' in body
        assert time.monotonic() - started < 2.0


def test_two_authorization_headers_are_refused_everywhere(service: Service) -> None:
    twice = [("Authorization", f"Bearer {BOB}"), ("Authorization", f"Bearer {ALICE}")]
    url = service.process.url
    for method, path, body in [
        ("GET", "/jobs", None),
        ("POST", f"/models/{service.model}/predict", {"inputs": [[1.0, 2.0]]}),
        ("GET", f"/models/{service.model}/loss", None),
        ("GET", "/healthz", None),
    ]:
        response = httpx.request(method, url + path, headers=twice, json=body)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"] == "bad_request"


def test_another_key_s_model_and_an_unknown_id_get_the_same_answer(service: Service) -> None:
    unknown = str(uuid.uuid4())
    # Alice's model is in the API's cache: that must not make Bob's answer differ.
    assert service.alice.post(
        f"/models/{service.model}/predict", json={"inputs": [[1.0, 2.0]]}
    ).is_success
    for method, path, body in [
        ("POST", "/models/{}/predict", {"inputs": [[1.0, 2.0]]}),
        ("GET", "/models/{}", None),
        ("GET", "/models/{}/loss", None),
        ("GET", "/jobs/{}", None),
    ]:
        theirs = service.bob.request(method, path.format(service.model), json=body)
        nobody_s = service.bob.request(method, path.format(unknown), json=body)
        assert theirs.status_code == nobody_s.status_code == 404
        assert theirs.text.replace(service.model, "ID") == nobody_s.text.replace(unknown, "ID")


def test_booleans_are_not_numbers(service: Service) -> None:
    in_x = {
        **SMALL_JOB,
        "data": {**SMALL_JOB["data"], "x": [[True, 1.0], *SMALL_JOB["data"]["x"][1:]]},
    }
    in_y = {**SMALL_JOB, "data": {**SMALL_JOB["data"], "y": [True, False, 0.2, 0.9]}}
    for body in (in_x, in_y):
        response = service.alice.post("/jobs", json=body)
        assert response.status_code == 422, response.text
    for inputs in ([[True, 1.0]], [[1.0, False]], [[True, False]]):
        response = service.alice.post(f"/models/{service.model}/predict", json={"inputs": inputs})
        assert response.status_code == 422, response.text
        assert "number" in response.json()["detail"]


def test_a_long_loss_history_comes_in_pages(service: Service) -> None:
    whole = service.alice.get(f"/models/{service.model}/loss").json()
    assert whole["epochs"] == list(range(1, 31)) and whole["next_from_epoch"] is None
    epochs: list[int] = []
    losses: list[float] = []
    next_from: int | None = 1
    while next_from is not None:
        page = service.alice.get(
            f"/models/{service.model}/loss", params={"from_epoch": next_from, "limit": 7}
        ).json()
        assert len(page["epochs"]) <= 7
        epochs += page["epochs"]
        losses += page["train_loss"]
        next_from = page["next_from_epoch"]
    assert epochs == whole["epochs"] and losses == whole["train_loss"]


def test_the_schema_declares_the_bearer_scheme(service: Service) -> None:
    schema = httpx.get(f"{service.process.url}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/jobs"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]


def bounded_job(**changes: Any) -> dict[str, Any]:
    return {**SMALL_JOB, **changes}


def test_a_job_too_big_to_train_or_store_is_refused_when_submitted(service: Service) -> None:
    # The attack's shape: [4096, 4096] with a batch as large as the data, about 20 GB of
    # activations; and sixteen 4096-wide layers, about 1 GB of weights.
    n_rows = 200_000
    wide_batch = {
        "data": {"x": [[0.0]] * n_rows, "y": [0.0] * n_rows},
        "model": {"hidden_layers": [4096, 4096]},
        "training": {"epochs": 1, "batch_size": n_rows},
    }
    deep = bounded_job(model={"hidden_layers": [4096] * 16})
    for body, words in [(wide_batch, "of memory"), (deep, "trained weights")]:
        response = service.alice.post("/jobs", json=body)
        assert response.status_code == 422, response.text
        assert words in response.json()["detail"]
    listed = service.alice.get("/jobs", params={"limit": 500}).json()["jobs"]
    assert all(job["spec"]["model"]["hidden_layers"][0] != 4096 for job in listed)


def test_class_labels_are_bounded(service: Service) -> None:
    huge = {**LABELLED_JOB, "data": {"x": [[0.0], [1.0]], "y": ["a" * 2**20, "b" * 2**20]}}
    response = service.alice.post("/jobs", json=huge)
    assert response.status_code == 422
    assert "class label" in response.json()["detail"]
    beyond_int64 = {**LABELLED_JOB, "data": {"x": [[0.0], [1.0]], "y": [2**70, 1]}}
    assert service.alice.post("/jobs", json=beyond_int64).status_code == 422


def test_a_predict_is_bounded_by_its_work_and_by_its_answer_s_size(service: Service) -> None:
    predict = f"/models/{service.model}/predict"
    assert service.alice.post(predict, json={"inputs": [[1.0, 2.0]] * 50}).status_code == 200
    too_much_work = service.alice.post(predict, json={"inputs": [[1.0, 2.0]] * 80})
    assert too_much_work.status_code == 422
    assert "rows x weights" in too_much_work.json()["detail"]
    # Ten 150-character labels with their probabilities pass 2,048 bytes.
    labelled = f"/models/{service.labelled_model}/predict"
    assert service.alice.post(labelled, json={"inputs": [[1.0]] * 5}).status_code == 200
    too_long = service.alice.post(labelled, json={"inputs": [[1.0]] * 10})
    assert too_long.status_code == 422
    assert "bytes" in too_long.json()["detail"]


def test_a_client_leaving_mid_upload_costs_one_quiet_log_line(service: Service) -> None:
    head = (
        f"POST /models/{service.model}/predict HTTP/1.1\r\nHost: t\r\n"
        f"Authorization: Bearer {ALICE}\r\nContent-Type: application/json\r\n"
        "Content-Length: 4000000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", service.process.port)) as connection:
        connection.sendall(head.encode() + b'{"inputs": [' + b" " * 500_000)
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while "client left" not in service.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = service.log()
    assert log.count("client left") == 1
    assert "Traceback" not in log and "unhandled" not in log


def test_the_api_is_still_healthy(service: Service, tmp_path: Path) -> None:
    assert httpx.get(f"{service.process.url}/healthz").status_code == 200
    assert "Traceback" not in service.log()


def start_with_wide_model(folder: Path, timeout_seconds: str) -> tuple[ServiceProcess, str]:
    """A service with the given predict deadline and a trained model of a million weights."""
    database_url = f"sqlite:///{folder / 'service.db'}"
    upgrade(database_url)
    env = {
        "SERVICE_PREDICT_TIMEOUT_SECONDS": timeout_seconds,
        "SERVICE_MAX_PREDICT_WORK": str(10**12),
    }
    process = ServiceProcess(database_url, "serve", log_path=folder / "serve.log", env=env)
    process.start()
    try:
        with httpx.Client(base_url=process.url, timeout=30) as client:
            job = bounded_job(model={"hidden_layers": [1000, 1000]}, training={"epochs": 1})
            job_id = submit_job(client, job)
            assert wait_for_job(client, job_id)["status"] == "succeeded"
    except BaseException:
        process.stop()
        raise
    return process, job_id


def big_predict(rows: int) -> dict[str, Any]:
    """Rows for the million-weight model: about 10^6 multiply-adds each, in chunks of ~100."""
    return {"inputs": [[1.0, 2.0]] * rows}


def test_a_predict_past_its_deadline_stops_with_503(tmp_path: Path) -> None:
    # A millisecond: the first chunk alone (~10^8 multiply-adds) outlasts it.
    process, model_id = start_with_wide_model(tmp_path, "0.001")
    try:
        predict = f"{process.url}/models/{model_id}/predict"
        response = httpx.post(predict, json=big_predict(5_000), timeout=30)
        assert response.status_code == 503, response.status_code
        assert response.json()["error"] == "overloaded" and response.headers["Retry-After"]
        # Small predictions run inline, where no deadline applies.
        assert httpx.post(predict, json={"inputs": [[1.0, 2.0]]}).status_code == 200
    finally:
        process.stop()


def test_a_predict_whose_client_left_stops_its_work(tmp_path: Path) -> None:
    process, model_id = start_with_wide_model(tmp_path, "30")
    try:
        # 60,000 rows: about 6 x 10^10 multiply-adds, far longer than the client waits.
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{process.url}/models/{model_id}/predict", json=big_predict(60_000), timeout=0.2
            )
        deadline = time.monotonic() + 10
        while "the client left" not in process.log_tail(10_000) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "the client left; its work stopped" in process.log_tail(10_000)
    finally:
        process.stop()
