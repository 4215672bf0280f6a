"""The queue consumer: claims a job, trains it, and persists the loss history and the model.

One job at a time per process. While it trains, a heartbeat thread renews the lease and
notices cancel requests; the training loop checks a single event between batches.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from types import FrameType

import torch
from sqlalchemy.exc import OperationalError

from service import queue
from service.config import Settings
from service.db import Database
from service.models import Job, Model
from service.schemas import JobSpec
from service.store import (
    CorruptBlob,
    decode_checkpoint,
    decode_dataset,
    encode_checkpoint,
    encode_weights,
)
from service.training.checkpoint import Checkpoint
from service.training.data import PreparedData, TrainingTensors, prepare
from service.training.lease import Interrupt, LeaseKeeper, ProgressWriter
from service.training.network import NetworkConfig, build_network
from service.training.trainer import (
    TrainingConfig,
    TrainingDiverged,
    TrainingResult,
    train,
)

log = logging.getLogger("service.worker")

# Below this many multiply-adds per epoch one thread beats several (thread hand-off dominates).
SMALL_JOB_FLOPS = 50_000_000


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


class Worker:
    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
        self.db = db or Database(settings.database_url)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.device = pick_device(settings.device)
        self.stopping = threading.Event()
        self._current: Interrupt | None = None
        self._last_sweep = 0.0

    def request_stop(self) -> None:
        """Stop claiming; hand the running job back to the queue."""
        self.stopping.set()
        if self._current is not None:
            self._current.set("shutdown")

    def warm_up(self) -> None:
        """Pay one-off costs (lazy imports, allocator set-up) before the first claim."""
        x = torch.zeros(8, 2, device=self.device)
        y = torch.zeros(8, 1, device=self.device)
        architecture = NetworkConfig(2, (4,), 1, "tanh", None)
        for engine in ("torch", "numpy"):
            train(
                build_network(architecture).to(self.device),
                architecture,
                TrainingTensors(x, y, None, None),
                TrainingConfig(epochs=2, batch_size=4),
                engine=engine if self.device.type == "cpu" else "torch",
            )

    def run_forever(self) -> None:
        log.info("worker %s ready on %s", self.worker_id, self.device)
        while not self.stopping.is_set():
            try:
                if not self.run_once():
                    self.stopping.wait(self.settings.poll_seconds)
            except Exception:  # the database may be briefly unavailable: back off, go on
                log.exception("worker loop error; retrying")
                self.stopping.wait(1.0)
        log.info("worker %s stopped", self.worker_id)

    def run_once(self) -> bool:
        """Claim and run one job; False when the queue was empty."""
        now = time.monotonic()
        if now - self._last_sweep >= self.settings.sweep_seconds:
            self._last_sweep = now
            recovered = queue.recover_expired(self.db)
            if recovered:
                log.warning("recovered %d job(s) from expired leases", recovered)
        if not queue.has_queued(self.db):
            return False
        job_id = queue.claim(self.db, self.worker_id, self.settings.lease_seconds)
        if job_id is None:
            return False
        self.run_job(job_id)
        return True

    def run_job(self, job_id: str) -> None:
        interrupt = Interrupt()
        self._current = interrupt
        if self.stopping.is_set():
            interrupt.set("shutdown")
        keeper = LeaseKeeper(self.db, self.settings, job_id, self.worker_id, interrupt)
        keeper.start()
        progress = ProgressWriter(
            self.db, self.settings, job_id, self.worker_id, interrupt, str(self.device)
        )
        try:
            self._train_and_store(job_id, interrupt, progress)
        except TrainingDiverged as exc:
            log.warning("job %s diverged: %s", job_id, exc)
            queue.finish_failed(self.db, job_id, self.worker_id, str(exc), progress.take())
        except OperationalError:
            # The database failed, not the job (retries were exhausted): write nothing more.
            # The lease runs out and the next attempt resumes from the last checkpoint.
            log.exception("job %s: database unavailable; leaving it to its lease", job_id)
        except Exception as exc:  # a job's own failure must not take the worker down
            log.exception("job %s failed", job_id)
            queue.finish_failed(
                self.db, job_id, self.worker_id, f"{type(exc).__name__}: {exc}", progress.take()
            )
        finally:
            keeper.stop()
            self._current = None

    def _train_and_store(self, job_id: str, interrupt: Interrupt, progress: ProgressWriter) -> None:
        with self.db.read() as session:
            job = session.get(Job, job_id)
            assert job is not None, "a claimed job exists"
            spec = JobSpec.model_validate(job.spec)
            dataset = decode_dataset(job.data)
            n_outputs = job.n_outputs
        resume = self._checkpoint_of(job_id)
        if resume is not None:
            log.info("job %s: resuming from its checkpoint after epoch %d", job_id, resume.epoch)
        # Loss rows past the checkpoint (or all, without one) belong to a lost attempt.
        if not queue.reset_progress(
            self.db, job_id, self.worker_id, keep_epochs=resume.epoch if resume else 0
        ):
            return
        prepared = prepare(
            dataset.x,
            dataset.y,
            classification=spec.task == "classification",
            scale_inputs=spec.preprocessing.inputs == "standard",
            scale_targets=spec.preprocessing.targets == "standard",
            validation_fraction=spec.training.validation_fraction,
            seed=spec.training.seed,
            device=self.device,
        )
        config = NetworkConfig(
            n_inputs=dataset.x.shape[1],
            hidden_layers=tuple(spec.model.hidden_layers),
            n_outputs=n_outputs,
            activation=spec.model.activation,
            output_activation=spec.model.output_activation,
        )
        torch.set_num_threads(self._threads_for(config, len(dataset.x)))
        torch.manual_seed(spec.training.seed)  # the network's initial weights
        network = build_network(config).to(self.device)
        result = train(
            network,
            config,
            prepared.tensors,
            # The split already happened in prepare(); every other setting is the trainer's.
            TrainingConfig(**spec.training.model_dump(exclude={"validation_fraction"})),
            on_epoch=progress,
            should_stop=interrupt.stop.is_set,
            should_pause=interrupt.pause.is_set,
            checkpoint_due=progress.checkpoint_due,
            on_checkpoint=progress.save_checkpoint,
            resume=resume,
        )
        self._persist(job_id, interrupt, progress, result, config, prepared, dataset.classes)

    def _persist(
        self,
        job_id: str,
        interrupt: Interrupt,
        progress: ProgressWriter,
        result: TrainingResult,
        config: NetworkConfig,
        prepared: PreparedData,
        classes: list[object] | None,
    ) -> None:
        rows = progress.take()
        if interrupt.reason == "lease_lost":
            log.warning("job %s: lease lost, writing nothing", job_id)
            return
        if interrupt.reason == "cancelled":
            queue.finish_cancelled(self.db, job_id, self.worker_id, rows)
            log.info("job %s cancelled", job_id)
            return
        if result.stop_reason == "paused":
            checkpoint = result.checkpoint
            stored = (
                (checkpoint.epoch, encode_checkpoint(*checkpoint.to_tensors()))
                if checkpoint is not None
                else None
            )
            queue.release(self.db, job_id, self.worker_id, rows, checkpoint=stored)
            log.info(
                "job %s handed back to the queue at epoch %s",
                job_id,
                checkpoint.epoch if checkpoint else 0,
            )
            return
        last = result.history[-1]
        metrics = {
            "final_train_loss": last.train_loss,
            "final_val_loss": last.val_loss,
            "best_epoch": result.best_epoch,
            "epochs_trained": last.epoch,
            "stop_reason": result.stop_reason,
            "training_seconds": last.seconds,
            "device": str(self.device),
            "n_parameters": config.n_parameters,
        }
        model = Model(
            id=job_id,
            task="classification" if classes is not None else "regression",
            architecture=config.to_dict(),
            weights=encode_weights(result.state),
            scalers=prepared.scalers_json(),
            n_features=config.n_inputs,
            n_outputs=config.n_outputs,
            classes=classes,
            metrics=metrics,
        )
        if queue.finish_succeeded(self.db, job_id, self.worker_id, model, rows, result.best_epoch):
            log.info(
                "job %s succeeded: final loss %.6g in %.2fs", job_id, last.train_loss, last.seconds
            )
        else:
            log.warning("job %s: lease lost before the model was stored", job_id)

    def _checkpoint_of(self, job_id: str) -> Checkpoint | None:
        stored = queue.load_checkpoint(self.db, job_id)
        if stored is None:
            return None
        try:
            return Checkpoint.from_tensors(*decode_checkpoint(stored[1]))
        except (CorruptBlob, KeyError, ValueError) as exc:
            log.warning("job %s: unusable checkpoint (%s); starting over", job_id, exc)
            return None

    def _threads_for(self, config: NetworkConfig, n_rows: int) -> int:
        if self.settings.torch_threads is not None:
            return self.settings.torch_threads
        flops_per_epoch = 6 * config.n_parameters * n_rows  # forward + backward
        if flops_per_epoch < SMALL_JOB_FLOPS or self.device.type != "cpu":
            return 1
        return max(1, (os.cpu_count() or 1) // max(1, self.settings.workers))


def run_worker(settings: Settings) -> None:
    """Entry point of `python -m service worker`: SIGTERM/SIGINT hand the running job back."""
    worker = Worker(settings)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        worker.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.warm_up()
    try:
        worker.run_forever()
    finally:
        worker.db.dispose()
