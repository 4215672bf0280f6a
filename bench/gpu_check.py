"""`python -m bench.gpu_check [--out DIR]`: a mixed CPU/GPU fleet, checked on a machine with CUDA.

What `make test` cannot run on a CPU-only machine, in one short script (about two minutes):

1. the notebook's job trained by the trainer itself on the numpy engine (CPU), autograd on the
   CPU and autograd on CUDA: time, final loss, and how far the histories drift apart;
2. per-epoch time on 1M rows for a small (2->80->1, batch 200) and a wide (2->512->512->1,
   batch 4096) network on each device, and where placement puts each;
3. CUDA graphs (service/training/cuda_graphs.py), eager against captured: the notebook job,
   16 of its trials stacked against one, and one epoch of 1M rows (`--graphs`: only this);
   through the processes of part 4, a 16-trial sweep on the CUDA-only worker against one trial;
4. through real processes (an API, workers started and killed): the notebook job on a GPU worker
   (SERVICE_DEVICE=auto) against a CPU worker and a CUDA-only worker, a wide job on the GPU
   worker, and hand-overs CPU -> CUDA and CUDA -> CPU after SIGKILL.

Prints a table and writes it to DIR/gpu_check.md (rows as JSON in gpu_check.json, the
processes' logs in gpu_check_logs.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from bench.jobs import notebook_job, sinc_points
from bench.procs import Managed, free_port, wait_http
from bench.settings import OUT_DIR, REPO
from service.placement import JobShape, place
from service.training.cuda_graphs import CudaGraphs
from service.training.data import TrainingTensors, epoch_order, prepare
from service.training.engine import TrainingConfig
from service.training.network import NetworkConfig, build_network
from service.training.numpy_engine import supports as numpy_supports
from service.training.profile import WorkerProfile, profile_worker
from service.training.stacked_torch import StackedTorchEngine
from service.training.trainer import EngineChoice, TrainingResult, train

CPU = torch.device("cpu")
REPS = 5
# --rehearse: the CPU stands in for the GPU, to try this script's plumbing on any machine.
REHEARSAL = False
SMALL = NetworkConfig(2, (80,), 1, "tanh", "tanh")
WIDE = NetworkConfig(2, (512, 512), 1, "tanh", None)
FLEET_ENV = {
    "SERVICE_HEARTBEAT_SECONDS": "0.5",
    "SERVICE_LEASE_SECONDS": "3",
    "SERVICE_SWEEP_SECONDS": "0.5",
    "SERVICE_LOSS_FLUSH_SECONDS": "0.2",
    "SERVICE_CHECKPOINT_SECONDS": "0.2",
    "SERVICE_MAX_BODY_BYTES": str(64 * 1024 * 1024),
}


@dataclass
class Row:
    what: str
    result: str
    note: str = ""


def gpu() -> torch.device:
    return CPU if REHEARSAL else torch.device("cuda", 0)


def regression_tensors(x: np.ndarray, y: np.ndarray, device: torch.device) -> TrainingTensors:
    """A regression job's data as a worker prepares it: inputs scaled, no validation split."""
    return prepare(
        x,
        y,
        classification=False,
        scale_inputs=True,
        scale_targets=False,
        validation_fraction=0.0,
        seed=0,
        device=device,
    ).tensors


def notebook_tensors(device: torch.device) -> TrainingTensors:
    job = notebook_job()
    return regression_tensors(np.asarray(job["data"]["x"]), np.asarray(job["data"]["y"]), device)


def train_on(
    device: torch.device,
    engine: EngineChoice,
    network: NetworkConfig,
    data: TrainingTensors,
    config: TrainingConfig,
    cuda_graphs: CudaGraphs = "off",
) -> TrainingResult:
    torch.manual_seed(config.seed)
    module = build_network(network).to(device)
    return train(module, network, data, config, engine=engine, cuda_graphs=cuda_graphs)


