"""The queue consumer: claims a job, places it, trains it, and persists the loss history and
the model.

One job at a time per process. A worker with a GPU also trains on its CPU, and places each job
on the device its cost model says finishes it soonest (service/placement.py). While a job
trains, a heartbeat thread renews the lease and notices cancel requests; the training loop
checks a single event between batches. Another thread keeps the worker's row in the fleet
registry fresh, so the API knows which devices are alive.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from types import FrameType

import torch
from sqlalchemy.exc import OperationalError

from service import fleet, retention, wakeup
from service.config import Settings
from service.datasets.training_data import load_job_dataset
from service.placement import JobShape, place
from service.schemas import JobSpec
from service.storage import blobs, queue
from service.storage.db import Database
from service.storage.models import Job
from service.storage.store import (
    CorruptBlob,
    Dataset,
    decode_checkpoint,
)
from service.training.checkpoint import Checkpoint, UnusableCheckpoint
from service.training.data import PreparedData, TrainingTensors, prepare
from service.training.lease import Interrupt, LeaseKeeper
from service.training.memory import grew, release_memory, resident_bytes
from service.training.network import NetworkConfig, build_network
from service.training.outcome import OutcomeWriter, TrainedFrom
from service.training.profile import WorkerProfile, profile_worker
from service.training.progress import FlushClock, ProgressWriter
from service.training.stacked_trainer import Outcome, Trial, train_stack
from service.training.trainer import (
    TrainingConfig,
    TrainingDiverged,
    TrainingResult,
    engine_for,
    train,
)
from service.tuning import MAX_STACK_GATHER_BYTES, RETENTION_SWEEP_SECONDS, SMALL_JOB_FLOPS

log = logging.getLogger("service.worker")


def worker_devices(setting: str) -> list[torch.device]:
    """The devices a worker may train on, the CPU first. `auto` adds the GPU torch sees."""
    if setting != "auto":
        device = torch.device(setting)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return [device]
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda", torch.cuda.current_device()))
    return devices


@dataclass(frozen=True)
class ClaimedJob:
    """What the worker reads of a job before its data: enough to place it."""

    spec: JobSpec
    network: NetworkConfig
    n_rows: int
    n_train_rows: int


class Worker:
    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
        self.db = db or Database(settings.database_url)
        # Where training data is read from and weights are written (a bad URL stops it here).
        self.blob_store = blobs.open_blob_store(settings.blob_store_url)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.outcomes = OutcomeWriter(self.db, self.blob_store, self.worker_id)
        self.devices = worker_devices(settings.device)
        self.device_kinds = sorted({d.type for d in self.devices})
        # Measured by warm_up() when there is a choice of device to make.
        self.profile: WorkerProfile | None = None
        self.stopping = threading.Event()
        # The interrupts of the jobs training now (one, or a stack of a sweep's trials).
        self._current: list[Interrupt] = []
        # Set while run_forever runs: what an idle worker waits on, and what a stop interrupts.
        self._wakeups: wakeup.WakeUps | None = None
        self._last_sweep = 0.0
        self._last_retention = 0.0
        self._last_orphan_sweep = 0.0

    def request_stop(self) -> None:
        """Stop claiming; hand the running job back to the queue."""
        self.stopping.set()
        wakeups = self._wakeups
        if wakeups is not None:
            wakeups.wake()
        for interrupt in self._current:
            interrupt.set("shutdown")

    def warm_up(self) -> None:
        """Pay one-off costs (lazy imports, allocator set-up, CUDA context) before the first
        claim, and measure each device's step costs when jobs are to be placed."""
        architecture = NetworkConfig(2, (4,), 1, "tanh", None)
        for device in self.devices:
            x = torch.zeros(8, 2, device=device)
            y = torch.zeros(8, 1, device=device)
            for engine in ("torch", "numpy") if device.type == "cpu" else ("torch",):
                train(
                    build_network(architecture).to(device),
                    architecture,
                    TrainingTensors(x, y, None, None),
                    TrainingConfig(epochs=2, batch_size=4),
                    engine=engine,
                )
        if len(self.devices) > 1:
            gpu = next(d for d in self.devices if d.type == "cuda")
            self.profile = profile_worker(gpu, self._cpu_threads(), self.settings.cuda_graphs)
            for cost in (self.profile.cpu_numpy, self.profile.cpu_torch, self.profile.gpu):
                if cost is not None:
                    log.info(
                        "device %s: %.3g ms a step of overhead, %.3g GFLOP/s",
                        cost.device,
                        cost.step_overhead_seconds * 1e3,
                        cost.flops_per_second / 1e9,
                    )

    def run_forever(self) -> None:
        devices = [str(d) for d in self.devices]
        fleet.register(self.db, self.worker_id, socket.gethostname(), devices, self.settings.engine)
        # Listening before the first look at the queue, so no job queued in between is missed.
        wakeups = self._wakeups = wakeup.listen(self.db)
        presence = Presence(self.db, self.settings, self.worker_id, devices, self.stopping)
        presence.start()
        log.info("worker %s ready on %s", self.worker_id, ", ".join(devices))
        try:
            while not self.stopping.is_set():
                try:
                    if not self.run_once():
                        wakeups.wait(self._idle_seconds())
                except Exception:  # the database may be briefly unavailable: back off, go on
                    log.exception("worker loop error; retrying")
                    self.stopping.wait(1.0)
        finally:
            self.stopping.set()  # also ends the presence thread if the loop ended otherwise
            self._wakeups = None
            wakeups.close()
            presence.join()
            try:
                fleet.unregister(self.db, self.worker_id)
            except OperationalError:  # its row simply ages out of the registry
                log.warning("could not remove worker %s from the registry", self.worker_id)
        log.info("worker %s stopped", self.worker_id)

    def _idle_seconds(self) -> float:
        """How long an idle worker waits for a wake-up: its slow poll, but never past its next
        lease sweep or retention run, which must keep their schedules while nothing is queued."""
        due = min(
            self._last_sweep + self.settings.sweep_seconds,
            self._last_retention + RETENTION_SWEEP_SECONDS,
        )
        return max(0.0, min(self.settings.poll_seconds, due - time.monotonic()))

    def run_once(self) -> bool:
        """Claim and run one job; False when the queue was empty."""
        now = time.monotonic()
        if now - self._last_sweep >= self.settings.sweep_seconds:
            self._last_sweep = now
            recovered = queue.recover_expired(self.db)
            if recovered:
                log.warning("recovered %d job(s) from expired leases", recovered)
                wakeup.announce(self.db)  # the other idle workers may take them at once
        if now - self._last_retention >= RETENTION_SWEEP_SECONDS:
            self._last_retention = now
            dropped = retention.drop_expired_training_data(
                self.db, self.settings.job_data_retention_seconds, blob_store=self.blob_store
            )
            if dropped:
                log.info("dropped the training data of %d job(s) past retention", dropped)
        if now - self._last_orphan_sweep >= retention.ORPHAN_SWEEP_SECONDS:
            self._last_orphan_sweep = now
            swept = retention.sweep_orphan_blobs(self.db, self.blob_store)
            if swept:
                log.info("removed %d orphan file(s) from the blob store", swept)
        if not queue.has_queued(self.db, self.device_kinds):
            return False
        # A sweep's trial brings its queued stack-mates along: they train as one stacked model.
        job_ids = queue.claim_stack(
            self.db,
            self.worker_id,
            self.settings.lease_seconds,
            self.device_kinds,
            self.settings.max_stacked_trials,
            MAX_STACK_GATHER_BYTES,
        )
        if not job_ids:
            return False
        self.run_jobs(job_ids)
        return True

    def run_jobs(self, job_ids: list[str]) -> None:
        """Train claimed jobs: one alone, or several trials of a sweep as one stack."""
        resident_before = resident_bytes()
        interrupts = {job_id: Interrupt() for job_id in job_ids}
        self._current = list(interrupts.values())
        if self.stopping.is_set():
            for interrupt in self._current:
                interrupt.set("shutdown")
        keeper = LeaseKeeper(self.db, self.settings, interrupts, self.worker_id)
        keeper.start()
        clock = FlushClock()  # a stack's loss rows are written together
        progress = {
            job_id: ProgressWriter(self.db, self.settings, job_id, self.worker_id, interrupt, clock)
            for job_id, interrupt in interrupts.items()
        }
        try:
            if len(job_ids) == 1:
                job_id = job_ids[0]
                with self.outcomes.failing_safely(job_ids, progress):
                    self._train_and_store(job_id, interrupts[job_id], progress[job_id])
            else:
                with self.outcomes.failing_safely(job_ids, progress):
                    self._train_stack_and_store(job_ids, interrupts, progress)
        finally:
            keeper.stop()
            self._current = []
            if grew(resident_before):
                self._release_memory()

    def _release_memory(self) -> None:
        """Give back what a large job left behind, before idling. The job's tensors are
        unreachable by now, but its largest values may still be held twice over: SQLite keeps
        a copy of the last value bound to each cached statement (the model's weights, the
        checkpoint) until the connection closes. Closing the pooled connections frees those;
        the next query opens a fresh one."""
        self.db.engine.dispose()
        release_memory(used_cuda=any(d.type == "cuda" for d in self.devices))

    def _train_and_store(self, job_id: str, interrupt: Interrupt, progress: ProgressWriter) -> None:
        job = self._read_claimed(job_id)
        device = self._place(job)
        started, resume = self._start_attempt(job_id, job, device)
        if not started:
            return
        dataset = load_job_dataset(self.db, self.blob_store, job_id)
        spec = job.spec
        prepared = _prepare(dataset, spec, device)
        config = job.network
        torch.set_num_threads(self._threads_for(config, job.n_rows, device))
        torch.manual_seed(spec.training.seed)  # the network's initial weights, built on the CPU
        network = build_network(config).to(device)
        result = train(
            network,
            config,
            prepared.tensors,
            training_config(spec),
            on_epoch=progress,
            should_stop=interrupt.stop.is_set,
            should_pause=interrupt.pause.is_set,
            checkpoint_due=progress.checkpoint_due,
            on_checkpoint=progress.save_checkpoint,
            resume=resume,
            engine=self.settings.engine,
            cuda_graphs=self.settings.cuda_graphs,
        )
        self.outcomes.store(
            job_id, interrupt, progress, result, TrainedFrom(config, prepared, dataset, device)
        )

    def _train_stack_and_store(
        self,
        job_ids: list[str],
        interrupts: dict[str, Interrupt],
        progress: dict[str, ProgressWriter],
    ) -> None:
        """A sweep's trials of one shape, trained together (stacked_trainer.py), then each
        stored as its own model. Trials resumed from checkpoints of different epochs train as
        separate stacks, one after the other."""
        claimed = {job_id: self._read_claimed(job_id) for job_id in job_ids}
        first = claimed[job_ids[0]]
        device = self._place(first, n_trials=len(job_ids))
        resumes: dict[str, Checkpoint | None] = {}
        for job_id in job_ids:
            lease_held, resume = self._start_attempt(job_id, claimed[job_id], device)
            if lease_held:
                resumes[job_id] = resume
        if not resumes:
            return
        started = list(resumes)
        # Trials of one stack come from one sweep: they share their data.
        dataset = load_job_dataset(self.db, self.blob_store, started[0])
        prepared_by_seed: dict[int, PreparedData] = {}
        trials: dict[str, Trial] = {}
        for job_id in started:
            spec = claimed[job_id].spec
            seed = spec.training.seed
            if seed not in prepared_by_seed:  # the split depends on the seed
                prepared_by_seed[seed] = _prepare(dataset, spec, device)
            torch.manual_seed(seed)  # each trial's initial weights, as it would get alone
            trials[job_id] = Trial(
                config=training_config(spec),
                data=prepared_by_seed[seed].tensors,
                initial=build_network(first.network).state_dict(),
                resume=resumes[job_id],
                on_epoch=progress[job_id],
                should_stop=interrupts[job_id].stop.is_set,
                checkpoint_due=progress[job_id].checkpoint_due,
                on_checkpoint=progress[job_id].save_checkpoint,
            )
        torch.set_num_threads(self._threads_for(first.network, first.n_rows, device))
        by_epoch: dict[int, list[str]] = {}
        for job_id in started:
            resume = resumes[job_id]
            by_epoch.setdefault(resume.epoch if resume else 0, []).append(job_id)
        pause = interrupts[started[0]].pause.is_set  # a shutdown pauses every trial at once
        for group in by_epoch.values():
            log.info("training %d trials as one stack on %s", len(group), device)

            def store(job_id: str, outcome: Outcome, stack_size: int = len(group)) -> None:
                """Each trial's model is stored as it leaves the stack, the others training on."""
                prepared = prepared_by_seed[claimed[job_id].spec.training.seed]
                with self.outcomes.failing_safely([job_id], progress):
                    if isinstance(outcome, TrainingDiverged):
                        raise outcome
                    trained = TrainedFrom(first.network, prepared, dataset, device, stack_size)
                    self.outcomes.store(
                        job_id, interrupts[job_id], progress[job_id], outcome, trained
                    )

            for job_id in group:
                trials[job_id].on_end = functools.partial(store, job_id)
            outcomes = train_stack(
                first.network,
                [trials[job_id] for job_id in group],
                should_pause=pause,
                engine=self.settings.engine,
                cuda_graphs=self.settings.cuda_graphs,
            )
            for job_id, outcome in zip(group, outcomes, strict=True):
                if isinstance(outcome, TrainingResult) and outcome.stop_reason == "paused":
                    store(job_id, outcome)  # handed back to the queue, with its checkpoint

    def _start_attempt(
        self, job_id: str, job: ClaimedJob, device: torch.device
    ) -> tuple[bool, Checkpoint | None]:
        """The first write after the claim: where the job runs, and loss rows past its usable
        checkpoint (or all, without one) dropped, since they belong to a lost attempt. Whether
        the lease still held, and the checkpoint to resume from."""
        resume, warning = self._checkpoint_of(job_id, job)
        if resume is not None:
            log.info(
                "job %s: resuming from its checkpoint after epoch %d (written by the %s engine "
                "on %s), on %s",
                job_id,
                resume.epoch,
                resume.engine,
                resume.device,
                device,
            )
        started = queue.start_attempt(
            self.db,
            job_id,
            self.worker_id,
            str(device),
            keep_epochs=resume.epoch if resume else 0,
            warning=warning,
        )
        return started, resume

    def _read_claimed(self, job_id: str) -> ClaimedJob:
        with self.db.read() as session:
            job = session.get(Job, job_id)
            assert job is not None, "a claimed job exists"
            spec = JobSpec.model_validate(job.spec)
            network = NetworkConfig(
                n_inputs=job.n_features,
                hidden_layers=tuple(spec.model.hidden_layers),
                n_outputs=job.n_outputs,
                activation=spec.model.activation,
                output_activation=spec.model.output_activation,
            )
            n_val = round(job.n_rows * spec.training.validation_fraction)
            return ClaimedJob(spec, network, job.n_rows, job.n_rows - n_val)

    def _place(self, job: ClaimedJob, n_trials: int = 1) -> torch.device:
        """The device this job (or a stack of `n_trials` like it) trains on: the only one, or
        the one the cost model picks. A stack's step does every trial's arithmetic at once."""
        required = job.spec.resources.device
        if self.profile is None:
            return self.devices[0]
        cpu_engine = engine_for(
            job.network, torch.device("cpu"), training_config(job.spec), self.settings.engine
        )
        shape = JobShape(
            n_parameters=job.network.n_parameters * n_trials,
            batch_size=job.spec.training.batch_size,
            n_train_rows=job.n_train_rows,
            epochs=job.spec.training.epochs,
        )
        chosen = place(shape, self.profile.costs(cpu_engine), required)
        return next(d for d in self.devices if str(d) == chosen)

    def _checkpoint_of(self, job_id: str, job: ClaimedJob) -> tuple[Checkpoint | None, str | None]:
        """The checkpoint to resume from, or (None, why) when there is one that cannot be used:
        the job then starts over rather than fail."""
        stored = queue.load_checkpoint(self.db, job_id)
        if stored is None:
            return None, None
        try:
            checkpoint = Checkpoint.from_tensors(*decode_checkpoint(stored[1]))
            checkpoint.check_fits(job.network, job.spec.training.optimizer)
        except (CorruptBlob, UnusableCheckpoint) as exc:
            log.warning("job %s: unusable checkpoint (%s); starting over", job_id, exc)
            return None, (
                f"the checkpoint after epoch {stored[0]} could not be used ({exc}); "
                "training restarted from epoch 1"
            )
        return checkpoint, None

    def _cpu_threads(self) -> int:
        """CPU threads for a large job: the cores this process may use, shared among `serve`'s
        workers. The affinity mask, not the machine's count: a container or `taskset` limited
        to a few cores of a large host must not start a thread per host core."""
        return max(1, usable_cores() // max(1, self.settings.workers))

    def _threads_for(self, config: NetworkConfig, n_rows: int, device: torch.device) -> int:
        if self.settings.torch_threads is not None:
            return self.settings.torch_threads
        flops_per_epoch = 6 * config.n_parameters * n_rows  # forward + backward
        if flops_per_epoch < SMALL_JOB_FLOPS or device.type != "cpu":
            return 1
        return self._cpu_threads()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _prepare(dataset: Dataset, spec: JobSpec, device: torch.device) -> PreparedData:
    return prepare(
        dataset.x,
        dataset.y,
        classification=spec.task == "classification",
        scale_inputs=spec.preprocessing.inputs == "standard",
        scale_targets=spec.preprocessing.targets == "standard",
        validation_fraction=spec.training.validation_fraction,
        seed=spec.training.seed,
        device=device,
    )


def training_config(spec: JobSpec) -> TrainingConfig:
    # The split already happened in prepare(); every other setting is the trainer's.
    return TrainingConfig(**spec.training.model_dump(exclude={"validation_fraction"}))


class Presence(threading.Thread):
    """Renews the worker's row in the fleet registry every heartbeat until the worker stops."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        worker_id: str,
        devices: list[str],
        stopping: threading.Event,
    ) -> None:
        super().__init__(name="presence", daemon=True)
        self._db, self._settings = db, settings
        self._worker_id, self._devices = worker_id, devices
        self._stopping = stopping

    def run(self) -> None:
        while not self._stopping.wait(self._settings.heartbeat_seconds):
            try:
                if not fleet.renew(self._db, self._worker_id):
                    fleet.register(
                        self._db,
                        self._worker_id,
                        socket.gethostname(),
                        self._devices,
                        self._settings.engine,
                    )
            except Exception:  # a missed renewal is survivable: liveness spans several
                log.exception("could not renew worker %s in the registry", self._worker_id)


def run_worker(settings: Settings) -> None:
    """Entry point of `python -m service worker`: SIGTERM/SIGINT hand the running job back."""
    worker = Worker(settings)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        worker.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.warm_up()
    # What is loaded by now lives as long as the worker: keep it out of the collections that
    # follow each large job, which would otherwise scan all of it every time.
    gc.collect()
    gc.freeze()
    try:
        worker.run_forever()
    finally:
        worker.db.dispose()
