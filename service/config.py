"""The one typed settings object. Every knob is an environment variable with prefix SERVICE_."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SERVICE_", extra="ignore")

    database_url: str = "sqlite:///./data/service.db"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    workers: Annotated[int, Field(ge=0)] = 1
    # auto: CPU plus the GPU if torch sees one, each job placed where it trains fastest;
    # cpu, cuda, cuda:N: every job on that device (one worker process per GPU: cuda:N).
    device: str = "auto"
    # The CPU engine: auto (numpy for small networks, autograd above), or pinned.
    engine: Literal["auto", "numpy", "torch"] = "auto"
    # On CUDA, small networks' training steps replay as captured CUDA graphs: auto where
    # capture works (else eager, with the reason logged), off never.
    cuda_graphs: Literal["auto", "off"] = "auto"
    # Threads torch may use per worker; None picks one for the job's size.
    torch_threads: Annotated[int, Field(ge=1)] | None = None

    # Queue timing. Tests shorten these; production keeps the lease well above the heartbeat.
    heartbeat_seconds: Annotated[float, Field(gt=0)] = 2.0
    lease_seconds: Annotated[float, Field(gt=0)] = 30.0
    # The fallback look at the queue of an idle worker. A queued job wakes idle workers at once
    # (service/wakeup.py), so this only bounds how late a job starts when its wake-up is lost
    # (a listener reconnecting, an API that died between commit and wake-up); each look is a
    # query, and 20 ms kept every idle worker busy for ~7% of a core.
    poll_seconds: Annotated[float, Field(gt=0)] = 2.0
    sweep_seconds: Annotated[float, Field(gt=0)] = 5.0
    max_attempts: Annotated[int, Field(ge=1)] = 3
    # Loss rows are written in batches at most this far apart, so /loss stays live.
    loss_flush_seconds: Annotated[float, Field(gt=0)] = 0.5
    # A running job is checkpointed this often, so a lost worker costs at most this much work.
    checkpoint_seconds: Annotated[float, Field(gt=0)] = 10.0
    # Ceiling on any job's training.max_runtime_seconds (SageMaker-style stopping condition).
    max_runtime_seconds: Annotated[float, Field(gt=0)] = 24 * 3600.0

    # Request bodies above this are refused with 413 before they are read into memory.
    max_body_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    # A dataset upload (POST /datasets, CSV or .npz) may be this large: it streams to a
    # temporary file, never into memory whole, so it may be far larger than other bodies.
    max_dataset_bytes: Annotated[int, Field(ge=1024)] = 512 * 1024 * 1024

    # Bearer-token auth: comma-separated keys, or a file with one key per line. Without keys
    # the API is unauthenticated and binds to 127.0.0.1 only. Admin keys see every job.
    api_keys: str = ""
    api_keys_file: str | None = None
    admin_keys: str = ""

    # -- HTTP connections (each bounds what one client can hold of the server) --
    # Request line plus headers above this are refused with 431.
    max_header_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024
    # A request's line and headers must arrive within this long of its first byte (or of the
    # connection opening); its body within body_timeout_seconds of the headers.
    header_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    body_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    # An idle keep-alive connection is closed after this long.
    keep_alive_seconds: Annotated[float, Field(gt=0)] = 5.0
    # Open connections beyond this are closed at once; the process's open-file limit is raised
    # to fit them (and the database's files) where the hard limit allows.
    max_connections: Annotated[int, Field(ge=1)] = 1000

    # -- event streams (GET /jobs/{id}/events, GET /events) --
    # How often an open stream looks for new loss rows and status changes (one indexed read).
    event_poll_seconds: Annotated[float, Field(gt=0)] = 0.25
    # An idle stream sends a comment this often, so proxies do not close it.
    event_heartbeat_seconds: Annotated[float, Field(gt=0)] = 15.0

    # Trust X-Forwarded-* from a reverse proxy on 127.0.0.1 (uvicorn's rule); off saves a layer.
    proxy_headers: bool = False

    # Predictor cache in each API process (models are immutable, so caching is safe): at most
    # this many models, and at most this many bytes of weights; least recently used go first.
    model_cache_size: Annotated[int, Field(ge=1)] = 256
    model_cache_bytes: Annotated[int, Field(ge=1)] = 1024**3

    # -- predict bounds --
    # Rows x weights of one predict request: past it, 422 before any work.
    max_predict_work: Annotated[int, Field(ge=1)] = 2_000_000_000
    # A predict answer larger than this (estimated before the work) is refused with 422.
    max_response_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    # A predict still computing after this long is abandoned with 503.
    predict_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0

    # -- per-key quotas (with API keys; without them, the one anonymous owner has them) --
    # Queued plus running jobs of one key; past it, 429 with Retry-After.
    max_active_jobs_per_key: Annotated[int, Field(ge=1)] = 100
    # Trials of one sweep (each is a job, and counts as one against the active-jobs quota).
    max_trials_per_sweep: Annotated[int, Field(ge=1)] = 256
    # At most this many trials of one shape train together in one stacked model.
    max_stacked_trials: Annotated[int, Field(ge=1)] = 64
    # Bytes one key may keep stored (training data, models, checkpoints); past it, 429.
    max_stored_bytes_per_key: Annotated[int, Field(ge=1)] = 4 * 1024**3
    # Finished jobs' training data is dropped this long after they end (models and loss
    # histories stay); unset keeps it forever.
    job_data_retention_seconds: Annotated[float, Field(gt=0)] | None = None

    # -- files and secrets --
    # Where the service keeps its own files (the owner secret; the default SQLite database).
    data_dir: str = "data"
    # The secret that keys owner digests (HMAC of the API key). Unset: generated into
    # data_dir/owner_secret on first start. API replicas on several machines must share it.
    owner_secret: str | None = None

    # Where large blobs (training data, model weights) live: "" keeps them in the database;
    # file:///path keeps them as files under that directory (shared by every machine).
    blob_store_url: str = ""

    # Caps checked when a job is submitted, before anything is allocated.
    max_rows: Annotated[int, Field(ge=1)] = 1_000_000
    max_features: Annotated[int, Field(ge=1)] = 10_000
    max_cells: Annotated[int, Field(ge=1)] = 20_000_000
    max_layer_width: Annotated[int, Field(ge=1)] = 4096
    max_layers: Annotated[int, Field(ge=1)] = 32
    max_epochs: Annotated[int, Field(ge=1)] = 100_000
    max_classes: Annotated[int, Field(ge=2)] = 10_000
    # One class label's length, and all of a job's distinct labels together (characters).
    max_label_chars: Annotated[int, Field(ge=1)] = 200
    max_label_total_chars: Annotated[int, Field(ge=1)] = 1024 * 1024
    # A job's estimated peak training memory (data, weights, optimizer state, one batch's
    # activations) and its trained weights' size; past either, 422 at submit.
    max_job_memory_bytes: Annotated[int, Field(ge=1)] = 4 * 1024**3
    max_model_bytes: Annotated[int, Field(ge=1)] = 256 * 1024**2

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError("device must be auto, cpu, cuda or cuda:N")
        return value