def histories(rows: list[Row]) -> dict[str, list[float]]:
    """The notebook's job on each engine and device, in-process: time, loss, drift."""
    torch.set_num_threads(1)  # what a worker gives a job this small
    runs: dict[str, list[float]] = {}
    cuda = gpu()
    train_on(cuda, "torch", SMALL, notebook_tensors(cuda), TrainingConfig(epochs=2))  # warm
    for label, device, engine in (
        ("numpy engine, CPU", CPU, "numpy"),
        ("autograd, CPU", CPU, "torch"),
        ("autograd, CUDA", cuda, "torch"),
    ):
        result = train_on(device, engine, SMALL, notebook_tensors(device), TrainingConfig())  # type: ignore[arg-type]
        losses = [e.train_loss for e in result.history]
        runs[label] = losses
        rows.append(
            Row(
                f"notebook job (trainer), {label}",
                f"{result.history[-1].seconds:.2f} s",
                f"final loss {losses[-1]:.5f}",
            )
        )
    reference = np.asarray(runs["numpy engine, CPU"])
    for label in ("autograd, CPU", "autograd, CUDA"):
        drift = np.abs(np.asarray(runs[label]) - reference) / reference
        first = int(np.argmax(drift > 1e-3)) + 1 if (drift > 1e-3).any() else None
        rows.append(
            Row(
                f"history drift vs numpy CPU: {label}",
                f"max {drift[:50].max():.1e} (epochs 1-50), final {drift[-1]:.2%}",
                f"first epoch above 1e-3: {first}",
            )
        )
    return runs


def epoch_seconds(
    device: torch.device, engine: EngineChoice, network: NetworkConfig, batch: int, n_rows: int
) -> float:
    data = regression_tensors(*sinc_points(n_rows, seed=1), device)
    config = TrainingConfig(epochs=1, batch_size=batch)
    return train_on(device, engine, network, data, config).history[-1].seconds


def million_rows(rows: list[Row], profile: WorkerProfile) -> None:
    cuda = gpu()
    n_rows = 20_000 if REHEARSAL else 1_000_000
    cores = os.cpu_count() or 1
    for network, batch, cpu_engine, cpu_threads in (
        (SMALL, 200, "numpy", 1),
        (WIDE, 4096, "torch", cores),
    ):
        torch.set_num_threads(cpu_threads)
        cpu_s = epoch_seconds(CPU, cpu_engine, network, batch, n_rows)  # type: ignore[arg-type]
        epoch_seconds(cuda, "torch", network, batch, 4 * batch)  # warm this shape's kernels
        cuda_s = epoch_seconds(cuda, "torch", network, batch, n_rows)
        shape = JobShape(network.n_parameters, batch, n_rows, 1)
        engine = "numpy" if numpy_supports(network, CPU, TrainingConfig()) else "torch"
        chosen = place(shape, profile.costs(engine))
        widths = "->".join(map(str, [2, *network.hidden_layers, 1]))
        rows.append(
            Row(
                f"{n_rows:,} rows, {widths}, batch {batch}, one epoch",
                f"CPU ({cpu_engine}, {cpu_threads} thr) {cpu_s:.2f} s; CUDA {cuda_s:.2f} s",
                f"placement: {chosen}",
            )
        )
    torch.set_num_threads(1)


# What the CUDA-graph path is for (seconds, or a ratio to one trial alone).
GRAPHS_NOTEBOOK_TARGET = 0.5
GRAPHS_MILLION_ROWS_TARGET = 0.5
STACKED_16_TARGET = 1.2


def verdict(value: float, target: float) -> str:
    return f"target <= {target:g}: {'met' if value <= target else 'MISSED'}"


