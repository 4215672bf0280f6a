"""The docs run as written: the README's tour, examples/sinc.py and the OpenAPI examples."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import REPO, ServiceProcess, wait_for_job

pytestmark = pytest.mark.e2e


def readme_tour() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## A 60-second tour", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_tour_runs_as_written(service: ServiceProcess, tmp_path: Path) -> None:
    script = readme_tour()
    assert "API=http://127.0.0.1:8000" in script
    script = script.replace("API=http://127.0.0.1:8000", f"API={service.url}")
    # The tour runs from the repository root: give it one whose files are the real ones.
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "examples").symlink_to(REPO / "examples")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr + service.log_tail()
    assert '"train_loss"' in result.stdout
    assert '{"predictions":[[' in result.stdout


def test_the_sinc_example_reproduces_the_notebook(service: ServiceProcess, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "sinc.py"),
            "--url",
            service.url,
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    loss, rmse = map(
        float,
        re.findall(
            r"final training loss ([\d.]+), RMSE on the 100x100 grid ([\d.]+)", result.stdout
        )[0],
    )
    assert loss <= 0.005 and rmse <= 0.06
    for name in ("fit.png", "loss.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")


def test_openapi_examples_run_as_they_are(api: httpx.Client) -> None:
    openapi = api.get("/openapi.json").json()
    job_example = openapi["components"]["schemas"]["JobCreate"]["examples"][0]
    predict_body = openapi["paths"]["/models/{model_id}/predict"]["post"]["requestBody"]
    predict_example = predict_body["content"]["application/json"]["schema"]["examples"][0]
    response = api.post("/jobs", json=job_example)
    assert response.status_code == 202, response.text
    job = wait_for_job(api, response.json()["id"])
    assert job["status"] == "succeeded"
    prediction = api.post(f"/models/{job['id']}/predict", json=predict_example)
    assert prediction.status_code == 200, prediction.text
    assert len(prediction.json()["predictions"]) == len(predict_example["inputs"])
    assert api.get("/docs").status_code == 200


def section_scripts(heading: str) -> list[str]:
    """Every bash block of a README section (up to the next `## ` heading)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def test_the_protocol_examples_run_as_written(
    service: ServiceProcess, api: httpx.Client, tmp_path: Path
) -> None:
    """The README's Open Inference Protocol, MLflow and export examples, against a model
    trained from columns named as they name them."""
    x = [[a / 4, b / 4] for a in range(-8, 9) for b in range(-8, 9)]
    body = {
        "data": {"x": x, "y": [[a * b / 16] for a, b in x], "feature_names": ["x1", "x2"]},
        "training": {"epochs": 5, "batch_size": 64},
    }
    response = api.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert wait_for_job(api, job_id)["status"] == "succeeded"
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    scripts = section_scripts("Standard protocols and exports")
    assert len(scripts) == 3
    outputs = []
    for script in scripts:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"], "API": service.url, "JOB": job_id},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr + service.log_tail()
        outputs.append(result.stdout)
    v2, mlflow, export = outputs
    assert '"outputs":[{"name":"predictions"' in v2 and v2.count("[[") >= 1
    assert mlflow.count('{"predictions":[') == 2
    assert (tmp_path / "model.onnx").exists() and "tensor(" in export


def section_blocks(heading: str, language: str) -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


@pytest.mark.parametrize("heading", ["Datasets", "Python client"])
def test_the_dataset_and_client_examples_run_as_written(
    service: ServiceProcess, tmp_path: Path, heading: str
) -> None:
    """Every bash and Python block of the section, in order, against the live service (the
    blocks say http://127.0.0.1:8000; they get this service's address instead)."""
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    blocks = [("bash", b) for b in section_blocks(heading, "bash")]
    blocks += [("python", b) for b in section_blocks(heading, "python")]
    assert blocks, heading
    env = {**os.environ, "SERVICE_URL": service.url}
    for language, block in blocks:
        script = block.replace("http://127.0.0.1:8000", service.url)
        command = (
            ["bash", "-euo", "pipefail", "-c", script]
            if language == "bash"
            else [sys.executable, "-c", script]
        )
        result = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, (block, result.stdout, result.stderr, service.log_tail())


def test_the_sweep_example_runs_as_written(service: ServiceProcess, tmp_path: Path) -> None:
    """The README's sweep: 16 trials of the notebook's job, one stack, the best one named."""
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "examples").symlink_to(REPO / "examples")
    (script,) = section_scripts("Sweeps")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace("http://127.0.0.1:8000", service.url)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr + service.log_tail()
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 17 and all("succeeded" in line for line in lines[:16]), result.stdout
    assert lines[16].startswith("best: {'training.learning_rate'") and "by train_loss" in lines[16]
