"""The seed notebook, end to end through the Python client (service.client).

Submits the notebook's job with its own settings, waits for it, fetches the loss curve,
predicts on the notebook's 100x100 evaluation grid, and saves the notebook's three-panel
figure and the loss curve as PNG files.

    python examples/sinc.py [--url http://127.0.0.1:8000] [--out examples/out]

Needs the `examples` extra (matplotlib, httpx): `pip install -e ".[examples]"`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no screen needed
import matplotlib.pyplot as plt
import numpy as np

from service.client import Client, Job

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sinc_job import grid, sinc_job


def sinc(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    r = np.sqrt(x1**2 + x2**2)
    return np.sin(r) / r


def report_progress() -> Callable[[Job], None]:
    """A progress callback for Client.wait: one line each time the epoch changes."""
    shown: set[int] = set()

    def report(job: Job) -> None:
        if job.epoch not in shown:
            shown.add(job.epoch)
            print(f"  {job.status}: epoch {job.epoch}/{job.epochs}, loss {job.train_loss}")

    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    with Client(args.url) as client:
        started = time.perf_counter()
        job = client.submit_body(sinc_job())
        print(f"submitted job {job.id}")
        job = client.wait(job, timeout=args.timeout, progress=report_progress())
        print(f"job {job.status} in {time.perf_counter() - started:.1f}s")
        if not job.succeeded:
            raise SystemExit(f"job ended {job.status}: {job.error}")
        loss = client.loss(job)
        eval_x = np.asarray(grid(100))
        predicted = client.predict(job, eval_x)

    model_yhat = predicted.predictions[:, 0].reshape(100, 100)
    eval_x1, eval_x2 = eval_x[:, 0].reshape(100, 100), eval_x[:, 1].reshape(100, 100)
    truth = sinc(eval_x1, eval_x2)
    rmse = float(np.sqrt(np.mean((model_yhat - truth) ** 2)))
    print(f"final training loss {loss.train_loss[-1]:.5f}, RMSE on the 100x100 grid {rmse:.4f}")

    plt.figure()
    plt.plot(loss.epochs, loss.train_loss)
    plt.xlabel("epoch")
    plt.ylabel("mean batch loss (MSE)")
    plt.yscale("log")
    plt.title("Loss history")
    plt.savefig(args.out / "loss.png", dpi=100)
    plt.close()

    data_x = np.asarray(grid(50))
    plt.figure(figsize=(10, 4))
    plt.subplot(1, 3, 1)
    plt.scatter(data_x[:, 0], data_x[:, 1], c=sinc(data_x[:, 0], data_x[:, 1]), s=0.5)
    plt.title("Training Data")
    plt.subplot(1, 3, 2)
    plt.contourf(eval_x1, eval_x2, truth, levels=100)
    plt.title(r"Actual Function ($y$)")
    plt.subplot(1, 3, 3)
    plt.contourf(eval_x1, eval_x2, model_yhat, levels=100)
    plt.title(r"Neural Network ($\hat{y}$)")
    plt.tight_layout()
    plt.savefig(args.out / "fit.png", dpi=100)
    plt.close()
    print(f"saved {args.out / 'fit.png'} and {args.out / 'loss.png'}")


if __name__ == "__main__":
    main()
