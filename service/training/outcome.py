"""What the end of a training run writes: the job's model (succeeded), the job handed back
to the queue (paused), or its end as cancelled or failed. Every write is guarded by the job's
lease (service/storage/queue.py): a worker that lost it writes nothing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from service import wakeup
from service.loss_history import EpochResult
from service.storage import blobs, queue
from service.storage.blobs import BlobStore
from service.storage.db import Database
from service.storage.models import JobStatus, Model
from service.storage.store import Dataset, encode_checkpoint, encode_weights
from service.training.data import PreparedData
from service.training.evaluation import model_quality
from service.training.job_errors import ModelNotStored, public_error, shorten
from service.training.lease import Interrupt
from service.training.network import NetworkConfig
from service.training.progress import ProgressWriter
from service.training.trainer import TrainingDiverged, TrainingResult

log = logging.getLogger("service.worker")


@dataclass(frozen=True)
class TrainedFrom:
    """What a model is stored with besides its weights: the network, the data it was
    prepared from (scalers, classes, feature names, quality), where, and in how big a stack."""

    network: NetworkConfig
    prepared: PreparedData
    dataset: Dataset
    device: torch.device
    stack_size: int = 1  # trained together with this many trials, itself included


class OutcomeWriter:
    def __init__(self, db: Database, blob_store: BlobStore, worker_id: str) -> None:
        self.db, self.blob_store, self.worker_id = db, blob_store, worker_id

    def store(
        self,
        job_id: str,
        interrupt: Interrupt,
        progress: ProgressWriter,
        result: TrainingResult,
        trained: TrainedFrom,
    ) -> None:
        """The run's end as the job's: its model stored (succeeded), the job handed back to
        the queue (paused), or ended cancelled; nothing once its lease is lost."""
        config, prepared, dataset = trained.network, trained.prepared, trained.dataset
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
            if queue.release(self.db, job_id, self.worker_id, rows, checkpoint=stored):
                wakeup.announce(self.db)  # an idle worker takes it over now, not at its poll
            if checkpoint is not None:
                log.info("job %s handed back to the queue at epoch %d", job_id, checkpoint.epoch)
            else:  # paused mid-epoch, or before the first epoch ended
                log.info(
                    "job %s handed back to the queue mid-epoch; it resumes from its last "
                    "stored checkpoint",
                    job_id,
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
            "device": str(trained.device),
            "engine": result.engine,
            "stacked_trials": trained.stack_size,
            "n_parameters": config.n_parameters,
            # R², RMSE, MAE or accuracy, log-loss, confusion matrix on each split, raw units.
            **model_quality(config, result.state, prepared, dataset.classes),
        }
        model = Model(
            id=job_id,
            task="classification" if dataset.classes is not None else "regression",
            architecture=config.to_dict(),
            scalers=prepared.scalers_json(),
            n_features=config.n_inputs,
            n_outputs=config.n_outputs,
            classes=dataset.classes,
            feature_names=dataset.feature_names,
            metrics=metrics,
        )
        weights = encode_weights(result.state)
        # With a blob store, the file is written before the transaction that names it: a crash
        # in between leaves an orphan file (swept later), never a model without weights.
        blobs.stow_weights(self.blob_store, model, weights)
        try:
            outcome = queue.finish_succeeded(
                self.db, job_id, self.worker_id, model, rows, result.best_epoch
            )
        except OperationalError:
            raise  # the database is away, not refusing this model: the job's lease decides
        except SQLAlchemyError as exc:  # too big for it, most likely
            raise ModelNotStored(len(weights), rows) from exc
        if outcome != JobStatus.SUCCEEDED:  # no row names the file: its key is this attempt's
            self.blob_store.discard([model.weights_ref])
        if outcome == JobStatus.SUCCEEDED:
            log.info(
                "job %s succeeded: final loss %.6g in %.2fs", job_id, last.train_loss, last.seconds
            )
        elif outcome == JobStatus.CANCELLED:
            log.info("job %s cancelled as it finished; no model stored", job_id)
        else:
            log.warning("job %s: lease lost before the model was stored", job_id)

    @contextmanager
    def failing_safely(
        self, job_ids: list[str], progress: dict[str, ProgressWriter]
    ) -> Iterator[None]:
        """A job's own failure ends it failed (each of a stack's, when the stack failed), and
        never takes the worker down. Writes are lease-guarded: a job that already ended keeps
        its outcome."""
        try:
            yield
        except TrainingDiverged as exc:
            log.warning("job %s diverged: %s", ", ".join(job_ids), exc)
            self.fail(job_ids, shorten(str(exc)), progress)
        except OperationalError:
            # The database failed, not the job (retries were exhausted): write nothing more.
            # The lease runs out and the next attempt resumes from the last checkpoint.
            log.exception("job %s: database unavailable; leaving it to its lease", job_ids)
        except ModelNotStored as exc:
            log.exception("job %s: %s", ", ".join(job_ids), exc)  # the database's own words
            for job_id in job_ids:  # one: each of a stack's models is stored on its own
                self.fail([job_id], str(exc), progress, [*exc.rows, *progress[job_id].take()])
        except Exception as exc:  # a job's own failure must not take the worker down
            log.exception("job %s failed", ", ".join(job_ids))
            self.fail(job_ids, public_error(exc), progress)

    def fail(
        self,
        job_ids: list[str],
        error: str,
        progress: dict[str, ProgressWriter],
        rows: list[EpochResult] | None = None,
    ) -> None:
        for job_id in job_ids:
            taken = rows if rows is not None else progress[job_id].take()
            queue.finish_failed(self.db, job_id, self.worker_id, error, taken)
