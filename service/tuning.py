"""The service's tuning constants, in one place: the numbers that trade speed, latency and
safety, each with why it is what it is. What an operator should change is a setting
(service/config.py); these are what the code was measured and tested with."""

from __future__ import annotations

from datetime import timedelta

# -- database (service/storage/db.py) --
# SQLite waits this long for another process's write lock before reporting "busy".
SQLITE_BUSY_TIMEOUT_MS = 30_000
# A transaction that hits a transient error (busy, unreachable) is retried this many times,
# backing off from RETRY_BASE_SECONDS, doubling, capped at RETRY_CAP_SECONDS, with jitter.
RETRY_ATTEMPTS = 6
RETRY_BASE_SECONDS = 0.05
RETRY_CAP_SECONDS = 2.0

# The largest value either database stores in one column (SQLite's default SQLITE_MAX_LENGTH
# and PostgreSQL's bytea are both 1 GB), with a margin for the format's own header.
DATABASE_VALUE_LIMIT = 900_000_000

# -- queue and fleet (service/storage/queue.py, service/fleet.py) --
# Entries of the deletion log older than this are pruned: every API process reads the log
# several times a second, so a day is far more than any process needs to catch up.
DELETION_LOG_KEEP = timedelta(days=1)
# How often each worker drops the training data of jobs past SERVICE_JOB_DATA_RETENTION_SECONDS:
# an index lookup when there is nothing to drop, and retention is counted in days, not seconds.
RETENTION_SWEEP_SECONDS = 60.0
# Rows of workers gone this long are deleted when another worker registers.
FORGET_WORKERS_AFTER = timedelta(days=1)

# -- serving (service/inference.py, service/api/) --
# Up to this many rows x weights a forward pass takes well under a millisecond and may run on
# the event loop; bigger ones go to a worker thread, so they cannot stall it.
INLINE_WORK = 1_000_000
# A large prediction runs in chunks of about this many rows x weights (tens of milliseconds),
# so its deadline and its client's disconnect are noticed between chunks.
CHUNK_WORK = 100_000_000
# Predict bodies larger than this are parsed in a worker thread, so they cannot stall the loop.
OFF_LOOP_PARSE_BYTES = 256 * 1024
# How often each API process reads the deletion log: a deleted model stops answering on every
# replica within about this long (plus the read itself).
DELETION_POLL_SECONDS = 0.25
# A micro-batch is flushed at this many rows, or once its rows x weights reach MAX_BATCH_WORK:
# on a wide model a flush on the event loop must stay short however many requests joined it.
MAX_BATCH_ROWS = 4096
MAX_BATCH_WORK = 4 * INLINE_WORK
# A refused (413) body is drained at most this far, for this long, before the connection of a
# client that asked to close it closes: beyond that, the client sees a reset.
DRAIN_MAX_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 5.0

# -- training (service/training/) --
# Below this many weights, per-operation overhead dominates and the numpy engine beats autograd.
NUMPY_MAX_PARAMETERS = 200_000
# Layers up to this many weights multiply with einsum's plain loops, whose float32 sums run in
# the same order whatever the number of rows; BLAS (matmul) picks kernels by matrix shape, so a
# row's last bits would depend on the batch it was served in. Above it, BLAS's speed wins.
EINSUM_MAX_WEIGHTS = 8192
# A stack of a sweep's trials gathers every trial's rows each epoch (float32): the claim takes
# no more trials than keep that gather within this, so a sweep over a large dataset trains in
# several smaller stacks rather than exhaust a worker's memory (16 trials of 1M rows x 5 values
# is 320 MB).
MAX_STACK_GATHER_BYTES = 512 * 1024 * 1024
# Below this many multiply-adds per epoch one thread beats several (thread hand-off dominates).
SMALL_JOB_FLOPS = 50_000_000
# How often a running job looks for a cancel between heartbeats: a cheap read, so a cancel
# stops training within a fraction of a second rather than a heartbeat (seconds).
CANCEL_POLL_SECONDS = 0.2
# A shutdown that arrives mid-epoch waits for the epoch to end when epochs take less than this
# (well inside STOP_GRACE_SECONDS); longer epochs stop at the next batch.
PAUSE_WAITS_FOR_EPOCHS_UNDER = 2.0

# -- processes (service/worker_pool.py) --
# How long a stopping worker may take to hand its job back before it is killed. Training checks
# for the stop between batches, so this only has to outlast one batch and a checkpoint write;
# docker-compose.yml's stop_grace_period is the same.
STOP_GRACE_SECONDS = 30.0
# A worker that died is restarted after this pause, so a crash loop cannot spin.
RESTART_BACKOFF_SECONDS = 1.0