def stacked_seconds(
    device: torch.device, data: TrainingTensors, trials: int, graphs: bool, epochs: int
) -> float:
    """`trials` notebook trials (each its own seed: initial weights and shuffles) trained as
    one stack for `epochs` epochs, after a warm-up epoch (captures, kernels)."""
    initial = []
    for seed in range(trials):
        torch.manual_seed(seed)
        initial.append(build_network(SMALL).state_dict())
    configs = [TrainingConfig(seed=seed) for seed in range(trials)]
    stack = StackedTorchEngine(SMALL, initial, configs, device, graphs=graphs)
    n_rows = data.x_train.shape[0]
    x = data.x_train.expand(trials, -1, -1)
    y = data.y_train.expand(trials, -1, -1)

    def orders(epoch: int) -> torch.Tensor:
        rows = [torch.from_numpy(epoch_order(seed, epoch, n_rows)) for seed in range(trials)]
        return torch.stack(rows).to(device)

    stack.train_epoch_indexed(x, y, orders(0), 200, None)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        stack.train_epoch_indexed(x, y, orders(epoch), 200, None)  # ends in a host sync
    return time.perf_counter() - started


def graph_timings(rows: list[Row]) -> None:
    """Eager launches against captured graphs, on the GPU (in a rehearsal the CPU runs the
    graph path's blocks eagerly, and train() keeps autograd there: nothing is captured)."""
    cuda = gpu()
    torch.set_num_threads(1)
    note = " (rehearsal: CPU, nothing captured)" if REHEARSAL else ""
    data = notebook_tensors(cuda)
    epochs = 40 if REHEARSAL else 400
    config = TrainingConfig(epochs=epochs)
    seconds: dict[str, float] = {}
    for setting in ("off", "auto"):
        train_on(cuda, "torch", SMALL, data, TrainingConfig(epochs=2), setting)  # warm
        result = train_on(cuda, "torch", SMALL, data, config, setting)
        seconds[setting] = result.history[-1].seconds
        rows.append(
            Row(
                f"notebook job ({epochs} epochs), CUDA graphs {setting}{note}",
                f"{seconds[setting]:.2f} s",
                f"final loss {result.history[-1].train_loss:.5f}"
                + (
                    f"; {verdict(seconds[setting], GRAPHS_NOTEBOOK_TARGET)}"
                    if epochs == 400
                    else ""
                ),
            )
        )
    rows.append(Row("notebook job: graphs speed-up", f"{seconds['off'] / seconds['auto']:.2f}x"))
    stacked_epochs = 20 if REHEARSAL else 400
    one = stacked_seconds(cuda, data, 1, True, stacked_epochs)
    for trials, graphs in ((16, False), (16, True)):
        took = stacked_seconds(cuda, data, trials, graphs, stacked_epochs)
        rows.append(
            Row(
                f"{trials} notebook trials stacked, {stacked_epochs} epochs, "
                f"{'graphs' if graphs else 'eager'}{note}",
                f"{took:.2f} s ({took / one:.2f}x one trial with graphs, {one:.2f} s)",
                verdict(took / one, STACKED_16_TARGET) if graphs and not REHEARSAL else "",
            )
        )
    n_rows = 20_000 if REHEARSAL else 1_000_000
    big = regression_tensors(*sinc_points(n_rows, seed=1), cuda)
    small = regression_tensors(*sinc_points(2_000, seed=1), cuda)
    one_epoch = TrainingConfig(epochs=1, batch_size=200)
    train_on(cuda, "torch", SMALL, small, one_epoch, "auto")  # this shape's kernels
    took = train_on(cuda, "torch", SMALL, big, one_epoch, "auto").history[-1].seconds
    rows.append(
        Row(
            f"{n_rows:,} rows, 2->80->1, batch 200, one epoch, CUDA graphs{note}",
            f"{took:.2f} s (captures included)",
            verdict(took, GRAPHS_MILLION_ROWS_TARGET) if n_rows == 1_000_000 else "",
        )
    )


