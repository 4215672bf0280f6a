"""`python -m service train|jobs|predict|loss` as a user runs them, against a live service."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import REPO, ServiceProcess, measuring_coverage

pytestmark = pytest.mark.e2e

RNG = np.random.default_rng(0)
X = RNG.uniform(-2, 2, size=(80, 2))


def run(
    *args: str, url: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SERVICE_")}
    if url is not None:
        env["SERVICE_URL"] = url
    # Under `make test` the command's lines count towards coverage, as `serve`'s do.
    coverage = ["-m", "coverage", "run", "--parallel-mode"] if measuring_coverage() else []
    return subprocess.run(
        [sys.executable, *coverage, "-m", "service", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    rows = [[a, b, a * b] for a, b in X.tolist()]
    return write_csv(folder / "product.csv", ["x1", "x2", "y"], rows)


@pytest.fixture(scope="module")
def trained(service: ServiceProcess, data: Path) -> subprocess.CompletedProcess[str]:
    return run(
        "train", str(data), "--target", "y", "--hidden", "8", "--epochs", "5",
        "--batch-size", "16", "--name", "cli-product", "--wait", "--url", service.url,
    )  # fmt: skip


@pytest.fixture(scope="module")
def model_id(trained: subprocess.CompletedProcess[str]) -> str:
    assert trained.returncode == 0, trained.stderr
    return trained.stdout.strip()


def test_train_uploads_waits_with_a_progress_bar_and_prints_the_model_id(
    trained: subprocess.CompletedProcess[str], model_id: str
) -> None:
    assert trained.stdout == f"{model_id}\n"  # only the id, for MODEL=$(python -m service ...)
    progress, summary = trained.stderr.splitlines()[-2:]
    assert "uploaded" in trained.stderr
    assert progress.startswith("succeeded") and "5/5 epochs  loss " in progress
    assert summary.startswith(f"job {model_id} succeeded after 5/5 epochs, train loss ")


def test_jobs_lists_the_trained_job(service: ServiceProcess, model_id: str) -> None:
    listed = run("jobs", "--status", "succeeded", url=service.url)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:3] == ["ID", "STATUS", "EPOCH"]
    assert any(row.startswith(model_id) and "5/5" in row and "cli-product" in row for row in rows)


def test_predict_writes_csv_matching_columns_by_name(
    service: ServiceProcess, model_id: str, data: Path, tmp_path: Path
) -> None:
    """The training file itself works as input: its target column is ignored."""
    predicted = run("predict", model_id, str(data), "--url", service.url)
    assert predicted.returncode == 0, predicted.stderr
    rows = read_csv(predicted.stdout)
    assert len(rows) == 80 and list(rows[0]) == ["prediction"]
    assert all(np.isfinite(float(row["prediction"])) for row in rows)
    swapped = write_csv(tmp_path / "swapped.csv", ["x2", "x1"], [[b, a] for a, b in X.tolist()])
    out = tmp_path / "out.csv"
    assert run("predict", model_id, str(swapped), "-o", str(out), url=service.url).returncode == 0
    assert read_csv(out.read_text()) == rows


def test_loss_prints_the_history_and_plots_it(
    service: ServiceProcess, model_id: str, tmp_path: Path
) -> None:
    plot = tmp_path / "loss.png"
    shown = run("loss", model_id, "--plot", str(plot), url=service.url)
    assert shown.returncode == 0, shown.stderr
    rows = read_csv(shown.stdout)
    assert [row["epoch"] for row in rows] == ["1", "2", "3", "4", "5"]
    assert list(rows[0]) == ["epoch", "train_loss", "seconds"]
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_a_classifier_trains_from_data_sent_with_the_job(
    service: ServiceProcess, tmp_path: Path
) -> None:
    labels = np.where(X[:, 0] > 0, "right", "left")
    rows = [[a, b, label] for (a, b), label in zip(X.tolist(), labels, strict=True)]
    data = write_csv(tmp_path / "sides.csv", ["x1", "x2", "side"], rows)
    done = run(
        "train", str(data), "--target", "side", "--task", "classification", "--inline",
        "--hidden", "8", "--epochs", "5", "--batch-size", "16", "--wait", url=service.url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "uploaded" not in done.stderr
    predicted = run("predict", done.stdout.strip(), str(data), url=service.url)
    assert predicted.returncode == 0, predicted.stderr
    first = read_csv(predicted.stdout)[0]
    assert list(first) == ["label", "probability_left", "probability_right"]
    assert first["label"] in ("left", "right")


def test_errors_are_one_line_on_stderr_with_a_failing_status(service: ServiceProcess) -> None:
    missing = run("loss", "no-such-model", url=service.url)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith("error: 404 not_found:")
    bad = run("train", "nowhere.csv", "--target", "y", "--inline", url=service.url)
    assert bad.returncode == 1 and "nowhere.csv" in bad.stderr
    usage = run("train", "data.csv", url=service.url)
    assert usage.returncode == 2 and "--target" in usage.stderr
