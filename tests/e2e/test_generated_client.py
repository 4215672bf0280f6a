"""A client generated from the live /openapi.json with openapi-python-client, as an integrating
service would make one, drives a job through the real service: submit, wait, predict, loss."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.support import ServiceProcess

pytestmark = pytest.mark.e2e

PACKAGE = "training_client"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
# No post hooks (formatters): the test needs the code, not its looks. The generator knows no
# CSV, .npz, image, event-stream or Prometheus text type: those bodies travel as raw bytes, so
# every operation is generated.
CONFIG = f"""\
project_name_override: training-client
package_name_override: {PACKAGE}
post_hooks: []
content_type_overrides:
  text/csv: application/octet-stream
  application/x-npz: application/octet-stream
  image/png: application/octet-stream
  image/svg+xml: application/octet-stream
  text/event-stream: application/octet-stream
  text/plain: application/octet-stream
"""
GRID = [[i / 10] for i in range(-20, 21)]
JOB = {
    "name": "generated-client",
    "data": {"x": GRID, "y": [[0.5 * x[0] ** 2] for x in GRID]},
    "model": {"hidden_layers": [16], "output_activation": None},
    "training": {"epochs": 30, "batch_size": 8, "validation_fraction": 0.25},
    "preprocessing": {"targets": "standard"},
}
ENDED = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def generated(
    service: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModuleType]:
    """The generated package, importable for this module's tests."""
    folder = tmp_path_factory.mktemp("generated")
    document = httpx.get(f"{service.url}/openapi.json").raise_for_status()
    (folder / "openapi.json").write_bytes(document.content)
    (folder / "config.yml").write_text(CONFIG)
    result = subprocess.run(
        [
            *(str(GENERATOR), "generate", "--path", "openapi.json", "--config", "config.yml"),
            *("--meta", "none", "--output-path", PACKAGE),
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # A warning means some operation or body was skipped: every one must be generated.
    assert "Warning" not in output and "WARNING" not in output, output
    import_unset_where_used(folder / PACKAGE)
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def import_unset_where_used(package: Path) -> None:
    """Work around openapi-python-client issue #1451 (open in 0.29): a body that comes in several
    media types (v2 infer: JSON or binary tensors; MLflow: JSON or CSV) is typed `... | Unset`
    without `Unset` being imported. What a user of the generated client patches likewise."""
    for module in package.rglob("*.py"):
        code = module.read_text()
        if "| Unset" in code and "import Response, UNSET\n" in code:
            fixed = code.replace("import Response, UNSET\n", "import Response, UNSET, Unset\n")
            module.write_text(fixed)


def part(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_a_generated_client_trains_a_job_and_predicts(
    generated: ModuleType, service: ServiceProcess
) -> None:
    models = part("models")
    with generated.Client(base_url=service.url, raise_on_unexpected_status=True) as client:
        submitted = part("api.jobs.submit_job").sync_detailed(
            client=client, body=models.JobCreate.from_dict(JOB)
        )
        assert submitted.status_code == 202, submitted.content
        job_id = submitted.parsed.id

        get_job = part("api.jobs.get_job")
        deadline = time.monotonic() + 60
        job = get_job.sync(job_id, client=client)
        while job.status.value not in ENDED and time.monotonic() < deadline:
            time.sleep(0.1)
            job = get_job.sync(job_id, client=client)
        assert job.status == models.JobStatus.SUCCEEDED, service.log_tail()
        assert (job.epoch, job.epochs, job.name) == (30, 30, "generated-client")

        inputs = [[-1.0], [0.0], [1.5]]
        prediction = part("api.models.predict").sync(
            job_id, client=client, body=models.PredictRequest(inputs=inputs)
        )
        assert isinstance(prediction, models.PredictResponse)
        # The same numbers as a plain HTTP request gets.
        raw = httpx.post(f"{service.url}/models/{job_id}/predict", json={"inputs": inputs})
        assert prediction.predictions == raw.json()["predictions"]

        loss = part("api.models.get_loss").sync(job_id, client=client)
        assert loss.epochs == list(range(1, 31))
        assert len(loss.train_loss) == len(loss.val_loss) == 30

        listed = part("api.models.list_models").sync(
            client=client, sort=models.ListModelsSort.VAL_R2_DESC
        )
        assert [model.id for model in listed.models] == [job_id]
        assert listed.models[0].metrics["val_r2"] is not None


def test_a_generated_client_speaks_the_open_inference_protocol(
    generated: ModuleType, service: ServiceProcess
) -> None:
    models = part("models")
    with httpx.Client(base_url=service.url) as api:
        job_id = api.post("/jobs", json=JOB).json()["id"]
    with generated.Client(base_url=service.url, raise_on_unexpected_status=True) as client:
        deadline = time.monotonic() + 60
        while part("api.jobs.get_job").sync(job_id, client=client).status.value not in ENDED:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        metadata = part("api.open_inference_protocol_v2.v2_model_metadata").sync(
            job_id, client=client
        )
        assert [(t.name, t.shape) for t in metadata.inputs] == [("inputs", [-1, 1])]
        request = models.V2InferenceRequest.from_dict(
            {
                "inputs": [
                    {"name": "inputs", "shape": [2, 1], "datatype": "FP64", "data": [0.0, 1.0]}
                ]
            }
        )
        answer = part("api.open_inference_protocol_v2.v2_infer").sync(
            job_id, client=client, body=request
        )
        assert isinstance(answer, models.V2InferenceResponse)
        (output,) = answer.outputs
        assert (output.name, output.datatype.value, output.shape) == ("predictions", "FP32", [2, 1])
        assert len(output.data) == 2