class Fleet:
    """An API and workers on one SQLite file, each a real process."""

    def __init__(self, folder: Path, stack: ExitStack) -> None:
        self.folder = folder
        self.database = folder / "service.db"
        self.stack = stack
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
        self.env.update(
            FLEET_ENV,
            SERVICE_DATABASE_URL=f"sqlite:///{self.database}",
            SERVICE_PORT=str(self.port),
            PYTHONUNBUFFERED="1",
        )
        self.logs: list[Path] = []
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=300)

    def process(self, name: str, command: str, **env: str) -> Managed:
        log = self.folder / f"{name}.log"
        self.logs.append(log)
        argv = [sys.executable, "-m", "service", command]
        managed = Managed(name, argv, cwd=REPO, env={**self.env, **env}, log_path=log)
        managed.start()
        self.stack.callback(managed.stop)
        return managed

    def start_api(self) -> None:
        api = self.process("api", "api")
        wait_http(api, f"http://127.0.0.1:{self.port}/healthz", timeout=120)

    def start_worker(self, name: str, device: str) -> Managed:
        """A worker, once it has registered (warmed up, devices measured)."""
        if REHEARSAL:
            device = "cpu"
        worker = self.process(name, "worker", SERVICE_DEVICE=device)
        deadline = time.monotonic() + 120
        while not self.workers(worker):
            if time.monotonic() > deadline:
                raise TimeoutError(worker.log_tail())
            time.sleep(0.1)
        return worker

    def workers(self, worker: Managed) -> list[dict[str, Any]]:
        if not worker.alive():
            raise RuntimeError(f"{worker.name} died:\n{worker.log_tail()}")
        listed: list[dict[str, Any]] = self.client.get("/workers").json()["workers"]
        return [w for w in listed if f":{worker.pid}:" in w["id"]]

    def submit(self, body: dict[str, Any]) -> str:
        response = self.client.post("/jobs", json=body)
        response.raise_for_status()
        job_id: str = response.json()["id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.client.get(f"/jobs/{job_id}").raise_for_status().json()
        return job

    def wait(self, job_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["status"] in ("queued", "running"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id}: {job}")
            time.sleep(0.01)
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
        return job

    def timed(self, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        job = self.wait(self.submit(body))
        return time.perf_counter() - started, job

    def timed_sweep(
        self, body: dict[str, Any], timeout: float = 300
    ) -> tuple[float, dict[str, Any]]:
        """POST /sweeps -> every trial ended, as a client sees it; the finished sweep."""
        started = time.perf_counter()
        sweep_id = self.client.post("/sweeps", json=body).raise_for_status().json()["id"]
        deadline = started + timeout
        while (sweep := self.client.get(f"/sweeps/{sweep_id}").json())["status"] in (
            "queued",
            "running",
        ):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"sweep {sweep_id}: {sweep['counts']}")
            time.sleep(0.01)
        return time.perf_counter() - started, sweep

    def checkpointed(self, job_id: str, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with sqlite3.connect(self.database) as db:
                row = db.execute(
                    "SELECT epoch FROM checkpoints WHERE job_id = ?", (job_id,)
                ).fetchone()
            if row is not None:
                return int(row[0])
            time.sleep(0.005)
        raise TimeoutError(f"job {job_id} wrote no checkpoint")

    def model(self, job_id: str) -> dict[str, Any]:
        model: dict[str, Any] = self.client.get(f"/models/{job_id}").raise_for_status().json()
        return model

    def losses(self, job_id: str) -> list[float]:
        history: list[float] = self.client.get(f"/models/{job_id}/loss").json()["train_loss"]
        return history


@dataclass(frozen=True)
class Timing:
    submit_to_done: float  # median seconds, as a client sees it
    training: float  # median of the model's own training_seconds
    device: str


def notebook_timing(fleet: Fleet, reps: int) -> Timing:
    """One untimed job first (a worker's first job pays one-off costs), then `reps` timed."""
    body = notebook_job()
    fleet.timed(body)
    runs = [fleet.timed(body) for _ in range(reps)]
    training = [fleet.model(job["id"])["metrics"]["training_seconds"] for _, job in runs]
    return Timing(
        submit_to_done=float(np.median([seconds for seconds, _ in runs])),
        training=float(np.median(training)),
        device=runs[-1][1]["device"],
    )


def kill(worker: Managed) -> None:
    os.kill(worker.pid, signal.SIGKILL)
    while worker.alive():
        time.sleep(0.01)


def handover(
    fleet: Fleet, rows: list[Row], victim: Managed, rescuer: tuple[str, str], runs: dict[str, Any]
) -> Managed:
    """Kill `victim` after its first checkpoint of the notebook job; `rescuer` must finish it."""
    body = notebook_job()
    job_id = fleet.submit(body)
    epoch = fleet.checkpointed(job_id)
    before = fleet.job(job_id)["device"]
    kill(victim)
    worker = fleet.start_worker(*rescuer)
    job = fleet.wait(job_id)
    losses = fleet.losses(job_id)
    reference = runs["numpy engine, CPU"]
    moved = job["device"] != before or REHEARSAL
    ok = job["attempts"] == 2 and len(losses) == 400 and moved
    rows.append(
        Row(
            f"hand-over {before} -> {job['device']} after SIGKILL",
            "succeeded" if ok else f"CHECK: {job['attempts']} attempts, {len(losses)} epochs",
            f"checkpoint after epoch {epoch}; attempts {job['attempts']}; final loss "
            f"{losses[-1]:.5f} ({losses[-1] / reference[-1] - 1:+.2%} vs unbroken numpy CPU)",
        )
    )
    return worker


def through_processes(rows: list[Row], runs: dict[str, Any], folder: Path) -> None:
    x, y = sinc_points(10_000 if REHEARSAL else 100_000, seed=2)
    wide = {
        "name": "wide",
        "data": {"x": x.tolist(), "y": y.tolist()},
        "model": {"hidden_layers": [512, 512], "output_activation": None},
        "training": {"batch_size": 4096, "epochs": 3},
    }
    with ExitStack() as stack:
        fleet = Fleet(folder, stack)
        subprocess_migrate(fleet)
        fleet.start_api()

        gpu_worker = fleet.start_worker("worker-auto", "auto")
        devices = fleet.workers(gpu_worker)[0]["devices"]
        on_gpu_worker = notebook_timing(fleet, REPS)
        wide_s, wide_job = fleet.timed(wide)
        gpu_worker.stop()

        cpu_worker = fleet.start_worker("worker-cpu", "cpu")
        on_cpu_worker = notebook_timing(fleet, REPS)
        cuda_worker = handover(fleet, rows, cpu_worker, ("worker-cuda", "cuda"), runs)
        on_cuda_worker = notebook_timing(fleet, 1)
        rows.append(sweep_on(fleet, on_cuda_worker))
        handover(fleet, rows, cuda_worker, ("worker-cpu-2", "cpu"), runs).stop()
        # The GPU worker once more, after the CPU worker: a drift in the machine's speed
        # between the two phases shows up as a difference between the two GPU-worker rows.
        fleet.start_worker("worker-auto-2", "auto")
        on_gpu_worker_again = notebook_timing(fleet, REPS)

        def timing_row(label: str, timing: Timing) -> Row:
            ratio = timing.submit_to_done / on_cpu_worker.submit_to_done
            return Row(
                f"notebook job submit -> succeeded (median of {REPS}), {label}",
                f"{timing.submit_to_done:.2f} s on {timing.device}",
                f"training {timing.training:.2f} s; {ratio:.2f}x the CPU worker",
            )

        rows[:0] = [
            Row("GPU worker (SERVICE_DEVICE=auto) devices", ", ".join(devices)),
            timing_row("GPU worker (auto)", on_gpu_worker),
            timing_row("CPU worker", on_cpu_worker),
            timing_row("GPU worker (auto), again after the CPU worker", on_gpu_worker_again),
            timing_row("CUDA-only worker (1 run)", on_cuda_worker),
            Row(
                f"wide job ({len(x):,} rows, 2->512->512->1, batch 4096, 3 epochs), GPU worker",
                f"{wide_s:.2f} s on {wide_job['device']}",
            ),
        ]


def sweep_on(fleet: Fleet, one: Timing) -> Row:
    """16 trials of the notebook job (4 learning rates x 4 seeds) through POST /sweeps on the
    CUDA-only worker, against one trial's submit -> succeeded on the same worker."""
    grid = {"training.learning_rate": [0.003, 0.01, 0.03, 0.1], "training.seed": [0, 1, 2, 3]}
    seconds, sweep = fleet.timed_sweep({"base": notebook_job(), "grid": grid})
    ratio = seconds / one.submit_to_done
    model = fleet.model(sweep["trials"][0]["id"])
    return Row(
        "16-trial sweep of the notebook job, submit -> all succeeded, CUDA-only worker",
        f"{seconds:.2f} s ({ratio:.2f}x one trial, {one.submit_to_done:.2f} s)",
        f"{sweep['counts']['succeeded']}/16 succeeded, stacks of "
        f"{model['metrics']['stacked_trials']} on {model['metrics']['device']}; "
        + (verdict(ratio, STACKED_16_TARGET) if not REHEARSAL else "rehearsal: no verdict"),
    )


def subprocess_migrate(fleet: Fleet) -> None:
    migrate = fleet.process("migrate", "migrate")
    deadline = time.monotonic() + 120
    while migrate.alive():
        if time.monotonic() > deadline:
            raise TimeoutError(migrate.log_tail())
        time.sleep(0.1)


def write(out: Path, rows: list[Row], logs: list[Path]) -> str:
    device = "the CPU (a rehearsal)" if REHEARSAL else torch.cuda.get_device_name(0)
    header = (
        f"GPU check on {device}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    table = [header, "", "| what | result | note |", "| --- | --- | --- |"]
    table += [f"| {r.what} | {r.result} | {r.note} |" for r in rows]
    text = "\n".join(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.md").write_text(text + "\n")
    (out / "gpu_check.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    with (out / "gpu_check_logs.txt").open("w") as combined:
        for log in logs:
            if log.exists():
                combined.write(f"==== {log.name}\n{log.read_text(errors='replace')}\n")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--rehearse", action="store_true", help="the CPU stands in for the GPU")
    parser.add_argument(
        "--in-process", action="store_true", help="only parts 1 to 3 (no service processes)"
    )
    parser.add_argument("--graphs", action="store_true", help="only part 3 (CUDA graphs)")
    args = parser.parse_args()
    global REHEARSAL, REPS
    REHEARSAL = args.rehearse
    if REHEARSAL:
        REPS = 2
    if not torch.cuda.is_available() and not REHEARSAL:
        print("no CUDA device: this check runs on a GPU machine", file=sys.stderr)
        return 2
    rows: list[Row] = []
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    logs: list[Path] = []
    try:
        if args.graphs:
            graph_timings(rows)
            return 0
        runs = histories(rows)
        # As a worker measures itself: small networks on the GPU through captured graphs.
        profile = profile_worker(None if REHEARSAL else gpu(), os.cpu_count() or 1, "auto")
        measured = (("numpy", profile.cpu_numpy), ("torch", profile.cpu_torch), ("", profile.gpu))
        for engine, cost in measured:
            if cost is None:
                continue
            rows.append(
                Row(
                    f"measured step cost, {cost.device} {engine}".rstrip(),
                    f"{cost.step_overhead_seconds * 1e3:.3f} ms overhead",
                    f"{cost.flops_per_second / 1e9:.0f} GFLOP/s",
                )
            )
        million_rows(rows, profile)
        graph_timings(rows)
        if not args.in_process:
            through_processes(rows, runs, folder)
    finally:
        logs = sorted(folder.glob("*.log"))
        print(write(args.out, rows, logs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
